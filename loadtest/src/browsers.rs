//! What people's browsers do meanwhile: live-update streams (`GET /api/v1/events`), each
//! timing how long a probed VM change took from the agent's send to the stream, and an API
//! client listing VMs.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Deserialize;

use crate::fleet::ProbeBook;

/// Latencies in one list, shared by every stream.
#[derive(Debug, Default)]
pub struct Samples {
    values: Mutex<Vec<Duration>>,
}

impl Samples {
    pub fn push(&self, value: Duration) {
        self.lock().push(value);
    }

    /// Takes what was gathered so far.
    pub fn take(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Duration>> {
        self.values
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the streams saw.
#[derive(Debug, Default)]
pub struct StreamCounters {
    pub open: AtomicUsize,
    pub events: AtomicUsize,
    pub resyncs: AtomicUsize,
    pub failures: AtomicUsize,
}

#[derive(Debug, Deserialize)]
struct VmEvent {
    vmid: u32,
    status: String,
}

/// Keeps one live-update stream open with `token`, timing probes it sees, reopening it if
/// the hub ends it.
pub async fn stream(
    http: SocketAddr,
    token: String,
    probes: Arc<ProbeBook>,
    latencies: Arc<Samples>,
    counters: Arc<StreamCounters>,
) {
    let client = reqwest::Client::new();
    let url = format!("http://{http}/api/v1/events");
    let mut seen: HashSet<u64> = HashSet::new();
    loop {
        let response = client.get(&url).bearer_auth(&token).send().await;
        let mut body = match response {
            Ok(response) if response.status().is_success() => response.bytes_stream(),
            _ => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        counters.open.fetch_add(1, Ordering::Relaxed);
        let mut buffer = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let message: String = buffer.drain(..end + 2).collect();
                on_message(&message, &probes, &latencies, &counters, &mut seen);
            }
        }
        counters.open.fetch_sub(1, Ordering::Relaxed);
        counters.failures.fetch_add(1, Ordering::Relaxed);
    }
}

fn on_message(
    message: &str,
    probes: &ProbeBook,
    latencies: &Samples,
    counters: &StreamCounters,
    seen: &mut HashSet<u64>,
) {
    let mut name = "message";
    let mut data = String::new();
    for line in message.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = value.trim();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push_str(value.trim_start());
        }
    }
    match name {
        "vm" => {
            counters.events.fetch_add(1, Ordering::Relaxed);
            let Ok(vm) = serde_json::from_str::<VmEvent>(&data) else {
                return;
            };
            if let Some(probe) = probes.matching(vm.vmid, vm.status == "running")
                && seen.insert(probe.seq)
            {
                latencies.push(probe.sent.elapsed());
            }
        }
        "resync" => {
            counters.resyncs.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            counters.events.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the API client saw.
#[derive(Debug, Default)]
pub struct ApiCounters {
    pub errors: AtomicUsize,
}

/// Lists VMs (`GET /api/v1/vms`, the portal's default page size) one request after another
/// until `until`, recording each request's time.
pub async fn list_vms(
    http: SocketAddr,
    token: String,
    until: Instant,
    latencies: Arc<Samples>,
    counters: Arc<ApiCounters>,
) {
    let client = reqwest::Client::new();
    let url = format!("http://{http}/api/v1/vms");
    while Instant::now() < until {
        let began = Instant::now();
        let outcome = client.get(&url).bearer_auth(&token).send().await;
        let ok = match outcome {
            Ok(response) if response.status().is_success() => response.bytes().await.is_ok(),
            _ => false,
        };
        if ok {
            latencies.push(began.elapsed());
        } else {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many VMs the hub has recorded (the list's `total`), as an admin sees it.
pub async fn recorded_vms(http: SocketAddr, token: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Total {
        total: u64,
    }
    let response = reqwest::Client::new()
        .get(format!("http://{http}/api/v1/vms?limit=1"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    response.json::<Total>().await.ok().map(|total| total.total)
}
