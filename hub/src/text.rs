//! Wording shared by every place that shows people a message.

/// `text` as a sentence: a capital first letter and a full stop (kept when it already ends
/// in punctuation).
pub fn sentence(text: &str) -> String {
    let text = text.trim();
    let mut chars = text.chars();
    let Some(first) = chars.next() else {
        return String::new();
    };
    let mut out: String = first.to_uppercase().chain(chars).collect();
    if !out.ends_with(['.', '!', '?', ':']) {
        out.push('.');
    }
    out
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub fn truncate_bytes(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::{sentence, truncate_bytes};

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_bytes("héllo", 2), "h");
        assert_eq!(truncate_bytes("héllo", 3), "hé");
        assert_eq!(truncate_bytes("hi", 10), "hi");
    }

    #[test]
    fn sentences() {
        assert_eq!(sentence("there is no such VM"), "There is no such VM.");
        assert_eq!(sentence(" Done. "), "Done.");
        assert_eq!(sentence("try again?"), "Try again?");
        assert_eq!(sentence(""), "");
    }
}
