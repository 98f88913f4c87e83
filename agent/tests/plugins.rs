//! The plugin host with real plugins: the examples and a hostile fixture, built from
//! `plugins/` by `plugins/build` (CI does; without them these tests skip with a notice).
//! `set-guest-password` runs its guest commands through `qm guest exec` on pve-sim.

#[path = "support/sim.rs"]
mod sim;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use proxlab_agent::plugins::guest_exec::NodeGuestExec;
use proxlab_agent::plugins::invoke::{HookInput, invoke};
use proxlab_agent::plugins::{
    Capability, ClassInfo, ExecResult, GuestExec, Hook, Manifest, NodeFacts, Plugin, PluginHost,
    PluginSettings, VmInfo, edits, files,
};
use proxlab_agent::pve::config::PveConfig;
use proxlab_agent::pve::node::Node;
use sim::sim_binary;

fn dist() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist");
    if dir.join("hostile/plugin.wasm").exists() {
        Some(dir)
    } else {
        eprintln!(
            "NOTICE: the plugins are not built ({} is missing); run plugins/build. Skipping.",
            dir.display()
        );
        None
    }
}

fn facts() -> NodeFacts {
    NodeFacts {
        node: "pve1".into(),
        agent_version: "test".into(),
    }
}

fn host_with(settings: PluginSettings, guest: Option<Arc<dyn GuestExec>>) -> PluginHost {
    PluginHost::new(settings, facts(), guest).unwrap()
}

fn load(host: &PluginHost, dir: &Path, name: &str) -> Plugin {
    let (wasm, manifest) = files::locate(&dir.join(name), None);
    files::load(host, &wasm, &manifest).unwrap()
}

fn load_with(host: &PluginHost, dir: &Path, name: &str, manifest: &str) -> Result<Plugin, String> {
    let wasm = std::fs::read(dir.join(name).join("plugin.wasm")).unwrap();
    let manifest = Manifest::parse(manifest)?;
    host.load(manifest, &wasm).map_err(|err| err.to_string())
}

fn class(name: &str) -> ClassInfo {
    ClassInfo {
        id: 42,
        name: name.into(),
        slug: name.to_lowercase().replace(' ', "-"),
    }
}

fn vm(student: Option<&str>) -> VmInfo {
    VmInfo {
        vmid: 100,
        kind: "student".into(),
        index: 3,
        student: student.map(str::to_owned),
        name: "lab-s03".into(),
    }
}

fn config() -> Vec<(String, String)> {
    vec![
        ("cores".into(), "2".into()),
        (
            "net0".into(),
            "virtio=BC:24:11:00:00:01,bridge=vmbr0".into(),
        ),
        (
            "net1".into(),
            "e1000=BC:24:11:00:00:02,bridge=vmbr1,tag=7".into(),
        ),
    ]
}

/// Records guest commands instead of running them (for the capability checks only).
struct Recorder(std::sync::Mutex<Vec<String>>);

impl GuestExec for Recorder {
    fn exec(
        &self,
        _vmid: u32,
        command: &str,
        _args: &[String],
        _stdin: Option<&str>,
        _timeout: Duration,
    ) -> Result<ExecResult, String> {
        self.0.lock().unwrap().push(command.to_owned());
        Ok(ExecResult {
            exit_code: 0,
            stdout: String::new(),
            stderr: String::new(),
        })
    }
}

#[test]
fn name_by_student_names_vms_after_class_and_student() {
    let Some(dist) = dist() else { return };
    let host = host_with(PluginSettings::default(), None);
    let plugin = load(&host, &dist, "name-by-student");
    let naming = host
        .name(&plugin, &class("Networking 101"), &vm(Some("Alice.B")))
        .unwrap();
    assert_eq!(naming.name, "networking-101-alice-b");
    assert_eq!(naming.hostname, "networking-101-alice-b");
    let unassigned = host
        .name(&plugin, &class("Networking 101"), &vm(None))
        .unwrap();
    assert_eq!(unassigned.name, "networking-101-seat03");
}

#[test]
fn vlan_per_class_tags_every_nic_and_keeps_macs() {
    let Some(dist) = dist() else { return };
    let host = host_with(PluginSettings::default(), None);
    let plugin = load(&host, &dist, "vlan-per-class");
    let input = HookInput {
        class: class("Lab"),
        vm: vm(None),
        config: config(),
    };
    let result = invoke(&host, &plugin, Hook::Configure, &input).unwrap();
    let entries: Vec<(String, String)> = serde_json::from_value(result["config"].clone()).unwrap();
    let get = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("net0"), "virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=142");
    assert_eq!(get("net1"), "e1000=BC:24:11:00:00:02,bridge=vmbr1,tag=142");
    assert_eq!(get("tags"), "vlan-142");
}

/// A pve-sim node with a running VM 100 whose guest agent answers.
struct SimNode {
    dir: tempfile::TempDir,
}

impl SimNode {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sim = sim_binary();
        let root = dir.path().join("pve");
        let status = Command::new(&sim)
            .args(["init", "--root"])
            .arg(&root)
            .args(["--nodes", "pve1", "--template", "tpl:64M"])
            .output()
            .unwrap();
        assert!(status.status.success(), "{status:?}");
        let node = Self { dir };
        node.run("qm", &["clone", "9000", "100", "--name", "lab-s03"]);
        node.run("qm", &["set", "100", "--agent", "1"]);
        node.run("pve-sim", &["script", "100", "--guest-agent", "on"]);
        node.run("qm", &["start", "100"]);
        node
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("pve")
    }

    fn run(&self, tool: &str, args: &[&str]) -> String {
        let mut command = if tool == "pve-sim" {
            Command::new(sim_binary())
        } else {
            Command::new(self.root().join("bin").join(tool))
        };
        let output = command
            .args(args)
            .env("PVE_SIM_ROOT", self.root())
            .env("PVE_SIM_NODE", "pve1")
            .output()
            .unwrap();
        assert!(output.status.success(), "{tool} {args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        let _ = Command::new(self.root().join("bin/qm"))
            .args(["stop", "100"])
            .env("PVE_SIM_ROOT", self.root())
            .env("PVE_SIM_NODE", "pve1")
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_guest_password_runs_its_commands_through_the_guest_agent() {
    let Some(dist) = dist() else { return };
    let sim = SimNode::start();
    let node = Arc::new(Node::new(PveConfig::for_sim(&sim.root(), "pve1")));
    let guest: Arc<dyn GuestExec> =
        Arc::new(NodeGuestExec::new(node, tokio::runtime::Handle::current()));
    let mut settings = PluginSettings::default();
    settings
        .grants
        .insert("set-guest-password".into(), vec![Capability::GuestExec]);
    tokio::task::spawn_blocking(move || {
        let host = host_with(settings, Some(guest));
        let plugin = load(&host, &dist, "set-guest-password");
        host.after_start(&plugin, &class("Lab"), &vm(Some("alice")))
            .unwrap();
    })
    .await
    .unwrap();
    let script: serde_json::Value =
        serde_json::from_str(&sim.run("pve-sim", &["script", "100"])).unwrap();
    assert_eq!(
        script["exec_log"],
        serde_json::json!([["chpasswd"], ["passwd", "--expire", "student"]])
    );
    assert_eq!(
        script["exec_input"],
        serde_json::json!(["student:alice-42\n", ""])
    );
}

#[test]
fn guest_exec_needs_the_manifest_and_the_operator() {
    let Some(dist) = dist() else { return };
    let recorder = Arc::new(Recorder(Default::default()));
    // Asked for in the manifest but not granted: the step fails and nothing runs.
    let host = host_with(PluginSettings::default(), Some(recorder.clone()));
    let plugin = load(&host, &dist, "hostile");
    let err = host
        .name(&plugin, &class("exec"), &vm(None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not granted"), "{err}");
    assert!(recorder.0.lock().unwrap().is_empty());
    // Granted: it runs.
    let mut settings = PluginSettings::default();
    settings
        .grants
        .insert("hostile".into(), vec![Capability::GuestExec]);
    let host = host_with(settings, Some(recorder.clone()));
    let plugin = load(&host, &dist, "hostile");
    let err = host
        .name(&plugin, &class("exec"), &vm(None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("guest-exec answered 0"), "{err}");
    assert_eq!(*recorder.0.lock().unwrap(), ["hostname"]);
    // A component that imports guest-exec without asking for it does not load.
    let err = load_with(
        &host,
        &dist,
        "hostile",
        "id = \"hostile\"\nversion = \"1\"\napi = \"0.1.0\"\nhooks = [\"name\", \"configure\"]\n",
    )
    .unwrap_err();
    assert!(
        err.contains("does not request the guest-exec capability"),
        "{err}"
    );
}

#[test]
fn runaway_plugins_are_stopped_and_the_host_carries_on() {
    let Some(dist) = dist() else { return };
    let settings = PluginSettings {
        fuel: 50_000_000,
        deadline_ms: 2_000,
        memory_mib: 32,
        ..PluginSettings::default()
    };
    let host = host_with(settings.clone(), None);
    let plugin = load(&host, &dist, "hostile");
    for (name, expected) in [
        ("spin", "used up its fuel"),
        ("hog", "ran out of memory (limit 32 MiB)"),
        ("trap", "crashed"),
    ] {
        let err = host
            .name(&plugin, &class(name), &vm(None))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("plugin hostile: "), "{err}");
        assert!(err.contains(expected), "{name}: {err}");
        // The same plugin, and the host, still serve a good call.
        let fine = host.name(&plugin, &class("fine"), &vm(None)).unwrap();
        assert_eq!(fine.name, "fine-3");
    }
    // Unlimited fuel: the deadline stops it.
    let host = host_with(
        PluginSettings {
            fuel: 0,
            deadline_ms: 200,
            ..settings
        },
        None,
    );
    let plugin = load(&host, &dist, "hostile");
    let started = std::time::Instant::now();
    let err = host
        .name(&plugin, &class("spin"), &vm(None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("within its deadline of 200 ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn forbidden_edits_fail_the_step() {
    let Some(dist) = dist() else { return };
    let host = host_with(PluginSettings::default(), None);
    let plugin = load(&host, &dist, "hostile");
    for (name, key) in [("disk", "scsi0"), ("lock", "lock"), ("args", "args")] {
        let input = HookInput {
            class: class(name),
            vm: vm(None),
            config: config(),
        };
        let err = invoke(&host, &plugin, Hook::Configure, &input)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("may not change '{key}'")), "{err}");
    }
    let asked = host
        .configure(&plugin, &class("fine"), &vm(None), &config())
        .unwrap();
    assert_eq!(
        asked,
        [edits::Edit::Set("description".into(), "configured".into())]
    );
}

#[test]
fn manifests_must_match_the_component() {
    let Some(dist) = dist() else { return };
    let host = host_with(PluginSettings::default(), None);
    for (manifest, expected) in [
        (
            // Claims a hook the component does not export.
            "id = \"name-by-student\"\nversion = \"1\"\napi = \"0.1.0\"\nhooks = [\"name\", \"validate\"]\n",
            "does not export proxlab:plugin/validate@0.1.0",
        ),
        (
            // Hides a hook it exports.
            "id = \"name-by-student\"\nversion = \"1\"\napi = \"0.1.0\"\nhooks = [\"configure\"]\n",
            "exports hook name but the manifest does not list it",
        ),
    ] {
        let err = load_with(&host, &dist, "name-by-student", manifest).unwrap_err();
        assert!(err.contains(expected), "{err}");
    }
    let err = load_with(
        &host,
        &dist,
        "name-by-student",
        "id = \"name-by-student\"\nversion = \"1\"\napi = \"0.2.0\"\nhooks = [\"name\"]\n",
    )
    .unwrap_err();
    assert!(err.contains("built for API 0.2.0"), "{err}");
    let manifest =
        Manifest::parse("id = \"garbage\"\nversion = \"1\"\napi = \"0.1.0\"\nhooks = [\"name\"]\n")
            .unwrap();
    let err = host
        .load(manifest, b"\0asm\x01\0\0\0 not really")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a valid component"), "{err}");
}

#[test]
fn the_drop_in_directory_loads_what_it_can() {
    let Some(dist) = dist() else { return };
    let dir = tempfile::tempdir().unwrap();
    for name in ["name-by-student", "vlan-per-class"] {
        let target = dir.path().join(name);
        std::fs::create_dir(&target).unwrap();
        for file in ["plugin.toml", "plugin.wasm"] {
            std::fs::copy(dist.join(name).join(file), target.join(file)).unwrap();
        }
    }
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("plugin.toml"), "id = \"broken\"\n").unwrap();
    let host = host_with(PluginSettings::default(), None);
    let (plugins, errors) = files::load_dir(&host, dir.path());
    let ids: Vec<&str> = plugins.iter().map(|p| p.manifest.id.as_str()).collect();
    assert_eq!(ids, ["name-by-student", "vlan-per-class"]);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].to_string().contains("missing field"),
        "{}",
        errors[0]
    );
}
