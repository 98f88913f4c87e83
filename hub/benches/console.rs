//! Console throughput and latency: `cargo bench -p proxlab-hub --bench console`.
//!
//! A real hub and a real agent on a pve-sim node with one running VM. The VM's serial socket
//! is taken over by this bench (a local sink or source or echo), so what is measured is the
//! path browser-side WebSocket ⇄ hub ⇄ QUIC ⇄ agent ⇄ socket, and nothing of a guest. In the
//! same run, the same transfers over a plain loopback TCP connection are the baseline.
//!
//! Prints: throughput both ways and its ratio to TCP, the round trip of a 64-byte echo (p50,
//! p99) and what the console adds to TCP's, the hub's CPU time per MiB carried, and the time
//! from asking for a ticket to the first byte from the VM. Asserts nothing about speed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use common::console::{self, ConsoleSocket};
use common::web::WebClient;
use common::{SimCluster, TestHub, within};
use proxlab_hub::db::users::Role;
use proxlab_hub::domain::audit::Actor;
use proxlab_hub::domain::auth::issue_api_token;
use proxlab_hub::domain::viewer::Viewer;
use proxlab_protocol::inventory::PowerState;

const VMID: u32 = 100;
const MIB: usize = 1024 * 1024;
const TRANSFER_MIB: usize = 64;
const CHUNK: usize = 64 * 1024;
const ECHOES: usize = 1000;

/// What the VM's side of the console does in a measurement.
#[derive(Clone, Copy)]
enum Peer {
    /// Reads `n` bytes, then answers one byte.
    Sink(usize),
    /// Writes `n` bytes.
    Source(usize),
    /// Sends back what it reads.
    Echo,
}

/// Serves one connection as `peer`.
fn serve(stream: &mut (impl Read + Write), peer: Peer) {
    let mut buffer = vec![0u8; CHUNK];
    match peer {
        Peer::Sink(total) => {
            let mut seen = 0;
            while seen < total {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen += n,
                }
            }
            let _ = stream.write_all(&[1]);
        }
        Peer::Source(total) => {
            let mut sent = 0;
            while sent < total {
                let n = CHUNK.min(total - sent);
                if stream.write_all(&buffer[..n]).is_err() {
                    return;
                }
                sent += n;
            }
        }
        Peer::Echo => loop {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if stream.write_all(&buffer[..n]).is_err() {
                        return;
                    }
                }
            }
        },
    }
}

/// CPU seconds (user + system) of this process so far.
fn process_cpu() -> f64 {
    cpu_of("/proc/self/stat")
}

fn cpu_of(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split(' ').collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

/// Both directions and the echo over one kind of connection: seconds up, seconds down,
/// sorted round trips.
struct Figures {
    up: Duration,
    down: Duration,
    round_trips: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn mib_per_sec(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / MIB as f64 / took.as_secs_f64()
}

/// The baseline: loopback TCP, the peer in a thread.
fn tcp_figures() -> Figures {
    let run = |peer: Peer, client: &mut dyn FnMut(&mut std::net::TcpStream)| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_nodelay(true).unwrap();
            serve(&mut stream, peer);
        });
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        let started = Instant::now();
        client(&mut stream);
        let took = started.elapsed();
        drop(stream);
        server.join().unwrap();
        took
    };
    let total = TRANSFER_MIB * MIB;
    let chunk = vec![7u8; CHUNK];
    let up = run(Peer::Sink(total), &mut |stream| {
        for _ in 0..total / CHUNK {
            stream.write_all(&chunk).unwrap();
        }
        let mut ack = [0u8; 1];
        stream.read_exact(&mut ack).unwrap();
    });
    let down = run(Peer::Source(total), &mut |stream| {
        let mut buffer = vec![0u8; CHUNK];
        let mut seen = 0;
        while seen < total {
            seen += stream.read(&mut buffer).unwrap();
        }
    });
    let mut round_trips = Vec::new();
    run(Peer::Echo, &mut |stream| {
        let mut answer = [0u8; 64];
        for _ in 0..ECHOES {
            let started = Instant::now();
            stream.write_all(&[5u8; 64]).unwrap();
            stream.read_exact(&mut answer).unwrap();
            round_trips.push(started.elapsed());
        }
    });
    round_trips.sort();
    Figures {
        up,
        down,
        round_trips,
    }
}

/// The VM's serial socket, served by a thread of this bench as `peer` (for one connection).
fn take_over_serial(sim: &SimCluster, peer: Peer) -> std::thread::JoinHandle<()> {
    let path = sim.root.join(format!("var/run/qemu-server/{VMID}.serial0"));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        serve(&mut stream, peer);
    })
}

async fn open(admin: &WebClient) -> ConsoleSocket {
    let (status, ticket) = console::ticket(admin, VMID, "serial").await;
    assert_eq!(status, 201, "{ticket}");
    console::open(admin, ticket["url"].as_str().unwrap(), None)
        .await
        .socket()
}

#[tokio::main]
async fn main() {
    let hub = TestHub::start().await;
    let sim = SimCluster::init(hub.dir.path(), "pve1", &[]);
    let _agent = hub.sim_agent(&sim, "pve1").await;
    let id = VMID.to_string();
    sim.ok(
        "pve1",
        "qm",
        &["create", &id, "--memory", "512", "--serial0", "socket"],
    );
    sim.ok("pve1", "qm", &["start", &id]);
    let state = hub.hub().state.clone();
    let mut inventory = state.inventory_changes.subscribe();
    within("the VM running in the inventory", async {
        while state
            .db
            .vm(common::key_of(&state.db, VMID).await)
            .await
            .unwrap()
            .is_none_or(|vm| vm.status != PowerState::Running)
        {
            let _ = inventory.recv().await;
        }
    })
    .await;
    proxlab_hub::domain::accounts::create_user(
        &state.db,
        "ada",
        Role::Admin,
        Some("a-long-password"),
    )
    .await
    .unwrap();
    let row = state.db.user_by_name("ada").await.unwrap().unwrap();
    let token = issue_api_token(&state.db, &Viewer::from(&row), "bench", Actor::Operator)
        .await
        .unwrap();
    let admin = WebClient::with_token(&hub.url(), &token);

    let baseline = tcp_figures();
    let total = TRANSFER_MIB * MIB;

    // Time to the first byte: the ticket, the WebSocket, the agent connecting to the VM.
    let peer = take_over_serial(&sim, Peer::Source(1));
    let started = Instant::now();
    let mut first = open(&admin).await;
    first.read_exact(1).await;
    let first_byte = started.elapsed();
    first.close().await;
    peer.join().unwrap();

    let cpu_before = process_cpu();
    let peer = take_over_serial(&sim, Peer::Sink(total));
    let mut socket = open(&admin).await;
    let started = Instant::now();
    let chunk = vec![7u8; CHUNK];
    for _ in 0..total / CHUNK {
        socket.send(&chunk).await;
    }
    socket.read_exact(1).await;
    let up = started.elapsed();
    socket.close().await;
    peer.join().unwrap();

    let peer = take_over_serial(&sim, Peer::Source(total));
    let mut socket = open(&admin).await;
    let started = Instant::now();
    socket.read_exact(total).await;
    let down = started.elapsed();
    socket.close().await;
    peer.join().unwrap();
    let cpu = process_cpu() - cpu_before;

    let peer = take_over_serial(&sim, Peer::Echo);
    let mut socket = open(&admin).await;
    let mut round_trips = Vec::new();
    for _ in 0..ECHOES {
        let started = Instant::now();
        socket.send(&[5u8; 64]).await;
        socket.read_exact(64).await;
        round_trips.push(started.elapsed());
    }
    round_trips.sort();
    socket.close().await;
    peer.join().unwrap();

    let (p50, p99) = (
        percentile(&round_trips, 0.5),
        percentile(&round_trips, 0.99),
    );
    let (tcp50, tcp99) = (
        percentile(&baseline.round_trips, 0.5),
        percentile(&baseline.round_trips, 0.99),
    );
    println!("console bench: {TRANSFER_MIB} MiB each way, {ECHOES} echoes of 64 bytes");
    println!(
        "  browser -> VM: {:8.1} MiB/s  (loopback TCP {:8.1} MiB/s, ratio {:.2})",
        mib_per_sec(total, up),
        mib_per_sec(total, baseline.up),
        baseline.up.as_secs_f64() / up.as_secs_f64()
    );
    println!(
        "  VM -> browser: {:8.1} MiB/s  (loopback TCP {:8.1} MiB/s, ratio {:.2})",
        mib_per_sec(total, down),
        mib_per_sec(total, baseline.down),
        baseline.down.as_secs_f64() / down.as_secs_f64()
    );
    println!(
        "  64-byte echo:  p50 {:?}, p99 {:?}  (loopback TCP p50 {:?}, p99 {:?}; added p50 {:?})",
        p50,
        p99,
        tcp50,
        tcp99,
        p50.saturating_sub(tcp50)
    );
    println!(
        "  CPU of this process (hub, agent link and the bench's own WebSocket client) per MiB \
         carried: {:.1} ms",
        cpu * 1000.0 / (2 * TRANSFER_MIB) as f64
    );
    println!("  ticket to first byte from the VM: {first_byte:?}");
}
