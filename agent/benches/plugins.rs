//! `cargo bench -p proxlab-agent --bench plugins`: for each example plugin, the cold compile
//! time (a fresh engine, nothing cached) and the latency of warm hook calls (fresh store and
//! instance per call, as the agent makes them). Needs `plugins/build` first. Prints figures;
//! asserts nothing about speed.

use std::path::Path;
use std::time::{Duration, Instant};

use proxlab_agent::plugins::invoke::invoke;
use proxlab_agent::plugins::{Hook, HookFacts, NodeFacts, PluginHost, PluginSettings, files};

const CALLS: usize = 2_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist");
    if !dist.join("name-by-student/plugin.wasm").exists() {
        eprintln!("the plugins are not built: run plugins/build first");
        std::process::exit(1);
    }
    let input: HookFacts = serde_json::from_value(serde_json::json!({
        "class": {"id": 42, "name": "Networking 101", "slug": "networking-101"},
        "vm": {"vmid": 10001, "kind": "student", "index": 1, "student": "alice",
               "name": "networking-101-s01"},
        "student": {"username": "alice", "display_name": "Alice Liddell"},
        "config": [["cores", "2"], ["net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0"]],
        "settings": {},
    }))
    .expect("the bench's facts");
    let facts = NodeFacts {
        node: "bench".into(),
        agent_version: "bench".into(),
    };
    println!("plugin                cold compile   warm call p50   p99     ({CALLS} calls)");
    for (name, hook) in [
        ("name-by-student", Hook::Name),
        ("vlan-per-class", Hook::Configure),
        ("set-guest-password", Hook::AfterStart),
        ("describe-student", Hook::Assigned),
        ("per-class-sizing", Hook::Validate),
    ] {
        let host = PluginHost::new(PluginSettings::default(), facts.clone(), None).unwrap();
        let (wasm, manifest) = files::locate(&dist.join(name), None);
        let started = Instant::now();
        let plugin = files::load(&host, &wasm, &manifest).unwrap();
        let cold = started.elapsed();
        // set-guest-password without a student makes no guest call: the hook itself is timed.
        let mut input = input.clone();
        if hook == Hook::AfterStart {
            input.vm.student = None;
            input.student = None;
        }
        let mut times = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let started = Instant::now();
            invoke(&host, &plugin, hook, &input).unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        println!(
            "{name:<20} {:>9.0} ms   {:>10.3} ms   {:>6.3} ms",
            cold.as_secs_f64() * 1000.0,
            percentile(&times, 0.5).as_secs_f64() * 1000.0,
            percentile(&times, 0.99).as_secs_f64() * 1000.0,
        );
    }
}
