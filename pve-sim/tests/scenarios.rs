//! Scenarios driven only through the simulator's command line, as the agent drives it.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;

use common::{Cluster, backing_chain, qemu_io};

#[test]
fn create_start_status_shutdown_destroy() {
    let cluster = Cluster::new("pve1", &[]);
    let out = cluster
        .qm(
            "pve1",
            &[
                "create",
                "100",
                "--name",
                "web",
                "--memory",
                "1024",
                "--scsi0",
                "local:1,format=qcow2",
                "--net0",
                "virtio,bridge=vmbr0",
            ],
        )
        .ok();
    assert_eq!(
        out,
        "scsi0: successfully created disk 'local:100/vm-100-disk-0.qcow2,size=1G'\n"
    );
    let config = cluster.config("pve1", 100);
    assert!(config.contains("boot: order=scsi0;net0\n"), "{config}");
    assert!(config.contains("net0: virtio=BC:24:11:"), "{config}");
    assert!(config.contains("smbios1: uuid="), "{config}");
    assert!(config.contains("meta: creation-qemu="), "{config}");
    let disk = cluster.path("pve1", "local:100/vm-100-disk-0.qcow2");
    assert_eq!(backing_chain(&disk)[0]["virtual-size"], 1 << 30);

    assert_eq!(
        cluster.qm("pve1", &["status", "100"]).ok(),
        "status: stopped\n"
    );
    cluster.qm("pve1", &["start", "100"]).ok();
    assert_eq!(
        cluster.qm("pve1", &["status", "100"]).ok(),
        "status: running\n"
    );
    let pid: u32 = std::fs::read_to_string(cluster.root().join("var/run/qemu-server/100.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "a real process runs the VM"
    );
    let list = cluster.qm("pve1", &["list"]).ok();
    assert_eq!(
        list,
        format!(
            "      VMID NAME                 STATUS     MEM(MB)    BOOTDISK(GB) PID       \n       100 web                  running    1024               1.00 {pid:<10}\n"
        )
    );
    cluster
        .qm("pve1", &["start", "100"])
        .fails_with("VM 100 already running");
    cluster
        .qm("pve1", &["destroy", "100"])
        .fails_with("VM 100 is running - destroy failed");
    cluster.qm("pve1", &["shutdown", "100"]).ok();
    assert_eq!(
        cluster.qm("pve1", &["status", "100"]).ok(),
        "status: stopped\n"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || cluster
                .qm("pve1", &["status", "100"])
                .ok()
                .contains("stopped")
    );
    assert_eq!(
        cluster.qm("pve1", &["destroy", "100", "--purge", "1"]).ok(),
        "purging VM 100 from related configurations..\n"
    );
    assert!(!disk.exists(), "the disk is gone");
    cluster
        .qm("pve1", &["status", "100"])
        .fails_with("Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist");
    let vmlist = std::fs::read_to_string(cluster.root().join("etc/pve/.vmlist")).unwrap();
    assert!(!vmlist.contains("\"100\""), "{vmlist}");
}

#[test]
fn ten_parallel_linked_clones_chain_to_the_base() {
    let cluster = Cluster::new("pve1", &["debian:1G"]);
    std::thread::scope(|scope| {
        for i in 0..10u32 {
            let cluster = &cluster;
            scope.spawn(move || {
                let vmid = (200 + i).to_string();
                let out = cluster
                    .qm(
                        "pve1",
                        &["clone", "9000", &vmid, "--name", &format!("lab-{i}")],
                    )
                    .ok();
                assert!(
                    out.contains(
                        "create linked clone of drive scsi0 (local:9000/base-9000-disk-0.qcow2)"
                    ),
                    "{out}"
                );
            });
        }
    });
    let base = cluster.disk("pve1", "9000/base-9000-disk-0.qcow2");
    let mut macs = HashSet::new();
    let mut uuids = HashSet::new();
    for i in 0..10u32 {
        let vmid = 200 + i;
        let config = cluster.config("pve1", vmid);
        let volid = format!("local:9000/base-9000-disk-0.qcow2/{vmid}/vm-{vmid}-disk-0.qcow2");
        assert!(
            config.contains(&format!("scsi0: {volid},iothread=1,size=1G\n")),
            "{config}"
        );
        assert!(!config.contains("template"), "{config}");
        let chain = backing_chain(&cluster.path("pve1", &volid));
        assert_eq!(chain.len(), 2);
        assert_eq!(
            chain[0]["backing-filename"],
            "../9000/base-9000-disk-0.qcow2"
        );
        assert_eq!(
            std::fs::canonicalize(chain[1]["filename"].as_str().unwrap()).unwrap(),
            std::fs::canonicalize(&base).unwrap()
        );
        let field = |key: &str| {
            config
                .lines()
                .find(|l| l.starts_with(key))
                .unwrap()
                .to_owned()
        };
        assert!(macs.insert(field("net0:")), "duplicate MAC");
        assert!(uuids.insert(field("smbios1:")), "duplicate SMBIOS uuid");
    }
    // The base is read-only and cannot go while clones use it.
    cluster.qm("pve1", &["destroy", "9000"]).fails_with(
        "base volume 'local:9000/base-9000-disk-0.qcow2' is still in use by linked cloned",
    );
    cluster
        .qm("pve1", &["start", "9000"])
        .fails_with("you can't start a vm if it's a template");
}

#[test]
fn snapshot_write_rollback_restores_config_and_disk() {
    let cluster = Cluster::new("pve1", &[]);
    cluster
        .qm(
            "pve1",
            &[
                "create",
                "300",
                "--scsi0",
                "local:0.0625,format=qcow2",
                "--cores",
                "1",
            ],
        )
        .ok();
    let disk = cluster.path("pve1", "local:300/vm-300-disk-0.qcow2");
    assert_eq!(qemu_io(&disk, "write -P 0xaa 0 64k").code, 0);
    let out = cluster
        .tool("pve1", "qm")
        .args(["snapshot", "300", "before", "--description", "clean state"])
        .env("PVE_SIM_FAKE_TIME", "1736939109")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = cluster.config("pve1", 300);
    assert!(config.contains("parent: before\n"), "{config}");
    assert!(config.contains("\n[before]\n#clean state\n"), "{config}");
    assert!(config.contains("snaptime: 1736939109\n"), "{config}");

    cluster.qm("pve1", &["set", "300", "--cores", "4"]).ok();
    assert_eq!(qemu_io(&disk, "write -P 0xbb 0 64k").code, 0);
    assert_eq!(
        cluster.qm("pve1", &["listsnapshot", "300"]).ok(),
        "`-> before                      2025-01-15 11:05:09     clean state\n `-> current                                            You are here!\n"
    );
    cluster.qm("pve1", &["rollback", "300", "before"]).ok();
    assert!(cluster.config("pve1", 300).contains("cores: 1\n"));
    let check = qemu_io(&disk, "read -P 0xaa 0 64k");
    assert!(
        !check.stdout.contains("Pattern verification failed"),
        "{}",
        check.stdout
    );
    assert_eq!(check.code, 0);

    cluster
        .qm("pve1", &["rollback", "300", "nope"])
        .fails_with("snapshot 'nope' does not exist");
    cluster
        .qm("pve1", &["snapshot", "300", "before"])
        .fails_with("snapshot name 'before' already used");
    cluster
        .qm("pve1", &["snapshot", "300", "current"])
        .fails_with("unable to use snapshot name 'current' (reserved name)");
    cluster.qm("pve1", &["delsnapshot", "300", "before"]).ok();
    let config = cluster.config("pve1", 300);
    assert!(
        !config.contains("[before]") && !config.contains("parent:"),
        "{config}"
    );
}

#[test]
fn raw_disks_cannot_be_snapshotted() {
    let cluster = Cluster::new("pve1", &[]);
    cluster
        .qm("pve1", &["create", "301", "--scsi0", "local:0.0625"])
        .ok();
    cluster
        .qm("pve1", &["snapshot", "301", "s1"])
        .fails_with("snapshot feature is not available");
}

#[test]
fn locks_and_vmids() {
    let cluster = Cluster::new("pve1,pve2", &["tmpl:64M"]);
    // A VMID is unique cluster-wide.
    cluster.qm("pve2", &["create", "400"]).ok();
    cluster
        .qm("pve1", &["create", "400"])
        .fails_with("unable to create VM 400 - VM 400 already exists on node 'pve2'");
    cluster
        .qm("pve1", &["clone", "9000", "400"])
        .fails_with("unable to create VM 400: config file already exists");
    // A `lock:` in the config blocks most commands until `qm unlock`.
    cluster.qm("pve2", &["set", "400", "--lock", "backup"]).ok();
    cluster
        .qm("pve2", &["start", "400"])
        .fails_with("VM is locked (backup)");
    cluster
        .qm("pve2", &["set", "400", "--memory", "256"])
        .fails_with("VM is locked (backup)");
    cluster.qm("pve2", &["unlock", "400"]).ok();
    cluster.qm("pve2", &["set", "400", "--memory", "256"]).ok();
    // A held flock times out with Proxmox's message.
    let mut holder = std::process::Command::new(env!("CARGO_BIN_EXE_pve-sim"))
        .args(["hold-lock", "400"])
        .env("PVE_SIM_ROOT", cluster.root())
        .env("PVE_SIM_NODE", "pve2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "locked\n");
    let run = cluster
        .tool("pve2", "qm")
        .args(["set", "400", "--cores", "2"])
        .env("PVE_SIM_LOCK_TIMEOUT", "0.3")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("trying to acquire lock..."), "{stderr}");
    assert!(stderr.contains("lock-400.conf' - got timeout"), "{stderr}");
    drop(holder.stdin.take());
    holder.wait().unwrap();
    cluster.qm("pve2", &["set", "400", "--cores", "2"]).ok();
    // Digest checks catch concurrent edits.
    cluster
        .qm("pve2", &["set", "400", "--cores", "3", "--digest", "0000"])
        .fails_with("file changed by other user");
}

#[test]
fn error_paths_speak_proxmox() {
    let cluster = Cluster::new("pve1", &["tmpl:64M"]);
    cluster.qm("pve1", &["create", "500", "--agent", "1"]).ok();
    cluster
        .qm("pve1", &["status", "999"])
        .fails_with("Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist");
    cluster
        .qm("pve1", &["reboot", "500"])
        .fails_with("VM 500 not running");
    cluster
        .qm("pve1", &["reset", "500"])
        .fails_with("VM 500 not running");
    cluster
        .qm("pve1", &["template", "9000"])
        .fails_with("you can't convert a template to a template");
    cluster
        .qm("pve1", &["snapshot", "9000", "snap"])
        .fails_with("you can't take a snapshot if it's a template");
    cluster
        .qm(
            "pve1",
            &["clone", "9000", "501", "--full", "0", "--storage", "shared"],
        )
        .fails_with("parameter 'storage' not allowed for linked clones");
    cluster
        .qm("pve1", &["create", "502", "--bogus", "1"])
        .fails_with("400 Parameter verification failed.\nbogus:");
    cluster
        .qm("pve1", &["create", "99"])
        .fails_with("400 Parameter verification failed.");
    let unknown = cluster.qm("pve1", &["frobnicate"]);
    assert_eq!(unknown.code, 255);
    cluster
        .qm("pve1", &["guest", "cmd", "500", "network-get-interfaces"])
        .fails_with("VM 500 is not running");
    cluster
        .qm("pve1", &["guest", "cmd", "9000", "network-get-interfaces"])
        .fails_with("No QEMU guest agent configured");
    cluster.qm("pve1", &["start", "500"]).ok();
    cluster
        .qm("pve1", &["guest", "cmd", "500", "network-get-interfaces"])
        .fails_with("QEMU guest agent is not running");
    cluster
        .qm("pve1", &["vncproxy", "500"])
        .fails_with("LC_PVE_TICKET not set, VNC proxy without password is forbidden");
    cluster.qm("pve1", &["stop", "500"]).ok();
    cluster
        .run("pve1", "pvesh", &["get", "/nodes/pve1/bogus"])
        .fails_with("no 'get' handler for '/nodes/pve1/bogus'");
    cluster
        .run("pve1", "pvesm", &["path", "nosuch:100/vm-100-disk-0.raw"])
        .fails_with("storage 'nosuch' does not exist");
    cluster
        .run("pve1", "pvesm", &["path", "bad volid"])
        .fails_with("unable to parse volume ID 'bad volid'");
}

#[test]
fn injected_faults() {
    let cluster = Cluster::new("pve1", &["tmpl:64M"]);
    // qemu-img failing for one clone leaves nothing of it behind.
    cluster
        .sim("pve1", &["fault", "--qemu-img-fail", "images/601/"])
        .ok();
    cluster
        .qm("pve1", &["clone", "9000", "601"])
        .fails_with("clone failed:");
    assert!(
        !cluster
            .root()
            .join("etc/pve/nodes/pve1/qemu-server/601.conf")
            .exists()
    );
    assert!(!cluster.disk("pve1", "601/vm-601-disk-0.qcow2").exists());
    cluster.qm("pve1", &["clone", "9000", "602"]).ok();
    cluster
        .sim(
            "pve1",
            &["fault", "--qemu-img-fail", "off", "--storage-full", "local"],
        )
        .ok();
    cluster
        .qm("pve1", &["create", "603", "--scsi0", "local:1"])
        .fails_with("No space left on device");
    let status = cluster.run("pve1", "pvesm", &["status"]).ok();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("local ") && l.contains(" 0  100.00%")),
        "{status}"
    );
    cluster
        .sim("pve1", &["fault", "--storage-full", "off"])
        .ok();
    // A guest that ignores shutdown: a timeout, or a forced stop.
    cluster
        .sim("pve1", &["script", "602", "--hung-shutdown", "on"])
        .ok();
    cluster.qm("pve1", &["start", "602"]).ok();
    cluster
        .qm("pve1", &["shutdown", "602", "--timeout", "1"])
        .fails_with("VM quit/powerdown failed - got timeout");
    assert_eq!(
        cluster.qm("pve1", &["status", "602"]).ok(),
        "status: running\n"
    );
    let forced = cluster.qm(
        "pve1",
        &["shutdown", "602", "--timeout", "1", "--forceStop", "1"],
    );
    assert_eq!(forced.code, 0);
    assert!(
        forced
            .stderr
            .contains("VM still running - terminating now with SIGTERM")
    );
    assert_eq!(
        cluster.qm("pve1", &["status", "602"]).ok(),
        "status: stopped\n"
    );
}

#[test]
fn guest_agent_answers_as_scripted() {
    let cluster = Cluster::new("pve1", &[]);
    cluster
        .qm(
            "pve1",
            &[
                "create",
                "700",
                "--agent",
                "1",
                "--net0",
                "virtio=BC:24:11:2C:69:EC,bridge=vmbr0",
            ],
        )
        .ok();
    cluster
        .sim(
            "pve1",
            &[
                "script",
                "700",
                "--guest-agent",
                "on",
                "--exec",
                "hostnamectl=0:done",
            ],
        )
        .ok();
    cluster.qm("pve1", &["start", "700"]).ok();
    let out = cluster
        .qm("pve1", &["guest", "cmd", "700", "network-get-interfaces"])
        .ok();
    let interfaces: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(interfaces[1]["hardware-address"], "bc:24:11:2c:69:ec");
    assert_eq!(
        interfaces[1]["ip-addresses"][0]["ip-address"],
        "10.2.188.10"
    );
    assert!(
        out.starts_with("[\n   {\n      \"hardware-address\" : "),
        "Perl's pretty layout: {out}"
    );
    let exec = cluster
        .qm(
            "pve1",
            &[
                "guest",
                "exec",
                "700",
                "--",
                "hostnamectl",
                "set-hostname",
                "lab",
            ],
        )
        .ok();
    assert_eq!(
        exec,
        "{\n   \"exitcode\" : 0,\n   \"exited\" : 1,\n   \"out-data\" : \"done\"\n}\n"
    );
    let script = std::fs::read_to_string(cluster.root().join("sim/vms/700.json")).unwrap();
    assert!(
        script.contains("set-hostname"),
        "the command is logged: {script}"
    );
}

#[test]
fn pvesh_and_pvesm_report_the_cluster() {
    let cluster = Cluster::new("pve1,pve2", &["tmpl:64M"]);
    cluster.qm("pve1", &["clone", "9000", "100"]).ok();
    cluster
        .qm("pve2", &["create", "101", "--memory", "512"])
        .ok();
    assert_eq!(
        cluster
            .run("pve1", "pvesh", &["get", "/cluster/nextid"])
            .ok(),
        "102\n"
    );
    let json = cluster
        .run(
            "pve1",
            "pvesh",
            &[
                "get",
                "/cluster/resources",
                "--type",
                "vm",
                "--output-format",
                "json",
            ],
        )
        .ok();
    let resources: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let nodes: Vec<(u64, &str)> = resources
        .iter()
        .map(|r| (r["vmid"].as_u64().unwrap(), r["node"].as_str().unwrap()))
        .collect();
    assert_eq!(nodes, [(100, "pve1"), (101, "pve2"), (9000, "pve1")]);
    assert_eq!(resources[2]["template"], 1);
    assert!(json.starts_with("[{\"cpu\":"), "keys sorted: {json}");
    let config: serde_json::Value = serde_json::from_str(
        &cluster
            .run(
                "pve1",
                "pvesh",
                &[
                    "get",
                    "/nodes/pve2/qemu/101/config",
                    "--output-format",
                    "json",
                ],
            )
            .ok(),
    )
    .unwrap();
    assert_eq!(config["memory"], "512");
    assert_eq!(config["digest"].as_str().unwrap().len(), 40);
    let content: Vec<serde_json::Value> = serde_json::from_str(
        &cluster
            .run(
                "pve1",
                "pvesh",
                &[
                    "get",
                    "/nodes/pve1/storage/local/content",
                    "--output-format",
                    "json",
                ],
            )
            .ok(),
    )
    .unwrap();
    let linked = content.iter().find(|v| v["vmid"] == 100).unwrap();
    assert_eq!(
        linked["volid"],
        "local:9000/base-9000-disk-0.qcow2/100/vm-100-disk-0.qcow2"
    );
    assert_eq!(linked["parent"], "../9000/base-9000-disk-0.qcow2");
    // Node-local storage: pve2 does not see pve1's disks.
    let on_pve2 = cluster.run("pve2", "pvesm", &["list", "local"]).ok();
    assert!(!on_pve2.contains("9000"), "{on_pve2}");
    let storages: Vec<serde_json::Value> = serde_json::from_str(
        &cluster
            .run(
                "pve1",
                "pvesh",
                &["get", "/nodes/pve1/storage", "--output-format", "json"],
            )
            .ok(),
    )
    .unwrap();
    assert_eq!(
        storages
            .iter()
            .map(|s| s["shared"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [0, 1]
    );
}

#[test]
fn set_on_a_running_vm_leaves_pending_changes_for_the_next_start() {
    let cluster = Cluster::new("pve1", &[]);
    cluster
        .qm("pve1", &["create", "800", "--memory", "512"])
        .ok();
    cluster.qm("pve1", &["start", "800"]).ok();
    assert_eq!(
        cluster
            .qm(
                "pve1",
                &["set", "800", "--memory", "1024", "--name", "renamed"]
            )
            .ok(),
        "update VM 800: -memory 1024 -name renamed\n"
    );
    let config = cluster.config("pve1", 800);
    assert!(
        config.contains("name: renamed\n") && config.contains("[PENDING]\nmemory: 1024\n"),
        "{config}"
    );
    assert!(
        cluster
            .qm("pve1", &["config", "800", "--current", "1"])
            .ok()
            .contains("memory: 512")
    );
    assert!(
        cluster
            .qm("pve1", &["config", "800"])
            .ok()
            .contains("memory: 1024")
    );
    cluster.qm("pve1", &["stop", "800"]).ok();
    cluster.qm("pve1", &["start", "800"]).ok();
    let config = cluster.config("pve1", 800);
    assert!(
        config.contains("memory: 1024\n") && !config.contains("[PENDING]"),
        "{config}"
    );
}

#[test]
fn canon_prints_the_canonical_form_and_strict_errors() {
    let cluster = Cluster::new("pve1", &[]);
    let file = cluster.dir.path().join("8006.conf");
    std::fs::write(&file, "numa: maybe\ncores: 02\n").unwrap();
    let file = file.to_str().unwrap();
    let canon = cluster.sim("pve1", &["canon", file]);
    assert_eq!(canon.stdout, "cores: 2\n");
    assert!(
        canon
            .stderr
            .contains("vm 8006 - unable to parse value of 'numa'")
    );
    let strict = cluster.sim("pve1", &["canon", "--strict", file]);
    assert_eq!(strict.code, 2);
    assert_eq!(
        strict.stderr,
        "vm 8006 - unable to parse value of 'numa' - type check ('boolean') failed - got 'maybe'\n"
    );
}

/// A minimal RFB client: handshake and VNC authentication over `qm vncproxy`'s stdio.
fn vnc_login(cluster: &Cluster, vmid: &str, ticket: &str, password: &str) -> (u32, Option<String>) {
    let mut child = cluster
        .tool("pve1", "qm")
        .args(["vncproxy", vmid])
        .env("LC_PVE_TICKET", ticket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to = child.stdin.take().unwrap();
    let mut from = child.stdout.take().unwrap();
    let mut version = [0u8; 12];
    from.read_exact(&mut version).unwrap();
    assert_eq!(&version, b"RFB 003.008\n");
    to.write_all(b"RFB 003.008\n").unwrap();
    let mut types = [0u8; 2];
    from.read_exact(&mut types).unwrap();
    assert_eq!(types, [1, 2], "one security type: VNC authentication");
    to.write_all(&[2]).unwrap();
    let mut challenge = [0u8; 16];
    from.read_exact(&mut challenge).unwrap();
    to.write_all(&pve_sim::rfb::vnc_auth_response(password, &challenge))
        .unwrap();
    let mut result = [0u8; 4];
    from.read_exact(&mut result).unwrap();
    let result = u32::from_be_bytes(result);
    let name = if result == 0 {
        to.write_all(&[1]).unwrap();
        let mut init = [0u8; 24];
        from.read_exact(&mut init).unwrap();
        assert_eq!(u16::from_be_bytes([init[0], init[1]]), pve_sim::rfb::WIDTH);
        let len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
        let mut name = vec![0u8; len];
        from.read_exact(&mut name).unwrap();
        // A full update request gets the whole screen.
        to.write_all(&[3, 0, 0, 0, 0, 0, 0x02, 0x80, 0x01, 0x68])
            .unwrap();
        let mut header = [0u8; 16];
        from.read_exact(&mut header).unwrap();
        assert_eq!(&header[..4], &[0, 0, 0, 1]);
        let mut pixels = vec![0u8; 640 * 360 * 4];
        from.read_exact(&mut pixels).unwrap();
        assert!(pixels.chunks(4).any(|p| p[0] == 240), "the VMID is drawn");
        Some(String::from_utf8(name).unwrap())
    } else {
        None
    };
    drop(to);
    let _ = child.kill();
    let _ = child.wait();
    (result, name)
}

#[test]
fn vnc_through_vncproxy_needs_the_ticket_as_password() {
    let cluster = Cluster::new("pve1", &[]);
    cluster
        .qm("pve1", &["create", "900", "--name", "console-vm"])
        .ok();
    cluster.qm("pve1", &["start", "900"]).ok();
    let (ok, name) = vnc_login(&cluster, "900", "Abc12345", "Abc12345");
    assert_eq!(ok, 0);
    assert_eq!(name.as_deref(), Some("VM 900 (console-vm)"));
    let (refused, _) = vnc_login(&cluster, "900", "Abc12345", "wrong!!!");
    assert_eq!(refused, 1);
}

#[test]
fn full_clone_copies_the_disk_to_another_storage() {
    let cluster = Cluster::new("pve1", &["tmpl:64M"]);
    let out = cluster
        .qm(
            "pve1",
            &[
                "clone",
                "9000",
                "120",
                "--full",
                "1",
                "--storage",
                "shared",
                "--format",
                "raw",
            ],
        )
        .ok();
    assert!(
        out.contains("create full clone of drive scsi0 (local:9000/base-9000-disk-0.qcow2)"),
        "{out}"
    );
    let config = cluster.config("pve1", 120);
    assert!(
        config.contains("scsi0: shared:120/vm-120-disk-0.raw,iothread=1,size=64M\n"),
        "{config}"
    );
    assert!(config.contains("name: Copy-of-VM-tmpl\n"), "{config}");
    let chain = backing_chain(&cluster.path("pve1", "shared:120/vm-120-disk-0.raw"));
    assert_eq!(chain.len(), 1, "a full clone has no backing file");
    assert_eq!(chain[0]["format"], "raw");
    // A full clone can be destroyed while the template stays.
    cluster.qm("pve1", &["destroy", "120"]).ok();
    assert!(!cluster.root().join("mnt/pve/shared/images/120").exists());
}

#[test]
fn import_and_rescan() {
    let cluster = Cluster::new("pve1", &[]);
    cluster
        .qm(
            "pve1",
            &["create", "130", "--scsi0", "local:0.0625,format=qcow2"],
        )
        .ok();
    let source = cluster.dir.path().join("appliance.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-f", "qcow2"])
        .arg(&source)
        .arg("32M")
        .output()
        .unwrap();
    assert!(made.status.success());
    let out = cluster
        .qm(
            "pve1",
            &[
                "disk",
                "import",
                "130",
                source.to_str().unwrap(),
                "local",
                "--format",
                "qcow2",
            ],
        )
        .ok();
    assert!(
        out.ends_with("unused0: successfully imported disk 'local:130/vm-130-disk-1.qcow2'\n"),
        "{out}"
    );
    cluster
        .qm("pve1", &["importdisk", "130", "/nonexistent.img", "local"])
        .fails_with("/nonexistent.img: non-existent or non-regular file");
    // Grow a disk behind Proxmox's back; rescan notices.
    let disk = cluster.path("pve1", "local:130/vm-130-disk-0.qcow2");
    assert!(
        std::process::Command::new("qemu-img")
            .arg("resize")
            .arg(&disk)
            .arg("128M")
            .output()
            .unwrap()
            .status
            .success()
    );
    let dry = cluster
        .qm("pve1", &["rescan", "--vmid", "130", "--dryrun", "1"])
        .ok();
    assert!(dry.contains("NOTE: running in dry-run mode"), "{dry}");
    assert!(cluster.config("pve1", 130).contains("size=64M"));
    let out = cluster
        .qm("pve1", &["disk", "rescan", "--vmid", "130"])
        .ok();
    assert!(
        out.contains(
            "VM 130 (scsi0): size of disk 'local:130/vm-130-disk-0.qcow2' updated from 64M to 128M"
        ),
        "{out}"
    );
    assert!(cluster.config("pve1", 130).contains("size=128M"));
}

#[test]
fn latency_cpu_load_and_verbose_status() {
    let cluster = Cluster::new("pve1", &[]);
    cluster
        .qm(
            "pve1",
            &["create", "140", "--cores", "2", "--memory", "1024"],
        )
        .ok();
    cluster
        .sim("pve1", &["fault", "--latency", "qm status=300"])
        .ok();
    let started = std::time::Instant::now();
    cluster.qm("pve1", &["status", "140"]).ok();
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    cluster
        .sim("pve1", &["script", "140", "--cpu-load", "0.8"])
        .ok();
    cluster.qm("pve1", &["start", "140"]).ok();
    // CPU time accumulates as the VM runs: wait for the scripted load to show.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let json = cluster
            .run(
                "pve1",
                "pvesh",
                &[
                    "get",
                    "/nodes/pve1/qemu/140/status/current",
                    "--output-format",
                    "json",
                ],
            )
            .ok();
        let status: serde_json::Value = serde_json::from_str(&json).unwrap();
        if status["cpu"].as_f64().unwrap() > 0.3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no CPU load seen: {json}"
        );
    }
    let verbose = cluster
        .qm("pve1", &["status", "140", "--verbose", "1"])
        .ok();
    assert!(
        verbose.contains("cpus: 2\n") && verbose.contains("maxmem: 1073741824\n"),
        "{verbose}"
    );
    assert!(verbose.contains("ha:\n\tmanaged: 0\n"), "{verbose}");
    assert!(
        verbose.contains("status: running\n") && !verbose.contains("cpu: "),
        "{verbose}"
    );
}

#[test]
fn each_cluster_is_named_and_has_its_own_root_ca() {
    let init = |args: &[&str]| {
        let (run, cluster) = Cluster::try_init(args);
        assert_eq!(run.code, 0, "{}", run.stderr);
        cluster
    };
    let members = |cluster: &Cluster| {
        proxlab_pve::cluster::Members::parse(&cluster.etc_pve(".members")).unwrap()
    };

    let standalone = init(&["--nodes", "pve1"]);
    assert_eq!(members(&standalone).cluster, None);

    let lab_b = init(&["--nodes", "pve1", "--cluster", "lab-b"]);
    let lab_b_members = members(&lab_b);
    assert_eq!(lab_b_members.nodename, "pve1");
    assert_eq!(lab_b_members.cluster.unwrap().name, "lab-b");

    let default_name = init(&["--nodes", "pve1,pve2"]);
    assert_eq!(members(&default_name).cluster.unwrap().name, "sim");

    let ca_b = lab_b.etc_pve("pve-root-ca.pem");
    assert!(ca_b.starts_with("-----BEGIN CERTIFICATE-----"), "{ca_b}");
    assert_ne!(ca_b, default_name.etc_pve("pve-root-ca.pem"));

    let (refused, _) = Cluster::try_init(&["--cluster", "lab b/../x"]);
    refused.fails_with("cluster");
}
