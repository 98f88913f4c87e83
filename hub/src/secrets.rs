//! Random secrets (session ids, API tokens, join tokens, CSRF tokens) and how they are kept.
//!
//! Every secret is 32 random bytes, hex-encoded behind a short prefix that says what it is,
//! so a leaked one is easy to recognise. Only the SHA-256 of a secret is stored: secrets are
//! long and random, so a fast hash already makes a stolen database useless, unlike
//! passwords, which need a slow one.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// A new secret: `prefix` followed by 64 hex digits.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The stored form of a secret. Surrounding whitespace (from copy and paste) is ignored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.trim().as_bytes()))
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_long_and_distinct() {
        let (a, b) = (new_secret("plx_"), new_secret("plx_"));
        assert!(a.starts_with("plx_"));
        assert_eq!(a.len(), 4 + 64);
        assert_ne!(a, b);
    }

    #[test]
    fn hash_ignores_surrounding_whitespace_and_differs_per_secret() {
        assert_eq!(hash_secret("plj_abc"), hash_secret(" plj_abc\n"));
        assert_ne!(hash_secret("plj_abc"), hash_secret("plj_abd"));
        assert_eq!(hash_secret("plj_abc").len(), 64);
    }

    #[test]
    fn equality() {
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
        assert!(!secrets_equal("abc", "abcd"));
    }
}
