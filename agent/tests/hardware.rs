//! A class's hardware change on one VM, through the real driver against pve-sim: on real
//! Proxmox configs with EFI and TPM disks (from Proxmox's own test fixtures), every line the
//! change does not touch stays byte for byte; a running VM gets what is not hot-pluggable at
//! its next start; disks grow with real `qemu-img`, never shrink.

#[path = "support/sim.rs"]
mod sim;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use proxlab_agent::pve::clones::clone_many;
use proxlab_agent::pve::config::PveConfig;
use proxlab_agent::pve::hardware::change_hardware;
use proxlab_agent::pve::node::Node;
use proxlab_agent::pve::{PveError, ops};
use proxlab_protocol::clones::{CloneTarget, Hardware};
use proxlab_protocol::vm_ops::{DiskSize, HardwareChange, NicPlacement, PowerAction};
use proxlab_pve::config::{VmConfig, WriteMode};

/// Proxmox's fixtures with EFI disks, TPM state, machine types and NIC options.
const FIXTURES: &[&str] = &[
    "cfg2cmd/efi-secboot-and-tpm-q35.conf",
    "cfg2cmd/efi-secboot-and-tpm.conf",
    "cfg2cmd/q35-simple-7.0.conf",
    "parse-config-input/regular-vm-efi.conf",
];

/// An `args` line (none of the fixtures has one): what an admin may have added by hand.
const ARGS_LINE: &str = "args: -global kvm-pit.lost_tick_policy=discard";

/// Proxmox's fixtures beside the checkout (`../shared/pve-fixtures`); `None`, with a
/// notice, when they are not there.
fn fixtures() -> Option<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/pve-fixtures");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "NOTICE: {} not found; the hardware change on Proxmox's fixtures is skipped",
            dir.display()
        );
        None
    }
}

fn config_text(node: &Node, vmid: u32) -> String {
    std::fs::read_to_string(node.config_path(vmid)).unwrap()
}

fn virtual_size(path: &Path) -> u64 {
    let out = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    info["virtual-size"].as_u64().unwrap()
}

#[tokio::test]
async fn a_change_keeps_every_other_line_of_real_configs_byte_for_byte() {
    let Some(fixtures) = fixtures() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    sim::init_node(root, "tmpl:16M");
    let node = Arc::new(Node::new(PveConfig::for_sim(root, "pve1")));
    for (n, name) in FIXTURES.iter().enumerate() {
        let vmid = 300 + n as u32;
        let text = std::fs::read_to_string(fixtures.join(name)).unwrap();
        let original = format!("{text}{ARGS_LINE}\n");
        node.write_new_config(vmid, &original).unwrap();
        let has_nic = VmConfig::parse(&original).main().get("net0").is_some();
        let change = HardwareChange {
            cores: Some(2),
            memory_mib: Some(1536),
            nic: has_nic.then(|| NicPlacement {
                index: 0,
                bridge: "vmbr1".into(),
                vlan: Some(30),
            }),
            add_serial: true,
            ..HardwareChange::default()
        };
        let reply = change_hardware(&node, vmid, None, &change).await.unwrap();
        assert!(
            reply.pending.is_empty(),
            "a stopped VM takes it at once: {reply:?}"
        );
        // What differs from the fixture (some have two cores already).
        let before = VmConfig::parse(&original);
        let mut changed: Vec<&str> = [("cores", "2"), ("memory", "1536"), ("serial0", "socket")]
            .into_iter()
            .filter(|(key, value)| before.main().get(key) != Some(*value))
            .map(|(key, _)| key)
            .collect();
        if has_nic {
            changed.push("net0");
        }
        changed.sort();
        let mut applied = reply.applied.clone();
        applied.sort();
        assert_eq!(applied, changed, "{name}");

        let written = config_text(&node, vmid);
        VmConfig::parse_strict(&written, vmid).unwrap_or_else(|err| panic!("{name}: {err}"));
        // What Proxmox's writer makes of the original with the four keys set, and nothing
        // else: no line lost, moved or rewritten.
        let mut expected = VmConfig::parse(&original);
        let after = VmConfig::parse(&written);
        for key in &changed {
            expected
                .main_mut()
                .set(key, after.main().get(key).unwrap())
                .unwrap();
        }
        assert_eq!(
            written,
            expected.write_canonical(WriteMode::Proxmox),
            "{name}"
        );
        for line in original.lines() {
            let key = line.split(':').next().unwrap();
            if [
                "efidisk0",
                "tpmstate0",
                "args",
                "machine",
                "bios",
                "smbios1",
                "vmgenid",
            ]
            .contains(&key)
            {
                assert!(
                    written.lines().any(|written| written == line),
                    "{name}: {line:?} is kept as it was:\n{written}"
                );
            }
        }
        assert_eq!(after.main().get("cores"), Some("2"));
        assert_eq!(after.main().get("memory"), Some("1536"));
        assert_eq!(after.main().get("serial0"), Some("socket"));
        if has_nic {
            let before = VmConfig::parse(&original).nics()[0].clone();
            let now = after.nics()[0].clone();
            assert_eq!((now.bridge(), now.tag()), (Some("vmbr1"), Some(30)));
            assert_eq!(
                (&now.model, &now.mac),
                (&before.model, &before.mac),
                "{name}"
            );
        }

        // Again: nothing to do, so Proxmox is not even asked.
        let again = change_hardware(&node, vmid, None, &change).await.unwrap();
        assert!(
            again.applied.is_empty() && again.pending.is_empty(),
            "{again:?}"
        );
        assert_eq!(config_text(&node, vmid), written);
    }
}

#[tokio::test]
async fn a_running_vm_gets_its_new_hardware_at_its_next_start_and_disks_only_grow() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    sim::init_node(root, "tmpl:64M");
    let node = Arc::new(Node::new(PveConfig::for_sim(root, "pve1")));
    let targets = vec![CloneTarget {
        vmid: 101,
        name: "s01".into(),
    }];
    let outcomes = clone_many(&node, 9000, targets, 1, Hardware::default(), None, |_| {})
        .await
        .unwrap();
    assert!(outcomes.iter().all(|o| o.error.is_none()), "{outcomes:?}");
    ops::power(&node, 101, PowerAction::Start).await.unwrap();

    let grown = 96 << 20;
    let cores = match VmConfig::parse(&config_text(&node, 101))
        .main()
        .get("cores")
    {
        Some("2") => 1,
        _ => 2,
    };
    let change = HardwareChange {
        cores: Some(cores),
        memory_mib: Some(1024),
        disks: vec![DiskSize {
            slot: "scsi0".into(),
            size_bytes: grown,
        }],
        ..HardwareChange::default()
    };
    let reply = change_hardware(&node, 101, None, &change).await.unwrap();
    assert_eq!(reply.applied, ["scsi0"], "disks grow at once: {reply:?}");
    let mut pending = reply.pending.clone();
    pending.sort();
    assert_eq!(pending, ["cores", "memory"]);
    assert_eq!(virtual_size(&sim::scsi0_path(root, 101)), grown);
    let text = config_text(&node, 101);
    let config = VmConfig::parse(&text);
    assert!(
        config.main().get("scsi0").unwrap().contains("size=96M"),
        "{text}"
    );
    assert_eq!(config.pending_keys(), ["cores", "memory"]);
    // Repeating it asks for nothing: the pending values count.
    let again = change_hardware(&node, 101, None, &change).await.unwrap();
    assert!(
        again.applied.is_empty() && again.pending.is_empty(),
        "{again:?}"
    );

    // A disk never shrinks; the VM is left as it was.
    let shrink = HardwareChange {
        disks: vec![DiskSize {
            slot: "scsi0".into(),
            size_bytes: 32 << 20,
        }],
        ..HardwareChange::default()
    };
    let refused = change_hardware(&node, 101, None, &shrink)
        .await
        .unwrap_err();
    assert!(matches!(refused, PveError::Invalid(_)), "{refused:?}");
    assert!(refused.to_string().contains("only grow"), "{refused}");
    assert_eq!(config_text(&node, 101), text);
    // Nor does one whose identity changed.
    let other = change_hardware(
        &node,
        101,
        Some("00000000-0000-0000-0000-000000000000"),
        &change,
    )
    .await;
    assert!(other.is_err(), "{other:?}");

    // The template grows too (its clones keep the size they were made with), and the
    // student's overlay still reads through to it.
    let template = HardwareChange {
        disks: vec![DiskSize {
            slot: "scsi0".into(),
            size_bytes: 128 << 20,
        }],
        ..HardwareChange::default()
    };
    change_hardware(&node, 9000, None, &template).await.unwrap();
    assert_eq!(virtual_size(&sim::scsi0_path(root, 9000)), 128 << 20);
    assert_eq!(virtual_size(&sim::scsi0_path(root, 101)), grown);
    let check = Command::new("qemu-img")
        .args(["check", "-U"])
        .arg(sim::scsi0_path(root, 101))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // The next start applies what waited.
    ops::power(&node, 101, PowerAction::Stop).await.unwrap();
    ops::power(&node, 101, PowerAction::Start).await.unwrap();
    let started = VmConfig::parse(&config_text(&node, 101));
    assert!(started.pending_keys().is_empty());
    assert_eq!(
        started.main().get("cores"),
        Some(cores.to_string().as_str())
    );
    assert_eq!(started.main().get("memory"), Some("1024"));
    ops::power(&node, 101, PowerAction::Stop).await.unwrap();
}
