//! `qm resize` (`qm disk resize`): grows a disk, as `PUT /nodes/{node}/qemu/{vmid}/resize`
//! does. Shrinking is refused; a size equal to the current one changes nothing. Templates
//! may be grown too (their clones keep the size they were made with). On a real node a
//! running VM's disk is grown over QMP; the simulator's VM processes never open their
//! disks, so the file is always grown with `qemu-img resize`.

use proxlab_pve::config::VmConfig;
use proxlab_pve::drive::{Drive, DriveKey};

use crate::args::{Args, param_error};
use crate::qemu_img::{self, format_size};
use crate::sim::{Outcome, Sim, fail};
use crate::storage::Storages;
use crate::store;

/// Parses `[+]<number>[KMGT]`: the new size, or (with `+`) how much to add.
fn parse_request(size: &str) -> Option<(bool, f64)> {
    let (grow_by, rest) = match size.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, size),
    };
    let (number, unit) = match rest.char_indices().last() {
        Some((at, unit @ ('K' | 'M' | 'G' | 'T'))) => (&rest[..at], Some(unit)),
        _ => (rest, None),
    };
    let well_formed = !number.is_empty()
        && !number.starts_with('.')
        && !number.ends_with('.')
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number.matches('.').count() <= 1;
    if !well_formed {
        return None;
    }
    let scale = match unit {
        None => 1.0,
        Some('K') => 1024.0,
        Some('M') => 1024.0 * 1024.0,
        Some('G') => 1024.0 * 1024.0 * 1024.0,
        Some(_) => 1024.0 * 1024.0 * 1024.0 * 1024.0,
    };
    Some((grow_by, number.parse::<f64>().ok()? * scale))
}

pub(super) fn resize(sim: &Sim, mut args: Args) -> Outcome {
    let vmid = args.vmid(0)?;
    let disk = args.positional(1, "disk")?;
    let size = args.positional(2, "size")?;
    let digest = args.take("digest");
    let skiplock = args.flag("skiplock")?;
    args.finish()?;
    let Some(key) = DriveKey::parse(&disk) else {
        return Err(param_error(
            "disk",
            &format!("value '{disk}' does not have a value in the enumeration"),
        ));
    };
    let Some((grow_by, requested)) = parse_request(&size) else {
        return Err(param_error(
            "size",
            &format!("value does not match the regex pattern (\\+?\\d+(\\.\\d+)?[KMGT]?): {size}"),
        ));
    };
    let (_lock, loaded) = (store::lock_vm(sim, vmid)?, store::read(sim, vmid)?);
    if let Some(digest) = digest
        && digest != VmConfig::digest(loaded.raw.as_bytes())
    {
        return fail("checksum mismatch (file change by other user?)");
    }
    let mut config = loaded.config;
    if !skiplock {
        store::check_lock(&config)?;
    }
    let Some(value) = config.main().get(&disk).map(str::to_owned) else {
        return fail(format!("disk '{disk}' does not exist"));
    };
    let mut drive = Drive::parse(key, &value).map_err(|err| err.to_string())?;
    if drive.volume().is_empty() || drive.volume() == "none" {
        return fail(format!("disk '{disk}' has no associated volume"));
    }
    if drive.is_cdrom() {
        return fail("you can't resize a cdrom");
    }
    let storages = Storages::load(sim)?;
    let path = storages.path(sim, drive.volume(), &sim.node)?;
    let image = qemu_img::info(&path).map_err(|_| {
        format!(
            "Could not determine current size of volume '{}'",
            drive.volume()
        )
    })?;
    let current = image.virtual_size;
    let mut wanted = requested.trunc() as u64;
    if grow_by {
        wanted += current;
    }
    if wanted < current {
        return fail("shrinking disks is not supported");
    }
    if wanted == current {
        return Ok(());
    }
    qemu_img::resize(sim, &path, &image.format, wanted)?;
    drive.set_option("size", &format_size(wanted))?;
    config.main_mut().set(&disk, &drive.value())?;
    store::write(sim, vmid, &config)
}

#[cfg(test)]
mod tests {
    use super::parse_request;

    #[test]
    fn sizes_are_read_as_the_api_reads_them() {
        assert_eq!(parse_request("10G"), Some((false, 10.0 * 1073741824.0)));
        assert_eq!(parse_request("+512M"), Some((true, 512.0 * 1048576.0)));
        assert_eq!(parse_request("1.5T"), Some((false, 1.5 * 1099511627776.0)));
        assert_eq!(parse_request("4096"), Some((false, 4096.0)));
        for bad in ["", "+", "G", "10g", "1.G", ".5G", "1..2G", "-1G", "10GB"] {
            assert_eq!(parse_request(bad), None, "{bad}");
        }
    }
}
