//! Disk sizes as Proxmox writes them in `size=`: `32G`, `104858K`, `512M`, `1T`, or bytes;
//! and a VM's memory as its `memory` key has it.

/// The MiB of a `memory` value: `2048`, or the property string `current=2048`.
pub fn parse_memory_mib(value: &str) -> Option<u64> {
    value
        .trim_start_matches("current=")
        .split(',')
        .next()?
        .parse()
        .ok()
}

/// Parses a size into bytes; `None` for anything else.
pub fn parse_size(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: f64 = digits.parse().ok()?;
    let factor: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    Some((value * factor as f64) as u64)
}

/// Formats bytes as Proxmox does: the largest unit that divides evenly.
pub fn format_size(bytes: u64) -> String {
    for (unit, factor) in [
        ("T", 1u64 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("32G"), Some(32 << 30));
        assert_eq!(parse_size("104858K"), Some(104_858 << 10));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("12X"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(format_size(4_294_967_296), "4G");
        assert_eq!(format_size(107_374_592), "104858K");
        assert_eq!(format_size(4096 << 20), "4G");
        assert_eq!(format_size(1000), "1000");
    }

    #[test]
    fn memory() {
        assert_eq!(parse_memory_mib("2048"), Some(2048));
        assert_eq!(parse_memory_mib("current=4096"), Some(4096));
        assert_eq!(parse_memory_mib("lots"), None);
    }
}
