//! Invite links the hub can show again. A link's token is derived from a random nonce per
//! link and a key in the hub's data directory (`pki/invite.key`); the database keeps the nonce
//! and the token's hash only. So the class page shows the current link at any time, while a
//! copy of the database alone gives no working link.

use ring::hmac;

use super::INVITE_PREFIX;

/// The key invite tokens are derived from.
pub struct InviteKey(hmac::Key);

impl InviteKey {
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The token of the invite of `class_id` made with `nonce`.
    pub fn token(&self, class_id: i64, nonce: &str) -> String {
        let tag = hmac::sign(
            &self.0,
            format!("proxlab invite {class_id} {nonce}").as_bytes(),
        );
        format!("{INVITE_PREFIX}{}", hex::encode(tag.as_ref()))
    }
}

impl std::fmt::Debug for InviteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InviteKey(..)")
    }
}

/// A fresh nonce for a new link.
pub fn new_nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// An invite link as a QR code, for a classroom projector: an SVG `data:` URL.
pub fn qr_data_url(link: &str) -> Option<String> {
    use base64::Engine;
    let code = qrcode::QrCode::new(link.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    Some(format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_key_class_and_nonce() {
        let key = InviteKey::new(&[7; 32]);
        let token = key.token(3, "ab");
        assert!(
            token.starts_with("pli_") && token.len() == 4 + 64,
            "{token}"
        );
        assert_eq!(
            token,
            key.token(3, "ab"),
            "the same link can be shown again"
        );
        assert_ne!(token, key.token(4, "ab"));
        assert_ne!(token, key.token(3, "ac"));
        assert_ne!(token, InviteKey::new(&[8; 32]).token(3, "ab"));
        assert_ne!(new_nonce(), new_nonce());
    }

    #[test]
    fn qr_codes_are_svg_images() {
        let url = qr_data_url("https://lab.school/join/pli_abc").unwrap();
        assert!(url.starts_with("data:image/svg+xml;base64,"));
    }
}
