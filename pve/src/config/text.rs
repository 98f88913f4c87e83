//! The encoding of description lines: Proxmox writes each line of a description as `#`
//! followed by the line with control characters, `:` and non-ASCII bytes percent-escaped,
//! and reads it back by percent-decoding and then decoding UTF-8.

/// Escapes one description line as Proxmox's writer does.
pub fn encode_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        let safe = (0x20..=0x39).contains(&byte) || (0x3b..=0x7e).contains(&byte);
        if safe {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn hex_value(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|value| value as u8)
}

/// Decodes one description line: `%XX` escapes, then UTF-8 (invalid sequences become U+FFFD).
pub fn decode_text(data: &str) -> String {
    let bytes = data.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2]))
        {
            out.push(high << 4 | low);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_colon_controls_and_non_ascii_only() {
        assert_eq!(encode_text(" TEST: 50% ü\t"), " TEST%3A 50% %C3%BC%09");
    }

    #[test]
    fn decoding_reverses_encoding() {
        for text in [
            "",
            " plain",
            "a:b",
            "ümlaut and 日本",
            "tab\there",
            "100%",
            "%zz",
        ] {
            assert_eq!(decode_text(&encode_text(text)), text, "{text:?}");
        }
        assert_eq!(decode_text("%41%3a"), "A:");
        assert_eq!(decode_text("50%"), "50%");
        assert_eq!(decode_text("%4"), "%4");
        assert_eq!(decode_text("%€"), "%€");
    }
}
