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

#[cfg(test)]
mod tests {
    use super::sentence;

    #[test]
    fn sentences() {
        assert_eq!(sentence("there is no such VM"), "There is no such VM.");
        assert_eq!(sentence(" Done. "), "Done.");
        assert_eq!(sentence("try again?"), "Try again?");
        assert_eq!(sentence(""), "");
    }
}
