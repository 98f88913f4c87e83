//! The plugin host with real plugins: the examples and a hostile fixture, built from
//! `plugins/` by `plugins/build` (CI does; without them these tests skip with a notice).
//! `set-guest-password` runs its guest commands through `qm guest exec` on pve-sim.

#[path = "support/plugin_dist.rs"]
mod plugin_dist;
#[path = "support/sim.rs"]
mod sim;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use proxlab_agent::plugins::grants::Grant;
use proxlab_agent::plugins::guest_exec::NodeGuestExec;
use proxlab_agent::plugins::invoke::invoke;
use proxlab_agent::plugins::{
    Capability, ClassInfo, ExecResult, GuestExec, Hook, Manifest, NodeFacts, Plugin, PluginHost,
    PluginSettings, VmInfo, edits, files,
};
use proxlab_agent::plugins::{HookFacts, VmFacts};
use proxlab_agent::pve::config::PveConfig;
use proxlab_agent::pve::node::Node;
use proxlab_protocol::plugins::PluginClass;
use sim::sim_binary;

fn dist() -> Option<PathBuf> {
    plugin_dist::dist("hostile")
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
        vmid: u32,
        command: &str,
        args: &[String],
        _stdin: Option<&str>,
        _timeout: Duration,
    ) -> Result<ExecResult, String> {
        let line = std::iter::once(format!("{vmid} {command}"))
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        self.0.lock().unwrap().push(line);
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
    let input = hook_facts(class("Lab"), vm(None), config());
    let result = invoke(&host, &plugin, Hook::Configure, &input)
        .unwrap()
        .result;
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

#[test]
fn validate_findings_say_whether_the_step_would_fail() {
    let Some(dist) = dist() else { return };
    let host = host_with(PluginSettings::default(), None);
    let plugin = load(&host, &dist, "hostile");
    let validate = |name: &str| {
        let input = hook_facts(class(name), vm(None), config());
        invoke(&host, &plugin, Hook::Validate, &input).unwrap()
    };
    let invalid = validate("invalid");
    assert!(invalid.fails_the_step, "{}", invalid.result);
    let messages: Vec<&str> = invalid
        .result
        .as_array()
        .unwrap()
        .iter()
        .map(|finding| finding["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        [
            "the class has no course code",
            "no VLAN is left for this class"
        ]
    );
    let doubtful = validate("doubtful");
    assert!(!doubtful.fails_the_step, "{}", doubtful.result);
    assert!(!validate("fine").fails_the_step);
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
    settings.grants.insert(
        "set-guest-password".into(),
        grant(&["chpasswd", "passwd --expire *"]),
    );
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
    // Granted: it runs, in the hook's own VM, the commands granted, and nothing else.
    let mut settings = PluginSettings::default();
    settings
        .grants
        .insert("hostile".into(), grant(&["hostname"]));
    let host = host_with(settings, Some(recorder.clone()));
    let plugin = load(&host, &dist, "hostile");
    let err = host
        .name(&plugin, &class("exec"), &vm(None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("guest-exec answered 0"), "{err}");
    for (name, expected) in [
        (
            "exec-other",
            "reaches only the VM its hook runs for (VM 100), not VM 101",
        ),
        (
            "exec-shadow",
            "has not granted the guest command `cat /etc/shadow`",
        ),
    ] {
        let err = host
            .name(&plugin, &class(name), &vm(None))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{name}: {err}");
    }
    assert_eq!(*recorder.0.lock().unwrap(), ["100 hostname"]);
    // A component that imports guest-exec without asking for it does not load.
    let err = load_with(
        &host,
        &dist,
        "hostile",
        "id = \"hostile\"\nversion = \"1\"\napi = \"0.1.0\"\nhooks = [\"name\", \"configure\", \"validate\"]\n",
    )
    .unwrap_err();
    assert!(
        err.contains("does not request the guest-exec capability"),
        "{err}"
    );
}

/// A grant of guest-exec for these commands, pinned to no build.
fn grant(commands: &[&str]) -> Grant {
    Grant {
        capabilities: vec![Capability::GuestExec],
        guest_commands: commands.iter().map(|c| (*c).to_owned()).collect(),
        ..Grant::default()
    }
}

/// What `plugin run` is given, from the 0.1 contract's class and VM.
fn hook_facts(class: ClassInfo, vm: VmInfo, config: Vec<(String, String)>) -> HookFacts {
    HookFacts {
        class: PluginClass {
            id: class.id,
            name: class.name,
            slug: class.slug,
            ..PluginClass::default()
        },
        vm: VmFacts {
            vmid: vm.vmid,
            kind: vm.kind,
            index: vm.index,
            student: vm.student,
            name: vm.name,
            ..VmFacts::default()
        },
        config,
        ..HookFacts::default()
    }
}

#[test]
fn grants_follow_the_build_not_the_id() {
    let Some(dist) = dist() else { return };
    let recorder = Arc::new(Recorder(Default::default()));
    let sha256 = proxlab_agent::plugins::host::sha256_hex(
        &std::fs::read(dist.join("hostile/plugin.wasm")).unwrap(),
    );
    let host_granting = |grant: Grant| {
        let mut settings = PluginSettings::default();
        settings.grants.insert("hostile".into(), grant);
        host_with(settings, Some(recorder.clone()))
    };
    // The operator's own drop-in plugin: an unpinned grant covers it.
    let host = host_granting(grant(&["hostname"]));
    let local = load(&host, &dist, "hostile");
    let err = host.name(&local, &class("exec"), &vm(None)).unwrap_err();
    assert!(err.to_string().contains("answered 0"), "{err}");
    // The same id installed by the hub: not without a pin, and not with another build's.
    let mut from_hub = load(&host, &dist, "hostile");
    from_hub.from_hub = true;
    let err = host.name(&from_hub, &class("exec"), &vm(None)).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("pin sha256 = \"{sha256}\"")),
        "{err}"
    );
    let host = host_granting(Grant {
        sha256: Some("0".repeat(64)),
        ..grant(&["hostname"])
    });
    let mut from_hub = load(&host, &dist, "hostile");
    from_hub.from_hub = true;
    let err = host.name(&from_hub, &class("exec"), &vm(None)).unwrap_err();
    assert!(err.to_string().contains("pins the build 0000"), "{err}");
    // Pinned to this build: granted.
    let host = host_granting(Grant {
        sha256: Some(sha256),
        ..grant(&["hostname"])
    });
    let mut from_hub = load(&host, &dist, "hostile");
    from_hub.from_hub = true;
    let err = host.name(&from_hub, &class("exec"), &vm(None)).unwrap_err();
    assert!(err.to_string().contains("answered 0"), "{err}");
    assert_eq!(recorder.0.lock().unwrap().len(), 2);
}

#[test]
fn a_sleeping_plugin_is_stopped_at_its_deadline() {
    let Some(dist) = dist() else { return };
    let host = host_with(
        PluginSettings {
            deadline_ms: 300,
            ..PluginSettings::default()
        },
        None,
    );
    let plugin = load(&host, &dist, "hostile");
    let started = std::time::Instant::now();
    let err = host
        .name(&plugin, &class("sleep"), &vm(None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("within its deadline of 300 ms"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an hour's sleep ended at the deadline, not {:?} later",
        started.elapsed()
    );
    let fine = host.name(&plugin, &class("fine"), &vm(None)).unwrap();
    assert_eq!(fine.name, "fine-3");
}

/// A log writer that keeps what it is given.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn what_a_plugin_produces_is_bounded() {
    let Some(dist) = dist() else { return };
    let host = host_with(PluginSettings::default(), None);
    let plugin = load(&host, &dist, "hostile");
    // 100 MiB of log lines with forged ones inside: at most 64 KiB reach the log, escaped.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        host.name(&plugin, &class("flood"), &vm(None)).unwrap();
    });
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.len() < 100 * 1024, "{} bytes of log", log.len());
    assert!(log.contains("further messages of this call are dropped"));
    assert!(!log.lines().any(|line| line.starts_with("ERROR forged")));
    // An 8 MiB error arrives cut, and says so.
    let err = host
        .name(&plugin, &class("big-error"), &vm(None))
        .unwrap_err()
        .to_string();
    assert!(
        err.len() < 2048 && err.contains("cut at 1024 bytes"),
        "{} bytes",
        err.len()
    );
    // Too many edits, or a 20 MiB description: refused with the cap named.
    for (name, expected) in [
        (
            "many",
            "asked for 100000 edits; a call may ask for at most 64",
        ),
        ("huge", "longer than 8192 bytes"),
    ] {
        let input = hook_facts(class(name), vm(None), config());
        let err = invoke(&host, &plugin, Hook::Configure, &input)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(expected) && err.len() < 2048,
            "{name}: {err:.200}"
        );
    }
}

#[test]
fn a_plugin_whose_memory_starts_above_the_cap_is_refused_when_loaded() {
    let Some(dist) = dist() else { return };
    let (wasm, manifest) = files::locate(&dist.join("hostile"), None);
    let tight = host_with(
        PluginSettings {
            memory_mib: 1,
            ..PluginSettings::default()
        },
        None,
    );
    let refused = files::load(&tight, &wasm, &manifest)
        .unwrap_err()
        .to_string();
    assert!(
        refused.starts_with("plugin hostile: starts with ")
            && refused.contains("more than this node's limit of 1 MiB"),
        "{refused}"
    );
    // The default cap takes it.
    load(
        &host_with(PluginSettings::default(), None),
        &dist,
        "hostile",
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
        ("trap", "panicked: the plugin gave up (at "),
        ("exit", "exited with an error: no network configured"),
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
        let input = hook_facts(class(name), vm(None), config());
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
    assert!(
        err.contains(
            "the manifest says API 0.2.0 but the component exports proxlab:plugin/name@0.1.0"
        ),
        "{err}"
    );
    let err = load_with(
        &host,
        &dist,
        "name-by-student",
        "id = \"name-by-student\"\nversion = \"1\"\napi = \"9.0.0\"\nhooks = [\"name\"]\n",
    )
    .unwrap_err();
    assert!(err.contains("built for API 9.0.0"), "{err}");
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

/// A restarted agent loads its plugins compiled: the second host finds the first one's
/// compiled component on disk and the plugin works the same; a damaged file is compiled
/// again, and files of another engine are cleared away.
#[test]
fn compiled_plugins_outlive_the_host() {
    let Some(dist) = dist() else { return };
    let state = tempfile::tempdir().unwrap();
    let cache = state.path().join("plugin-cache");
    let cached_files = || -> Vec<PathBuf> {
        std::fs::read_dir(&cache)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect()
    };
    let fresh_host = || {
        host_with(PluginSettings::default(), None)
            .with_compile_cache(&cache)
            .unwrap()
    };
    let naming = |host: &PluginHost| {
        let plugin = load(host, &dist, "name-by-student");
        host.name(&plugin, &class("Networking 101"), &vm(Some("Alice.B")))
            .unwrap()
            .name
    };

    assert_eq!(naming(&fresh_host()), "networking-101-alice-b");
    let files = cached_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let compiled = std::fs::metadata(&files[0]).unwrap().modified().unwrap();

    assert_eq!(naming(&fresh_host()), "networking-101-alice-b");
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        compiled,
        "the second host loaded the file rather than compiling again"
    );

    std::fs::write(&files[0], b"not compiled code").unwrap();
    std::fs::write(cache.join("old-engine.cwasm"), b"another engine's").unwrap();
    assert_eq!(naming(&fresh_host()), "networking-101-alice-b");
    assert_eq!(cached_files(), files, "the other engine's file is gone");
    assert!(
        std::fs::metadata(&files[0]).unwrap().len() > 1000,
        "compiled again"
    );
}
