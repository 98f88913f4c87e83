//! SSH and forwarded-port throughput and latency: `cargo bench -p proxlab-hub --bench ssh`.
//!
//! A real hub, two real agents on pve-sim nodes, one running class VM whose address is this
//! machine's, where a real OpenSSH server (the demo's launcher) and a TCP echo server stand in
//! for the VM's SSH and RDP servers. In the same run, the real `ssh` client copies 256 MiB
//! from the server directly and through a port the hub forwards (hub ⇄ QUIC ⇄ agent ⇄ VM),
//! and a 64-byte echo goes to the echo server directly and through a forwarded port.
//!
//! Prints throughput both ways and their ratio, and the echo's round trips (p50, p99) and what
//! the hub adds. Asserts nothing about speed. Needs openssh-server and a non-loopback address.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::lab::Lab;
use common::web::join_class;
use proxlab_hub::db::users::Role;
use proxlab_hub::demo::sshd::{self, LocalSshd};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SSH_PORT: u16 = 47022;
const ECHO_PORT: u16 = 47024;
const STREAM_MIB: u64 = 256;
const ECHOES: usize = 1000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Copies `STREAM_MIB` from the server with the real `ssh` client: how long it took.
async fn ssh_stream(server: &LocalSshd, host: IpAddr, port: u16) -> Duration {
    let started = Instant::now();
    let command = format!("head -c {STREAM_MIB}M /dev/zero");
    let output = common::sshd::client(server, host, port, &command)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .expect("ssh runs");
    let took = started.elapsed();
    assert!(output.status.success(), "ssh to {host}:{port} failed");
    assert_eq!(output.stdout.len() as u64, STREAM_MIB << 20);
    took
}

/// Sorted round trips of a 64-byte echo to `target`.
async fn echoes(target: SocketAddr) -> Vec<Duration> {
    let mut stream = tokio::net::TcpStream::connect(target).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut answer = [0u8; 64];
    let mut round_trips = Vec::with_capacity(ECHOES);
    for _ in 0..ECHOES {
        let started = Instant::now();
        stream.write_all(&[5u8; 64]).await.unwrap();
        stream.read_exact(&mut answer).await.unwrap();
        round_trips.push(started.elapsed());
    }
    round_trips.sort();
    round_trips
}

async fn echo_server(address: IpAddr) {
    let listener = tokio::net::TcpListener::bind((address, ECHO_PORT))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
}

#[tokio::main]
async fn main() {
    let Some(address) = sshd::available() else {
        println!("ssh bench: needs openssh-server and a non-loopback IPv4 address; skipped");
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let server = LocalSshd::start(keys.path(), address, SSH_PORT)
        .await
        .unwrap();
    echo_server(address).await;
    let lab = Lab::start_configured("shared", |config| {
        config.forwarding.ports = Some(47200..=47210);
    })
    .await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let alice = lab.user("alice", Role::Student).await;
    let (class_id, _) = lab.deployed_class(&teacher, "Bench", 1).await;
    let access = json!({"console": true, "ssh": true, "rdp": true,
        "ssh_port": SSH_PORT, "rdp_port": ECHO_PORT});
    teacher
        .api_put_json(&format!("/api/v1/classes/{class_id}/access"), &access)
        .await;
    let vmid = join_class(&teacher, &alice, class_id).await["vmid"]
        .as_u64()
        .unwrap() as u32;
    lab.run_at_address(&alice, vmid, &address.to_string()).await;
    let forward = |service: &'static str| {
        let alice = &alice;
        async move {
            let answer: Value = alice
                .api_post_json(
                    &format!("/api/v1/vms/{vmid}/forwards"),
                    &json!({"service": service}),
                )
                .await
                .json()
                .await
                .unwrap();
            answer["port"].as_u64().expect("a forwarded port") as u16
        }
    };
    let ssh_port = forward("ssh").await;
    let echo_port = forward("rdp").await;
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();

    // Warm both paths once (keys, caches), then measure.
    ssh_stream(&server, address, SSH_PORT).await;
    let direct = ssh_stream(&server, address, SSH_PORT).await;
    let through = ssh_stream(&server, loopback, ssh_port).await;
    let direct_echo = echoes(SocketAddr::new(address, ECHO_PORT)).await;
    let hub_echo = echoes(SocketAddr::new(loopback, echo_port)).await;

    let rate = |took: Duration| STREAM_MIB as f64 / took.as_secs_f64();
    println!("ssh bench: {STREAM_MIB} MiB over SSH (the ssh client), {ECHOES} echoes of 64 bytes");
    println!(
        "  SSH through the hub's forwarded port: {:7.1} MiB/s  (direct {:7.1} MiB/s, ratio {:.2})",
        rate(through),
        rate(direct),
        direct.as_secs_f64() / through.as_secs_f64()
    );
    let (p50, p99) = (percentile(&hub_echo, 0.5), percentile(&hub_echo, 0.99));
    let (d50, d99) = (
        percentile(&direct_echo, 0.5),
        percentile(&direct_echo, 0.99),
    );
    println!(
        "  64-byte echo through the hub: p50 {p50:?}, p99 {p99:?}  (direct p50 {d50:?}, p99 {d99:?}; added p50 {:?})",
        p50.saturating_sub(d50)
    );
}
