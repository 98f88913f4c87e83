//! The clone edit (how plugin steps reach the driver) on both ways of cloning, against
//! pve-sim: qcow2 overlays from a file-storage base, and `qm clone` from a block-storage base.

#[path = "support/sim.rs"]
mod sim;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxlab_agent::pve::clones::{CloneEdit, clone_many};
use proxlab_agent::pve::config::PveConfig;
use proxlab_agent::pve::node::Node;
use proxlab_protocol::clones::{CloneTarget, Hardware};
use proxlab_pve::config::VmConfig;

/// Tags every new clone, refuses VMs in `refused`, and remembers what
/// it was told was committed.
#[derive(Default)]
struct Describe {
    refused: Vec<u32>,
    committed: Mutex<Vec<u32>>,
}

impl CloneEdit for Describe {
    fn edit(&self, vmid: u32, config: &mut VmConfig) -> Result<(), String> {
        if self.refused.contains(&vmid) {
            return Err(format!("VM {vmid} is not wanted"));
        }
        config.main_mut().set("tags", &format!("edited-{vmid}"))
    }

    fn committed(&self, vmid: u32, config: &VmConfig) -> Result<(), String> {
        assert_eq!(
            config.main().get("tags"),
            Some(format!("edited-{vmid}").as_str())
        );
        self.committed.lock().unwrap().push(vmid);
        Ok(())
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// A node with a qcow2 template 9000 on `local` and a template 9001 on thin LVM.
fn node_with_two_bases(root: &Path) -> Arc<Node> {
    sim::init_node(root, "tmpl:64M");
    let cfg = root.join("etc/pve/storage.cfg");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(
        "\nlvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent images,rootdir\n",
    );
    std::fs::write(&cfg, text).unwrap();
    sim::run(
        root,
        &[
            "qm",
            "create",
            "9001",
            "--name",
            "lvm-tmpl",
            "--scsi0",
            "local-lvm:0.0625",
        ],
    );
    sim::run(root, &["qm", "template", "9001"]);
    Arc::new(Node::new(PveConfig::for_sim(root, "pve1")))
}

fn target(vmid: u32) -> Vec<CloneTarget> {
    vec![CloneTarget {
        vmid,
        name: format!("vm-{vmid}"),
    }]
}

fn config_of(root: &Path, vmid: u32) -> Option<String> {
    std::fs::read_to_string(root.join(format!("etc/pve/nodes/pve1/qemu-server/{vmid}.conf"))).ok()
}

#[tokio::test]
async fn both_clone_paths_apply_the_edit_or_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pve");
    let node = node_with_two_bases(&root);
    let edit = Arc::new(Describe {
        refused: vec![701, 801],
        ..Describe::default()
    });
    // 9000: overlays; 9001 (block storage): `qm clone`.
    for (base, made, refused) in [(9000, 700, 701), (9001, 800, 801)] {
        let outcomes = clone_many(
            &node,
            base,
            [target(made), target(refused)].concat(),
            2,
            Hardware::default(),
            Some(edit.clone() as Arc<dyn CloneEdit>),
            |_| {},
        )
        .await
        .unwrap();
        let error_of = |vmid: u32| {
            outcomes
                .iter()
                .find(|o| o.vmid == vmid)
                .unwrap()
                .error
                .clone()
        };
        assert_eq!(error_of(made), None, "base {base}");
        let config = config_of(&root, made).expect("the clone exists");
        assert!(
            config.contains(&format!("tags: edited-{made}")),
            "base {base}: {config}"
        );
        assert!(
            error_of(refused).is_some_and(|e| e.contains("not wanted")),
            "base {base}: {outcomes:?}"
        );
        assert_eq!(
            config_of(&root, refused),
            None,
            "a refused clone is gone (base {base})"
        );
    }
    let mut committed = edit.committed.lock().unwrap().clone();
    committed.sort_unstable();
    assert_eq!(committed, [700, 800]);
}
