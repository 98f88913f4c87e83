//! Portal and API speed with a large inventory: `cargo bench -p proxlab-hub --bench portal`.
//!
//! A hub (SQLite) with 2,000 VMs on two nodes; as an admin, `GET /api/v1/vms` (its default
//! page of 100, and the largest page of 1,000) and the My VMs page are requested one at a time
//! for latency (p50, p99) and from 8 concurrent clients for throughput. Prints figures;
//! asserts nothing about speed.

use std::time::{Duration, Instant};

use proxlab_hub::Hub;
use proxlab_hub::config::HubConfig;
use proxlab_hub::db::now_unix;
use proxlab_hub::db::users::Role;
use proxlab_hub::domain::accounts::create_user;
use proxlab_hub::domain::audit::Actor;
use proxlab_hub::domain::auth::issue_api_token;
use proxlab_hub::domain::viewer::Viewer;
use proxlab_hub::secrets::hash_secret;
use proxlab_protocol::inventory::{
    DiskInfo, Inventory, IpAddress, IpSource, NicInfo, PowerState, VmInfo,
};

const VMS_PER_NODE: u32 = 1000;
const SEQUENTIAL: usize = 300;
const CONCURRENT_CLIENTS: usize = 8;
const CONCURRENT_FOR: Duration = Duration::from_secs(5);

fn vm(vmid: u32, node: &str) -> VmInfo {
    VmInfo {
        vmid,
        name: format!("lab-{vmid}"),
        node: node.into(),
        status: if vmid.is_multiple_of(3) {
            PowerState::Running
        } else {
            PowerState::Stopped
        },
        template: false,
        cores: 2,
        sockets: 1,
        memory_mib: 2048,
        disks: vec![DiskInfo {
            key: "scsi0".into(),
            volid: format!("local:{vmid}/vm-{vmid}-disk-0.qcow2"),
            size_bytes: 8 << 30,
        }],
        nics: vec![NicInfo {
            key: "net0".into(),
            model: "virtio".into(),
            mac: format!("BC:24:11:00:{:02X}:{:02X}", vmid / 256 % 256, vmid % 256),
            bridge: Some("vmbr0".into()),
            vlan: None,
        }],
        tags: vec![],
        lock: None,
        uptime_secs: 0,
        cpu: 0.0,
        mem_bytes: 0,
        ips: vec![IpAddress {
            address: format!("10.{}.{}.{}", vmid / 65536, vmid / 256 % 256, vmid % 256),
            mac: String::new(),
            source: IpSource::GuestAgent,
        }],
        identity: None,
        pending: Vec::new(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn measure(
    name: &str,
    request: impl Fn() -> reqwest::RequestBuilder + Clone + Send + 'static,
) {
    let mut latencies = Vec::with_capacity(SEQUENTIAL);
    let mut bytes = 0;
    for _ in 0..SEQUENTIAL {
        let started = Instant::now();
        let response = request().send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{name}: {}",
            response.status()
        );
        bytes = response.bytes().await.unwrap().len();
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENT_CLIENTS {
        let request = request.clone();
        workers.push(tokio::spawn(async move {
            let mut done = 0u64;
            while started.elapsed() < CONCURRENT_FOR {
                let response = request().send().await.unwrap();
                response.bytes().await.unwrap();
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for worker in workers {
        total += worker.await.unwrap();
    }
    let rps = total as f64 / started.elapsed().as_secs_f64();
    println!(
        "{name:<28} {:>7} KiB  p50 {:>6.2} ms  p99 {:>6.2} ms  {rps:>7.0} req/s ({CONCURRENT_CLIENTS} clients)",
        bytes / 1024,
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = HubConfig::new(dir.path().join("hub"));
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.quic_addr = "127.0.0.1:0".parse().unwrap();
    let hub = Hub::start(config).await.unwrap();
    let db = &hub.state.db;
    for (index, node) in ["pve1", "pve2"].into_iter().enumerate() {
        let token = format!("bench-{node}");
        db.insert_join_token(&hash_secret(&token), None, 0, i64::MAX / 2)
            .await
            .unwrap();
        db.enroll_node(&hash_secret(&token), node, node, now_unix())
            .await
            .unwrap();
        let first = 1000 + index as u32 * VMS_PER_NODE;
        let inventory = Inventory {
            vms: (first..first + VMS_PER_NODE)
                .map(|vmid| vm(vmid, node))
                .collect(),
            storages: vec![],
            isos: vec![],
        };
        db.replace_inventory(node, &inventory, now_unix())
            .await
            .unwrap();
    }
    create_user(db, "bench", Role::Admin, Some("bench-password"))
        .await
        .unwrap();
    let user = db.user_by_name("bench").await.unwrap().unwrap();
    let token = issue_api_token(db, &Viewer::from(&user), "bench", Actor::Operator)
        .await
        .unwrap();
    let started = Instant::now();
    let rows = db.list_vms().await.unwrap();
    println!(
        "(database read of {} VMs: {:.2} ms)",
        rows.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    let base = format!("http://{}", hub.http_addr());
    let client = reqwest::Client::new();
    let session = {
        let (viewer, secret) = hub
            .state
            .auth
            .login("bench", "bench-password", "127.0.0.1".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(viewer.username, "bench");
        secret.id
    };
    println!(
        "proxlab portal, {} VMs, SQLite, {} sequential requests then {CONCURRENT_FOR:?} of {CONCURRENT_CLIENTS} concurrent clients",
        2 * VMS_PER_NODE,
        SEQUENTIAL
    );
    let api = {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        move || client.get(format!("{base}/api/v1/vms")).bearer_auth(&token)
    };
    measure("GET /api/v1/vms (admin)", api).await;
    let largest = {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        move || {
            client
                .get(format!("{base}/api/v1/vms?limit=1000"))
                .bearer_auth(&token)
        }
    };
    measure("GET /api/v1/vms?limit=1000", largest).await;
    let page = {
        let (client, base) = (client.clone(), base.clone());
        move || {
            client
                .get(format!("{base}/vms"))
                .header("cookie", format!("proxlab_session={session}"))
        }
    };
    measure("GET /vms page (admin)", page).await;
    hub.shutdown().await;
}
