//! Re-imaging a linked clone onto a new base (a class's new version), through the real
//! driver against pve-sim, with real `qemu-img` and `qemu-io` on the disks.

#[path = "support/sim.rs"]
mod sim;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use proxlab_agent::pve::clones::{clone_many, make_base};
use proxlab_agent::pve::config::PveConfig;
use proxlab_agent::pve::node::Node;
use proxlab_agent::pve::reimage::reimage;
use proxlab_agent::pve::{PveError, ops};
use proxlab_protocol::clones::{CloneTarget, Hardware};
use proxlab_protocol::inventory::PowerState;
use proxlab_protocol::vm_ops::PowerAction;
use proxlab_pve::config::VmConfig;

fn qemu_io(path: &Path, command: &str) {
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", command])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{command}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the 64 KiB at `offset` hold `byte` everywhere (`qemu-io` fails when not).
fn holds(path: &Path, byte: u8, offset: &str) -> bool {
    let out = Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            &format!("read -P {byte:#x} {offset} 64k"),
        ])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() || text.contains("verification failed"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}

/// The files of a disk's chain, top first, as `qemu-img info --backing-chain` has them.
fn chain(path: &Path) -> Vec<String> {
    let out = Command::new("qemu-img")
        .args(["info", "-U", "--backing-chain", "--output=json"])
        .arg(path)
        .output()
        .unwrap();
    let images: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    images
        .iter()
        .map(|image| {
            let file = image["filename"].as_str().unwrap();
            Path::new(file)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn config_text(node: &Node, vmid: u32) -> String {
    std::fs::read_to_string(node.config_path(vmid)).unwrap()
}

/// A class's life on one node: base 9000, a teacher VM (100) and two students cloned from it;
/// the teacher changes the disk and gains an EFI disk; a new base (9001) is made from the
/// teacher. Re-imaging a student onto 9001 leaves it with the teacher's data and none of its
/// own, its identity, MACs and name kept, its snapshots gone; repeating it changes nothing; a
/// running VM is refused.
#[tokio::test]
async fn a_student_vm_moves_to_a_new_base_keeping_its_identity_and_losing_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    sim::init_node(root, "tmpl:64M");
    let node = Arc::new(Node::new(PveConfig::for_sim(root, "pve1")));
    let targets = [(100, "teacher"), (101, "s01"), (102, "s02")]
        .map(|(vmid, name)| CloneTarget {
            vmid,
            name: name.into(),
        })
        .to_vec();
    let outcomes = clone_many(&node, 9000, targets, 2, Hardware::default(), None, |_| {})
        .await
        .unwrap();
    assert!(outcomes.iter().all(|o| o.error.is_none()), "{outcomes:?}");
    let disk = |vmid: u32| sim::scsi0_path(root, vmid);
    // The teacher's change, and the student's own work (with a snapshot of it).
    qemu_io(&disk(100), "write -P 0xaa 0 64k");
    qemu_io(&disk(101), "write -P 0x55 1M 64k");
    sim::run(root, &["qm", "snapshot", "101", "homework"]);
    let efi = disk(100).with_file_name("vm-100-disk-1.raw");
    let made = Command::new("qemu-img")
        .args(["create", "-f", "raw"])
        .arg(&efi)
        .arg("528k")
        .output()
        .unwrap();
    assert!(made.status.success());
    let teacher = config_text(&node, 100);
    std::fs::write(
        node.config_path(100),
        format!("{teacher}efidisk0: local:100/vm-100-disk-1.raw,efitype=4m,size=528K\n"),
    )
    .unwrap();
    make_base(&node, 100, 9001, "class-base-v2", None, |_| {})
        .await
        .unwrap();

    let before = VmConfig::parse(&config_text(&node, 101));
    let status = reimage(&node, 101, 9001, None).await.unwrap();
    assert_eq!(status, PowerState::Stopped);
    let text = config_text(&node, 101);
    let after = VmConfig::parse(&text);
    VmConfig::parse_strict(&text, 101).expect("a config Proxmox reads");
    assert!(
        after
            .main()
            .get("scsi0")
            .unwrap()
            .starts_with("local:9001/base-9001-disk-0.qcow2/101/vm-101-disk-0.qcow2,"),
        "{text}"
    );
    for key in ["name", "net0", "smbios1", "vmgenid", "cores", "memory"] {
        assert_eq!(
            after.main().get(key),
            before.main().get(key),
            "{key} is kept"
        );
    }
    assert!(
        after
            .main()
            .get("efidisk0")
            .unwrap()
            .starts_with("local:101/vm-101-disk-1."),
        "the new base's EFI disk is copied for the VM: {text}"
    );
    assert!(after.snapshot_names().is_empty(), "{text}");
    assert_eq!(after.main().get("parent"), None);
    assert_eq!(
        chain(&disk(101)),
        ["vm-101-disk-0.qcow2", "base-9001-disk-0.qcow2"],
        "a fresh overlay straight on the new base"
    );
    assert!(holds(&disk(101), 0xaa, "0"), "the teacher's data is there");
    assert!(
        !holds(&disk(101), 0x55, "1M"),
        "the student's writes are gone"
    );
    let leftovers: Vec<_> = std::fs::read_dir(disk(101).parent().unwrap())
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Again (a retried request): nothing changes, not even the overlay.
    qemu_io(&disk(101), "write -P 0x77 2M 64k");
    reimage(&node, 101, 9001, None).await.unwrap();
    assert_eq!(config_text(&node, 101), text);
    assert!(
        holds(&disk(101), 0x77, "2M"),
        "a finished re-image is not redone"
    );

    // A running VM is refused, and so is one whose identity changed.
    ops::power(&node, 102, PowerAction::Start).await.unwrap();
    let running = reimage(&node, 102, 9001, None).await.unwrap_err();
    assert!(matches!(running, PveError::Conflict(_)), "{running:?}");
    ops::power(&node, 102, PowerAction::Stop).await.unwrap();
    let other = reimage(
        &node,
        102,
        9001,
        Some("00000000-0000-0000-0000-000000000000"),
    )
    .await;
    assert!(other.is_err(), "{other:?}");
    assert!(
        config_text(&node, 102).contains("local:9000/base-9000-disk-0.qcow2/102/"),
        "a refused re-image leaves the VM as it was"
    );
    // A base that is not a template is refused.
    let not_base = reimage(&node, 102, 100, None).await.unwrap_err();
    assert!(
        not_base.to_string().contains("not a template"),
        "{not_base}"
    );
}
