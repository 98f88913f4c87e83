//! What a plugin can produce, bounded: every string and count a plugin hands the agent is
//! capped at the host, with the cap named in what is reported, and control characters are
//! escaped before anything reaches a log line. A plugin can make its own step fail, but not
//! fill the agent's memory, the hub's database, a link frame or the log.

/// Longest error message kept from a plugin (the rest is cut, and the cut says so).
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Longest single log message.
pub const MAX_LOG_LINE_BYTES: usize = 1024;
/// Log output one call may write; later messages are dropped (once said).
pub const MAX_LOG_BYTES_PER_CALL: usize = 64 * 1024;
/// Most config edits one `configure` call may ask for.
pub const MAX_EDITS: usize = 64;
/// Longest config key an edit may name.
pub const MAX_KEY_BYTES: usize = 64;
/// Most findings one `validate` call may report.
pub const MAX_FINDINGS: usize = 32;

/// `text` with control characters escaped (`\n` becomes `\\n`), cut at `max` bytes on a
/// character boundary; a cut says where it was made.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 32);
    for c in text.chars() {
        let escaped: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        if out.len() + escaped.len() > max {
            out.push_str(&format!(" … (cut at {max} bytes)"));
            return out;
        }
        out.push_str(&escaped);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_text_cut_with_a_note() {
        assert_eq!(printable("one\nERROR forged", 100), "one\\nERROR forged");
        assert_eq!(
            printable("tab\there\u{1b}[31m", 100),
            "tab\\there\\u{1b}[31m"
        );
        let cut = printable(&"é".repeat(1000), 11);
        assert_eq!(cut, "ééééé … (cut at 11 bytes)");
        assert_eq!(printable("short", 5), "short");
    }
}
