//! Copying a base image node to node through the hub: `cargo bench -p proxlab-hub --bench base_copy`.
//!
//! A real hub and two real agents on a two-node pve-sim cluster; the template on pve1's
//! node-local storage holds 1 GiB of data (`PROXLAB_BENCH_FILL_MIB` changes it). Measured in
//! one run, warm page cache each time:
//! - the raw stream copy (`base-send` → hub → `base-receive`, SHA-256 checked end to end);
//! - the chunked copy it replaces (`base-read` / `base-write`, base64 in JSON frames);
//! - the baseline: the same file through a plain loopback TCP connection into a file, what
//!   `cat image | nc` → `nc > file` does.
//!
//! Prints MiB/s for each and the stream's share of the baseline. Asserts only that the
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
        },
        target_node: "pve2".into(),
        receive: BaseReceive {
            base_vmid: 20_000,
            storage: "local".into(),
            disk: 0,
            bytes,
            copy_id: "bench".into(),
        },
    };
    let pids: Vec<u32> = agents.iter().map(|agent| agent.id().unwrap()).collect();
    let before: Vec<f64> = pids.iter().map(|pid| cpu_seconds(*pid)).collect();
    let hub_before = cpu_seconds(std::process::id());
    let started = Instant::now();
    let copied = registry.copy_image(copy).await.unwrap();
    let stream_seconds = started.elapsed().as_secs_f64();
    let hub_cpu = cpu_seconds(std::process::id()) - hub_before;
    let agents_cpu: Vec<f64> = pids
        .iter()
        .zip(&before)
        .map(|(pid, before)| cpu_seconds(*pid) - before)
        .collect();
    assert_eq!(copied.sent, bytes);
    assert_eq!(sha256_of(&staged(&sim.root, 20_000)), digest);

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

    let stream = mib_per_s(bytes, stream_seconds);
    let tcp = mib_per_s(bytes, tcp_seconds);
    println!(
        "base copy of {} MiB node to node: stream {stream:.0} MiB/s ({stream_seconds:.2} s, \
         SHA-256 checked; CPU s: sender {:.2}, hub {hub_cpu:.2}, receiver {:.2}), chunked \
         {:.0} MiB/s ({chunked_seconds:.2} s), plain TCP {tcp:.0} MiB/s ({tcp_seconds:.2} s); \
         stream / TCP = {:.2}",
        bytes >> 20,
        agents_cpu[0],
        agents_cpu[1],
        mib_per_s(bytes, chunked_seconds),
        stream / tcp
    );
}
