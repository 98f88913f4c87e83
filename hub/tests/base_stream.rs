//! The raw-byte base copy between two real agents through a real hub, on lanes and on the
//! request streams: the image arrives byte for byte, and a copy cut off half way by killing
//! either agent resumes where it stopped instead of starting over.

mod common;

use std::path::{Path, PathBuf};

use common::{SimCluster, TestHub, find_file, within};
use proxlab_hub::agents::CallError;
use proxlab_hub::agents::relay::{Copied, ImageCopy};
use proxlab_protocol::base_copy::{BaseReceive, BaseSend};
use sha2::{Digest, Sha256};
use tokio::process::Child;

const SOURCE_BASE: u32 = 9000;
const TARGET_BASE: u32 = 20_000;
const DATA: &str = "256M";

fn sha256_of(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).unwrap();
    hex::encode(hasher.finalize())
}

struct Nodes {
    hub: TestHub,
    sim: SimCluster,
    agents: Vec<(String, Child)>,
    source_image: PathBuf,
}

impl Nodes {
    /// Two nodes and a hub that listens for lanes, or not.
    async fn start(lanes: bool) -> Self {
        let hub = TestHub::start_configured(None, |config| config.lanes = lanes).await;
        let sim = SimCluster::init_on(hub.dir.path(), "pve1,pve2", &["tpl:1G"], "local");
        let source_image = find_file(&sim.root, "base-9000-disk-0.qcow2").unwrap();
        // The template holds data, as an installed system would.
        let filled = std::process::Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", &format!("write -P 0x5a 0 {DATA}")])
            .arg(&source_image)
            .output()
            .unwrap();
        assert!(filled.status.success(), "{filled:?}");
        let mut agents = Vec::new();
        for node in ["pve1", "pve2"] {
            agents.push((node.to_owned(), hub.sim_agent(&sim, node).await));
        }
        Self {
            hub,
            sim,
            agents,
            source_image,
        }
    }

    fn copy(&self, copy_id: &str) -> ImageCopy {
        ImageCopy {
            source_node: "pve1".into(),
            send: BaseSend {
                base_vmid: SOURCE_BASE,
                disk: 0,
                offset: 0,
                diff_against: None,
                from_vm: false,
                lane: None,
            },
            target_node: "pve2".into(),
            receive: BaseReceive {
                base_vmid: TARGET_BASE,
                storage: "local".into(),
                disk: 0,
                bytes: std::fs::metadata(&self.source_image).unwrap().len(),
                copy_id: copy_id.into(),
                lane: None,
            },
        }
    }

    fn part(&self) -> Option<PathBuf> {
        find_file(&self.sim.root, "base-20000-disk-0.qcow2.part")
    }

    async fn run(&self, copy_id: &str) -> Result<Copied, CallError> {
        self.hub
            .hub()
            .registry()
            .copy_image(self.copy(copy_id))
            .await
    }

    /// Kills `node`'s agent once the staged file holds half the image, and starts it again;
    /// the copy under way fails, as the killed agent's streams end.
    async fn cut_off_half_way(&mut self, node: &str, copy_id: &str) {
        let total = std::fs::metadata(&self.source_image).unwrap().len();
        let mut agents = std::mem::take(&mut self.agents);
        self.cut_off(&mut agents, node, copy_id, total).await;
        self.agents = agents;
    }

    async fn cut_off(&self, agents: &mut [(String, Child)], node: &str, copy_id: &str, total: u64) {
        // What an earlier copy left must not pass for this one's progress.
        if let Some(part) = self.part() {
            std::fs::remove_file(part).unwrap();
        }
        let copying = self.run(copy_id);
        tokio::pin!(copying);
        let half_way = async {
            loop {
                let staged = self
                    .part()
                    .and_then(|part| std::fs::metadata(part).ok())
                    .map_or(0, |meta| meta.len());
                if staged >= total / 2 {
                    return staged;
                }
                // A file's size has no event to wait for.
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        };
        let staged = tokio::select! {
            staged = half_way => staged,
            finished = &mut copying => panic!("the copy ended before half way: {finished:?}"),
        };
        assert!(staged < total, "{staged} of {total}");
        let (_, agent) = agents.iter_mut().find(|(name, _)| name == node).unwrap();
        agent.kill().await.unwrap();
        *agent = self.hub.start_sim_agent(&self.sim, node).await;
        let failed = within("the cut-off copy ends", copying).await;
        assert!(failed.is_err(), "{failed:?}");
    }
}

/// A firewall rule (nftables) that drops TCP to one port of this machine, as a site that
/// lets the agents' QUIC through but not TCP would; gone when dropped.
struct TcpBlocked {
    table: String,
}

impl TcpBlocked {
    /// Blocks TCP to `port`, or says why it cannot (the test skips).
    fn port(port: u16) -> Option<Self> {
        let table = format!("proxlab_test_{}_{port}", std::process::id());
        let rules = format!(
            "table inet {table} {{\n chain output {{\n  type filter hook output priority 0; \
             policy accept;\n  tcp dport {port} drop\n }}\n}}\n"
        );
        let added = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut nft| {
                use std::io::Write;
                nft.stdin.take().unwrap().write_all(rules.as_bytes())?;
                nft.wait_with_output()
            });
        match added {
            Ok(output) if output.status.success() => Some(Self { table }),
            failed => {
                eprintln!(
                    "NOTICE: nftables (Debian's nftables, run as root) cannot block a port here \
                     ({failed:?}); skipping."
                );
                None
            }
        }
    }
}

impl Drop for TcpBlocked {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

#[tokio::test]
async fn an_image_travels_whole_on_lanes_and_a_cut_off_copy_resumes() {
    copies_whole_and_resumes(true).await;
}

#[tokio::test]
async fn without_lanes_an_image_travels_on_the_request_streams() {
    copies_whole_and_resumes(false).await;
}

/// Where TCP to the hub's link port is blocked, the lanes cannot arrive: the copy waits
/// for them in vain, then the image travels on the request streams, and copies from and to
/// that node stop trying lanes for a while.
#[tokio::test]
async fn a_copy_whose_lanes_cannot_arrive_travels_on_the_request_streams() {
    let nodes = Nodes::start(true).await;
    let registry = nodes.hub.hub().registry();
    assert!(registry.copies_on_lanes("pve1", "pve2"));
    let Some(_blocked) = TcpBlocked::port(nodes.hub.config.quic_addr.port()) else {
        return;
    };
    let total = std::fs::metadata(&nodes.source_image).unwrap().len();
    for copy_id in ["copy-1", "copy-2"] {
        let copied = within("a copy without lanes", nodes.run(copy_id))
            .await
            .unwrap();
        assert_eq!(
            copied,
            Copied {
                resumed_at: 0,
                sent: total,
                on_lanes: false,
            },
            "{copy_id}"
        );
        assert_eq!(
            sha256_of(&nodes.part().unwrap()),
            sha256_of(&nodes.source_image),
            "{copy_id}"
        );
        assert!(!registry.copies_on_lanes("pve1", "pve2"), "{copy_id}");
        std::fs::remove_file(nodes.part().unwrap()).unwrap();
    }
}

/// A whole copy, copies cut off half way by killing either agent (each resumes), and a
/// damaged staged file (refused, then copied afresh); on lanes or on the request streams.
async fn copies_whole_and_resumes(lanes: bool) {
    let mut nodes = Nodes::start(lanes).await;
    let total = std::fs::metadata(&nodes.source_image).unwrap().len();
    let source_digest = sha256_of(&nodes.source_image);

    let whole = within("a whole copy", nodes.run("copy-1")).await.unwrap();
    assert_eq!(
        whole,
        Copied {
            resumed_at: 0,
            sent: total,
            on_lanes: lanes,
        }
    );
    assert_eq!(sha256_of(&nodes.part().unwrap()), source_digest);

    // Another copy starts afresh, whatever the staged file holds; cut off by the target.
    for (node, copy_id) in [("pve2", "copy-2"), ("pve1", "copy-3")] {
        nodes.cut_off_half_way(node, copy_id).await;
        let resumed = within("the resumed copy", nodes.run(copy_id))
            .await
            .unwrap();
        assert!(
            resumed.resumed_at >= total / 2 && resumed.resumed_at < total,
            "{node} killed: {resumed:?} of {total}"
        );
        assert_eq!(resumed.sent, total - resumed.resumed_at, "{node} killed");
        assert_eq!(resumed.on_lanes, lanes, "{node} killed");
        assert_eq!(
            sha256_of(&nodes.part().unwrap()),
            source_digest,
            "{node} killed"
        );
    }

    // Bytes that are not the sender's (here: a damaged staged file) fail the digest; the
    // staged file is discarded and the next copy starts from the beginning.
    nodes.cut_off_half_way("pve2", "copy-4").await;
    let part = nodes.part().unwrap();
    let mut damaged = std::fs::read(&part).unwrap();
    damaged[4096] ^= 0xff;
    std::fs::write(&part, damaged).unwrap();
    let refused = within("a damaged copy", nodes.run("copy-4")).await;
    assert!(
        matches!(&refused, Err(CallError::Remote(error)) if error.message.contains("checksum")),
        "{refused:?}"
    );
    let again = within("a fresh copy", nodes.run("copy-4")).await.unwrap();
    assert_eq!(
        again,
        Copied {
            resumed_at: 0,
            sent: total,
            on_lanes: lanes,
        }
    );
    assert_eq!(sha256_of(&nodes.part().unwrap()), source_digest);
}
