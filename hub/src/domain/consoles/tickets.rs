//! Console tickets and VNC passwords.
//!
//! A ticket is a 256-bit random secret, of which only the hash is stored. The VNC password
//! that goes with a VNC ticket is derived from the ticket itself, so the hub never stores
//! it either: it can compute it again only when the ticket is presented.

use sha2::{Digest, Sha256};

use proxlab_protocol::console::VNC_PASSWORD_LEN;

/// What console tickets start with.
pub const TICKET_PREFIX: &str = "plc_";

/// The VNC password that goes with `ticket`: [`VNC_PASSWORD_LEN`] printable ASCII characters.
pub fn vnc_password(ticket: &str) -> String {
    let digest = Sha256::digest(format!("proxlab vnc password\n{ticket}").as_bytes());
    // 94 printable characters, '!' to '~'.
    digest[..VNC_PASSWORD_LEN]
        .iter()
        .map(|byte| char::from(b'!' + byte % 94))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_valid_stable_and_differ_per_ticket() {
        let a = vnc_password("plc_aaa");
        assert!(proxlab_protocol::console::valid_vnc_password(&a), "{a}");
        assert_eq!(a, vnc_password("plc_aaa"));
        assert_ne!(a, vnc_password("plc_aab"));
    }
}
