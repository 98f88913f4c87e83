//! Building a template from an ISO through the real driver against pve-sim: the VM's config
//! is one Proxmox accepts (read strictly), with the machine its OS wants; it becomes a
//! template without its ISO, and linked clones can be made from it.

#[path = "support/sim.rs"]
mod sim;

use std::sync::Arc;

use proxlab_agent::pve::clones::clone_many;
use proxlab_agent::pve::config::PveConfig;
use proxlab_agent::pve::install::{install, make_template};
use proxlab_agent::pve::node::Node;
use proxlab_agent::pve::{PveError, ops};
use proxlab_protocol::clones::{CloneTarget, Hardware};
use proxlab_protocol::vm_ops::{GuestOs, PowerAction, VmCreate, VmInstall};
use proxlab_pve::config::VmConfig;

const ISO: &str = "local:iso/installer.iso";

fn spec(vmid: u32, name: &str, os: GuestOs) -> VmInstall {
    VmInstall {
        vm: VmCreate {
            vmid,
            name: name.into(),
            cores: 2,
            memory_mib: 1024,
            disk_gib: 2,
            storage: "local".into(),
            bridge: "vmbr0".into(),
        },
        iso: ISO.into(),
        os,
    }
}

fn strict_config(node: &Node, vmid: u32) -> VmConfig {
    let text = std::fs::read_to_string(node.config_path(vmid)).unwrap();
    VmConfig::parse_strict(&text, vmid).unwrap_or_else(|err| panic!("{err}:\n{text}"))
}

fn setup() -> (tempfile::TempDir, Arc<Node>) {
    let dir = tempfile::tempdir().unwrap();
    sim::init_node(dir.path(), "tmpl:16M");
    let iso = sim::output(dir.path(), &["pvesm", "path", ISO]);
    std::fs::write(iso.trim(), b"an installer").unwrap();
    let node = Arc::new(Node::new(PveConfig::for_sim(dir.path(), "pve1")));
    (dir, node)
}

#[tokio::test]
async fn a_linux_vm_boots_its_iso_and_becomes_a_template_without_it() {
    let (dir, node) = setup();
    install(&node, &spec(500, "debian-lab", GuestOs::Linux))
        .await
        .unwrap();
    let config = strict_config(&node, 500);
    let main = config.main();
    assert_eq!(
        main.get("ide2"),
        Some("local:iso/installer.iso,media=cdrom")
    );
    assert_eq!(main.get("ostype"), Some("l26"));
    assert_eq!(main.get("serial0"), Some("socket"));
    assert_eq!(main.get("boot"), Some("order=scsi0;ide2;net0"));
    let disk = main.get("scsi0").unwrap();
    assert!(
        disk.starts_with("local:500/vm-500-disk-0.qcow2,") && disk.contains("size=2G"),
        "{disk}"
    );
    assert!(main.get("net0").unwrap().contains("bridge=vmbr0"));
    assert!(main.get("smbios1").is_some(), "an identity for the hub");

    // A retry finds it made; another VM under the name is refused by Proxmox.
    let before = std::fs::read_to_string(node.config_path(500)).unwrap();
    install(&node, &spec(500, "debian-lab", GuestOs::Linux))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(node.config_path(500)).unwrap(),
        before
    );
    assert!(
        install(&node, &spec(500, "other", GuestOs::Linux))
            .await
            .is_err()
    );

    // Installed (the console's part); it is a template only once stopped.
    ops::power(&node, 500, PowerAction::Start).await.unwrap();
    let running = make_template(&node, 500, None).await.unwrap_err();
    assert!(matches!(running, PveError::Conflict(_)), "{running:?}");
    ops::power(&node, 500, PowerAction::Stop).await.unwrap();
    make_template(&node, 500, None).await.unwrap();
    let template = strict_config(&node, 500);
    assert_eq!(template.main().get("template"), Some("1"));
    assert_eq!(template.main().get("ide2"), Some("none,media=cdrom"));
    assert!(
        template
            .main()
            .get("scsi0")
            .unwrap()
            .starts_with("local:500/base-500-disk-0.qcow2")
    );
    make_template(&node, 500, None).await.unwrap();

    let outcomes = clone_many(
        &node,
        500,
        vec![CloneTarget {
            vmid: 501,
            name: "student-1".into(),
        }],
        1,
        Hardware::default(),
        None,
        |_| {},
    )
    .await
    .unwrap();
    assert!(outcomes.iter().all(|o| o.error.is_none()), "{outcomes:?}");
    strict_config(&node, 501);
    drop(dir);
}

#[tokio::test]
async fn a_windows_11_vm_has_uefi_secure_boot_keys_and_a_tpm() {
    let (_dir, node) = setup();
    install(&node, &spec(600, "win11-lab", GuestOs::Windows11))
        .await
        .unwrap();
    let config = strict_config(&node, 600);
    let main = config.main();
    assert_eq!(main.get("bios"), Some("ovmf"));
    assert_eq!(main.get("machine"), Some("q35"));
    assert_eq!(main.get("ostype"), Some("win11"));
    let efi = main.get("efidisk0").unwrap();
    assert!(
        efi.contains("efitype=4m")
            && efi.contains("pre-enrolled-keys=1")
            && efi.contains("size=528K"),
        "{efi}"
    );
    let tpm = main.get("tpmstate0").unwrap();
    assert!(
        tpm.contains(".raw") && tpm.contains("size=4M") && tpm.contains("version=v2.0"),
        "{tpm}"
    );
    assert!(main.get("sata0").unwrap().contains("size=2G"));
    assert!(main.get("net0").unwrap().starts_with("e1000e="));
    make_template(&node, 600, None).await.unwrap();
    let template = strict_config(&node, 600);
    assert_eq!(template.main().get("template"), Some("1"));
    assert!(
        template
            .main()
            .get("efidisk0")
            .unwrap()
            .contains("base-600-")
    );
}

#[tokio::test]
async fn a_missing_or_wrong_iso_is_refused_before_anything_is_made() {
    let (_dir, node) = setup();
    let mut missing = spec(700, "nothing", GuestOs::Other);
    missing.iso = "local:iso/absent.iso".into();
    let err = install(&node, &missing).await.unwrap_err();
    assert!(matches!(err, PveError::NotFound(_)), "{err:?}");
    let mut disk = spec(700, "nothing", GuestOs::Other);
    disk.iso = "local:9000/base-9000-disk-0.qcow2".into();
    let err = install(&node, &disk).await.unwrap_err();
    assert!(matches!(err, PveError::Invalid(_)), "{err:?}");
    let mut shell = spec(700, "nothing", GuestOs::Other);
    shell.vm.bridge = "vmbr0;reboot".into();
    assert!(install(&node, &shell).await.is_err());
    assert!(!node.config_path(700).exists());
}
