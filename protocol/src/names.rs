//! Validation of names that cross the link.

/// The longest node name: a DNS label.
pub const MAX_NODE_NAME_LEN: usize = 63;

/// Checks a node name: a DNS label (letters, digits and inner hyphens, at most 63
/// characters), as Proxmox requires of node names.
pub fn validate_node_name(name: &str) -> Result<(), String> {
    let valid_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if name.is_empty()
        || name.len() > MAX_NODE_NAME_LEN
        || !valid_chars
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(format!(
            "invalid node name {name:?}: use 1 to {MAX_NODE_NAME_LEN} letters, digits and inner hyphens"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_proxmox_style_names() {
        for name in ["pve1", "node-a", "PVE", "a", &"x".repeat(63)] {
            assert!(validate_node_name(name).is_ok(), "{name} refused");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for name in ["", "-a", "a-", "a.b", "a b", "../x", "ä", &"x".repeat(64)] {
            assert!(validate_node_name(name).is_err(), "{name:?} accepted");
        }
    }
}
