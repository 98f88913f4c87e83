//! Copying a base image node to node through the hub: `cargo bench -p proxlab-hub --bench base_copy`.
//!
//! A real hub and two real agents on a two-node pve-sim cluster; the template on pve1's
//! node-local storage holds 1 GiB of data (`PROXLAB_BENCH_FILL_MIB` changes it). Measured in
//! one run, warm page cache each time:
//! - the raw copy on lanes (`base-send` → hub → `base-receive`, TCP + TLS, BLAKE3-checked
//!   end to end), what the hub uses;
//! - the same on the requests' QUIC streams, its fallback;
//! - the chunked copy it replaces (`base-read` / `base-write`, base64 in JSON frames);
//! - the baseline: the same file through a plain loopback TCP connection into a file, what
//!   `cat image | nc` → `nc > file` does.
//!
//! Prints MiB/s for each, CPU seconds for the raw copies, and the lanes' share of the
//! baseline. Asserts only that the
//! copies arrived whole.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{SimCluster, TestHub};
use proxlab_hub::agents::relay::ImageCopy;
use proxlab_protocol::base_copy::{BaseRead, BaseReceive, BaseSend, BaseWrite};
use sha2::{Digest, Sha256};

const TEMPLATE: u32 = 9000;

fn sha256_of(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).unwrap();
    hex::encode(hasher.finalize())
}

fn mib_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / f64::from(1 << 20) / seconds
}

/// The file through a loopback TCP connection into `to`: seconds taken.
fn tcp_baseline(from: &Path, to: &Path) -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let to = to.to_owned();
    let started = Instant::now();
    let receiver = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut file = std::fs::File::create(&to).unwrap();
        let mut buffer = vec![0; 1 << 20];
        loop {
            let n = stream.read(&mut buffer).unwrap();
            if n == 0 {
                break;
            }
            file.write_all(&buffer[..n]).unwrap();
        }
        file.sync_all().unwrap();
    });
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    std::io::copy(&mut std::fs::File::open(from).unwrap(), &mut stream).unwrap();
    drop(stream);
    receiver.join().unwrap();
    started.elapsed().as_secs_f64()
}

/// CPU seconds a process has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn staged(root: &Path, vmid: u32) -> PathBuf {
    common::find_file(root, &format!("base-{vmid}-disk-0.qcow2.part")).unwrap()
}

#[tokio::main]
async fn main() {
    let hub = TestHub::start().await;
    let sim = SimCluster::init_on(hub.dir.path(), "pve1,pve2", &["bench-tpl:2G"], "local");
    let agents = [
        hub.sim_agent(&sim, "pve1").await,
        hub.sim_agent(&sim, "pve2").await,
    ];
    let registry = hub.hub().registry();
    let fill_mib: u64 = std::env::var("PROXLAB_BENCH_FILL_MIB")
        .ok()
        .and_then(|mib| mib.parse().ok())
        .unwrap_or(1024);
    let image = common::find_file(&sim.root, &format!("base-{TEMPLATE}-disk-0.qcow2")).unwrap();
    let filled = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", &format!("write -P 0x5a 0 {fill_mib}M")])
        .arg(&image)
        .output()
        .unwrap();
    assert!(filled.status.success(), "{filled:?}");
    let bytes = std::fs::metadata(&image).unwrap().len();
    let digest = sha256_of(&image);

    // The baseline (and the page cache warmed).
    let plain = hub.dir.path().join("tcp-copy.qcow2");
    let tcp_seconds = tcp_baseline(&image, &plain);
    std::fs::remove_file(&plain).unwrap();

    let copy = ImageCopy {
        source_node: "pve1".into(),
        send: BaseSend {
            base_vmid: TEMPLATE,
            disk: 0,
            offset: 0,
            diff_against: None,
            from_vm: false,
            lane: None,
        },
        target_node: "pve2".into(),
        receive: BaseReceive {
            base_vmid: 20_000,
            storage: "local".into(),
            disk: 0,
            bytes,
            copy_id: "bench".into(),
            lane: None,
        },
    };
    let pids: Vec<u32> = agents.iter().map(|agent| agent.id().unwrap()).collect();
    let (root, expected) = (&sim.root, &digest);
    let measure = |copy: ImageCopy, on_lanes: bool| {
        let pids = pids.clone();
        async move {
            let before: Vec<f64> = pids.iter().map(|pid| cpu_seconds(*pid)).collect();
            let hub_before = cpu_seconds(std::process::id());
            let started = Instant::now();
            let copied = if on_lanes {
                registry.copy_image(copy).await.unwrap()
            } else {
                registry.copy_over_streams(copy).await.unwrap()
            };
            let seconds = started.elapsed().as_secs_f64();
            let hub_cpu = cpu_seconds(std::process::id()) - hub_before;
            let agents_cpu: Vec<f64> = pids
                .iter()
                .zip(&before)
                .map(|(pid, before)| cpu_seconds(*pid) - before)
                .collect();
            assert_eq!(copied.sent, bytes);
            assert_eq!(copied.on_lanes, on_lanes);
            assert_eq!(&sha256_of(&staged(root, 20_000)), expected);
            (seconds, [agents_cpu[0], hub_cpu, agents_cpu[1]])
        }
    };
    let (lane_seconds, lane_cpu) = measure(copy.clone(), true).await;
    let stream_copy = ImageCopy {
        receive: BaseReceive {
            copy_id: "bench-streams".into(),
            ..copy.receive.clone()
        },
        ..copy
    };
    let (stream_seconds, stream_cpu) = measure(stream_copy, false).await;

    let started = Instant::now();
    let mut offset = 0;
    while offset < bytes {
        let read = BaseRead {
            base_vmid: TEMPLATE,
            disk: 0,
            offset,
            diff_against: None,
            from_vm: false,
        };
        let chunk = registry.call("pve1", &read).await.unwrap();
        let len = u64::from(chunk.len);
        let write = BaseWrite {
            base_vmid: 20_001,
            storage: "local".into(),
            disk: 0,
            offset,
            chunk,
        };
        registry.call("pve2", &write).await.unwrap();
        offset += len;
    }
    let chunked_seconds = started.elapsed().as_secs_f64();
    assert_eq!(sha256_of(&staged(&sim.root, 20_001)), digest);

    let lanes = mib_per_s(bytes, lane_seconds);
    let stream = mib_per_s(bytes, stream_seconds);
    let tcp = mib_per_s(bytes, tcp_seconds);
    let cpu = |[sender, hub, receiver]: [f64; 3]| {
        format!("CPU s: sender {sender:.2}, hub {hub:.2}, receiver {receiver:.2}")
    };
    println!(
        "base copy of {} MiB node to node, checked end to end: lanes {lanes:.0} MiB/s \
         ({lane_seconds:.2} s; {}), QUIC streams {stream:.0} MiB/s ({stream_seconds:.2} s; {}), \
         chunked {:.0} MiB/s ({chunked_seconds:.2} s), plain TCP {tcp:.0} MiB/s \
         ({tcp_seconds:.2} s); lanes / TCP = {:.2}",
        bytes >> 20,
        cpu(lane_cpu),
        cpu(stream_cpu),
        mib_per_s(bytes, chunked_seconds),
        lanes / tcp
    );
}
