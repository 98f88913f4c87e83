//! Golden files pin the encoding of every message kind. A change to the wire format shows up
//! as a diff under `tests/golden/`. To accept an intended change, run the tests with
//! `PROXLAB_UPDATE_GOLDEN=1` and review the diff.

use std::path::PathBuf;

use proxlab_protocol::requests::{NodeInfo, NodeInfoReply, Ping, Pong};
use proxlab_protocol::{
    ClusterIdentity, EnrollRequest, EnrollResponse, ErrorKind, Event, EventFrame, Hello,
    PROTOCOL_VERSION, RemoteError, RequestFrame, ResponseFrame, Welcome,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"))
}

/// Checks that `value` encodes to the golden file and that the file decodes back to `value`.
fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(name: &str, value: &T) {
    let encoded = serde_json::to_string_pretty(value).unwrap() + "\n";
    let path = golden_path(name);
    if std::env::var_os("PROXLAB_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &encoded).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "{}: {err} (run with PROXLAB_UPDATE_GOLDEN=1)",
            path.display()
        )
    });
    assert_eq!(encoded, golden, "encoding of {name} changed");
    let decoded: T = serde_json::from_str(&golden).unwrap();
    assert_eq!(
        &decoded, value,
        "golden {name} does not decode to the same value"
    );
}

#[test]
fn hello() {
    check(
        "hello",
        &Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: "0.1.0".into(),
            node_name: "pve1".into(),
            capabilities: vec!["ping".into(), "node-info".into()],
            cluster: Some(ClusterIdentity {
                name: "lab".into(),
                ca_fingerprint: "sha256:5f1c".into(),
            }),
        },
    );
}

#[test]
fn welcome() {
    check(
        "welcome",
        &Welcome {
            protocol: PROTOCOL_VERSION,
            hub_version: "0.1.0".into(),
            heartbeat_secs: 5,
        },
    );
}

#[test]
fn enroll_request() {
    check(
        "enroll_request",
        &EnrollRequest {
            token: "plj_example".into(),
            node_name: "pve1".into(),
            agent_version: "0.1.0".into(),
            csr_pem: "-----BEGIN CERTIFICATE REQUEST-----\n...\n".into(),
            cluster: Some(ClusterIdentity::standalone("pve1")),
        },
    );
}

#[test]
fn enroll_response() {
    check(
        "enroll_response",
        &EnrollResponse {
            node_name: "pve1".into(),
            certificate_pem: "-----BEGIN CERTIFICATE-----\n...\n".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\n...\n".into(),
        },
    );
}

#[test]
fn heartbeat_event() {
    check(
        "event_heartbeat",
        &EventFrame {
            seq: 7,
            event: Event::Heartbeat {
                unix_ms: 1_790_000_000_000,
            },
        },
    );
}

#[test]
fn ping_request() {
    let ping = Ping {
        payload: "hello".into(),
        delay_ms: 250,
    };
    check("request_ping", &RequestFrame::new("op-1", &ping).unwrap());
}

#[test]
fn node_info_request() {
    check(
        "request_node_info",
        &RequestFrame::new("op-2", &NodeInfo {}).unwrap(),
    );
}

#[test]
fn pong_response() {
    let pong = Pong {
        payload: "hello".into(),
    };
    check(
        "response_ping",
        &ResponseFrame::from_result(Ok::<_, RemoteError>(pong)),
    );
}

#[test]
fn node_info_response() {
    let reply = NodeInfoReply {
        hostname: "pve1".into(),
        kernel: "6.8.12-4-pve".into(),
        os: "Debian GNU/Linux 12".into(),
        cpu_count: 16,
        memory_total_bytes: 68_719_476_736,
        memory_used_bytes: 8_589_934_592,
        uptime_secs: 86_400,
        agent_version: "0.1.0".into(),
    };
    check(
        "response_node_info",
        &ResponseFrame::from_result(Ok::<_, RemoteError>(reply)),
    );
}

#[test]
fn progress_response() {
    check(
        "response_progress",
        &ResponseFrame::Progress {
            body: serde_json::json!({"done": 3, "total": 10}),
        },
    );
}

#[test]
fn error_response() {
    check(
        "response_error",
        &ResponseFrame::Err {
            error: RemoteError::new(
                ErrorKind::Unsupported,
                "unknown request kind \"frobnicate\"",
            ),
        },
    );
}

#[test]
fn messages_from_a_newer_minor_version_still_decode() {
    // A 1.1 agent may add fields, and a 1.1 hub new event and error kinds.
    let hello: Hello = serde_json::from_str(
        r#"{"protocol":{"major":1,"minor":1},"agent_version":"0.2.0","node_name":"pve1",
            "capabilities":["ping"],"boot_id":"new-field"}"#,
    )
    .unwrap();
    assert_eq!(hello.node_name, "pve1");

    let event: EventFrame =
        serde_json::from_str(r#"{"seq":3,"event":{"type":"gpu-metrics","load":0.5}}"#).unwrap();
    assert_eq!(event.event, Event::Unknown);

    let error: RemoteError =
        serde_json::from_str(r#"{"kind":"quota-exceeded","message":"no room"}"#).unwrap();
    assert_eq!(error.kind, ErrorKind::Unknown);
}

#[test]
fn messages_from_an_older_minor_version_still_decode() {
    // Fields marked optional may be absent in a peer that predates them.
    let hello: Hello = serde_json::from_str(
        r#"{"protocol":{"major":1,"minor":0},"agent_version":"0.1.0","node_name":"pve1"}"#,
    )
    .unwrap();
    assert!(hello.capabilities.is_empty());
    let ping: Ping = serde_json::from_str("{}").unwrap();
    assert_eq!(ping.delay_ms, 0);
}

/// A request frame and the `Ok` answer of kind `R`, as golden files named after the kind.
fn check_exchange<R>(request: &R, response: &R::Response)
where
    R: proxlab_protocol::Request + PartialEq + std::fmt::Debug,
    R::Response: PartialEq + std::fmt::Debug,
{
    let name = R::KIND.replace('-', "_");
    let frame = RequestFrame::new("op-7", request).unwrap();
    check(&format!("request_{name}"), &frame);
    let decoded: R = serde_json::from_value(frame.body).unwrap();
    assert_eq!(&decoded, request, "{} body round trip", R::KIND);
    let answer = ResponseFrame::from_result(Ok::<_, RemoteError>(response));
    check(&format!("response_{name}"), &answer);
}

#[test]
fn vm_requests() {
    use proxlab_protocol::inventory::PowerState;
    use proxlab_protocol::vm_ops::{
        DiskSize, Done, GuestOs, HardwareChange, HardwareReply, NicPlacement, PowerAction,
        PowerReply, Resync, SnapshotOp, VmCreate, VmDestroy, VmHardware, VmInstall, VmMakeTemplate,
        VmPower, VmReimage, VmReset, VmSnapshot,
    };
    let running = PowerReply {
        status: PowerState::Running,
    };
    check_exchange(
        &VmPower {
            vmid: 10_001,
            action: PowerAction::Shutdown {
                timeout_secs: 60,
                force_stop: false,
            },
        },
        &running,
    );
    check_exchange(
        &VmDestroy {
            vmid: 10_001,
            allow_template: false,
            identity: Some("4f5a0c1e-8d1b-4a43-9d6e-2f1c0b7e9a10".into()),
        },
        &Done {},
    );
    check_exchange(
        &VmSnapshot {
            vmid: 10_001,
            name: "before-lab-2".into(),
            op: SnapshotOp::Create {
                description: Some("taken by proxlab".into()),
            },
        },
        &Done {},
    );
    check_exchange(
        &VmReset {
            vmid: 10_001,
            stopped: true,
            identity: None,
        },
        &PowerReply {
            status: PowerState::Stopped,
        },
    );
    check_exchange(
        &VmReimage {
            vmid: 10_001,
            base_vmid: 10_040,
            identity: Some("4f5a0c1e-8d1b-4a43-9d6e-2f1c0b7e9a10".into()),
        },
        &PowerReply {
            status: PowerState::Stopped,
        },
    );
    check_exchange(
        &VmHardware {
            vmid: 10_001,
            identity: Some("4f5a0c1e-8d1b-4a43-9d6e-2f1c0b7e9a10".into()),
            change: HardwareChange {
                cores: Some(4),
                memory_mib: Some(8192),
                disks: vec![DiskSize {
                    slot: "scsi0".into(),
                    size_bytes: 64 << 30,
                }],
                nic: Some(NicPlacement {
                    index: 0,
                    bridge: "vmbr1".into(),
                    vlan: Some(30),
                }),
                add_serial: true,
            },
        },
        &HardwareReply {
            applied: vec!["scsi0".into(), "serial0".into()],
            pending: vec!["cores".into(), "memory".into(), "net0".into()],
        },
    );
    check_exchange(&Resync {}, &Done {});
    check_exchange(
        &VmInstall {
            vm: VmCreate {
                vmid: 10_050,
                name: "win11-lab".into(),
                cores: 4,
                memory_mib: 8192,
                disk_gib: 64,
                storage: "local".into(),
                bridge: "vmbr0".into(),
            },
            iso: "local:iso/Win11_24H2_English_x64.iso".into(),
            os: GuestOs::Windows11,
        },
        &Done {},
    );
    check_exchange(
        &VmMakeTemplate {
            vmid: 10_050,
            identity: Some("4f5a0c1e-8d1b-4a43-9d6e-2f1c0b7e9a10".into()),
        },
        &Done {},
    );
    check_exchange(
        &VmCreate {
            vmid: 10_002,
            name: "networks-101-s01".into(),
            cores: 2,
            memory_mib: 2048,
            disk_gib: 16,
            storage: "local-lvm".into(),
            bridge: "vmbr0".into(),
        },
        &Done {},
    );
}

#[test]
fn clone_requests() {
    use std::collections::BTreeMap;

    use proxlab_protocol::clones::{
        CloneMany, CloneManyReply, CloneOutcome, CloneTarget, CopyProgress, Hardware, MakeBase,
        MakeBaseReply,
    };
    use proxlab_protocol::plugins::{
        PluginClass, PluginSite, PluginSteps, PluginStudent, PluginVm, SettingValue,
    };
    check_exchange(
        &MakeBase {
            source_vmid: 9000,
            base_vmid: 10_000,
            name: "networks-101-base".into(),
            storage: Some("local".into()),
        },
        &MakeBaseReply {
            base_vmid: 10_000,
            volids: vec!["local:10000/base-10000-disk-0.qcow2".into()],
        },
    );
    check(
        "progress_make_base",
        &ResponseFrame::Progress {
            body: serde_json::to_value(CopyProgress {
                done_bytes: 1 << 30,
                total_bytes: 2 << 30,
            })
            .unwrap(),
        },
    );
    let mut vms = BTreeMap::new();
    vms.insert(
        10_001,
        PluginVm {
            kind: "student".into(),
            index: 1,
            student: Some("alice".into()),
            student_facts: Some(PluginStudent {
                username: "alice".into(),
                display_name: "Alice Liddell".into(),
                email: Some("alice@school.example".into()),
                groups: vec!["year-2".into()],
            }),
        },
    );
    check_exchange(
        &CloneMany {
            base_vmid: 10_000,
            vms: vec![
                CloneTarget {
                    vmid: 10_001,
                    name: "networks-101-s01".into(),
                },
                CloneTarget {
                    vmid: 10_002,
                    name: "networks-101-s02".into(),
                },
            ],
            concurrency: 8,
            hardware: Hardware {
                cores: Some(2),
                memory_mib: Some(4096),
            },
            steps: Some(PluginSteps {
                plugins: vec!["name-by-student".into()],
                class: PluginClass {
                    id: 3,
                    name: "Networks 101".into(),
                    slug: "networks-101".into(),
                    description: "Routing and switching".into(),
                    course_code: None,
                    owners: vec!["mrs-smith".into()],
                    seats: 20,
                    template: Some("lab/9000".into()),
                    cores: Some(2),
                    memory_mib: Some(4096),
                },
                vms,
                cluster: "lab".into(),
                site: PluginSite {
                    hub_url: "https://lab.school.example".into(),
                },
                settings: BTreeMap::from([(
                    "per-class-sizing".to_owned(),
                    BTreeMap::from([("cores".to_owned(), SettingValue::Integer(4))]),
                )]),
            }),
        },
        &CloneManyReply {
            created: vec![10_001],
            failed: vec![CloneOutcome {
                vmid: 10_002,
                error: Some("VM is locked (clone)".into()),
            }],
        },
    );
    check(
        "progress_clone_many",
        &ResponseFrame::Progress {
            body: serde_json::to_value(CloneOutcome {
                vmid: 10_001,
                error: None,
            })
            .unwrap(),
        },
    );
}

#[test]
fn base_copy_requests() {
    use proxlab_protocol::base_copy::{
        BaseExport, BaseExportReply, BaseImport, BaseRead, BaseReceive, BaseReceiveReply, BaseSend,
        BaseSendReply, BaseWrite, BaseWritten, Chunk, ExportedDisk,
    };
    use proxlab_protocol::clones::MakeBaseReply;
    check_exchange(
        &BaseExport {
            base_vmid: 10_000,
            diff_against: None,
            from_vm: false,
        },
        &BaseExportReply {
            config: "name: networks-101-base\ntemplate: 1\n".into(),
            disks: vec![ExportedDisk {
                key: "scsi0".into(),
                bytes: 2 << 30,
                diff_of: None,
            }],
        },
    );
    let chunk = Chunk {
        len: 4,
        data: "3q2+7w==".into(),
    };
    check_exchange(
        &BaseRead {
            base_vmid: 10_000,
            disk: 0,
            offset: 4 << 20,
            diff_against: None,
            from_vm: false,
        },
        &chunk,
    );
    check_exchange(
        &BaseWrite {
            base_vmid: 10_000,
            storage: "local".into(),
            disk: 0,
            offset: 4 << 20,
            chunk,
        },
        &BaseWritten { bytes: 4 },
    );
    check_exchange(
        &BaseSend {
            base_vmid: 10_000,
            disk: 0,
            offset: 1 << 30,
            diff_against: Some(9_990),
            from_vm: false,
            lane: None,
        },
        &BaseSendReply { bytes: 2 << 30 },
    );
    check_exchange(
        &BaseReceive {
            base_vmid: 10_000,
            storage: "local".into(),
            disk: 0,
            bytes: 2 << 30,
            copy_id: "5f0c9d2e41a7b3c8".into(),
            lane: Some("9c1e2f0a4b7d83e65a2c0f1d7e4b9a38".into()),
        },
        &BaseReceiveReply { have: 1 << 30 },
    );
    check_exchange(
        &BaseImport {
            base_vmid: 10_000,
            name: "networks-101-base-pve2".into(),
            storage: "local".into(),
            config: "name: networks-101-base\ntemplate: 1\n".into(),
            disks: vec![2 << 30],
            diff_of: Vec::new(),
            reference: None,
        },
        &MakeBaseReply {
            base_vmid: 10_000,
            volids: vec!["local:10000/base-10000-disk-0.qcow2".into()],
        },
    );
}

#[test]
fn plugin_requests() {
    use proxlab_protocol::plugins::{
        PluginInstall, PluginInstalled, PluginRemove, VmAssigned, VmAssignedReply, VmUnassigned,
    };
    use proxlab_protocol::vm_ops::Done;
    check_exchange(
        &PluginInstall {
            manifest: "id = \"name-by-student\"\nversion = \"0.1.0\"\n".into(),
            wasm: "AGFzbQ0AAQA=".into(),
            sha256: "9f2c".repeat(16),
        },
        &PluginInstalled {
            id: "name-by-student".into(),
            version: "0.1.0".into(),
            compile_ms: 41,
            withheld: vec!["guest-exec".into()],
        },
    );
    check_exchange(
        &VmAssigned {
            vmid: 10_001,
            student: "alice".into(),
            student_facts: None,
        },
        &VmAssignedReply {
            name: Some("networks-101-alice".into()),
        },
    );
    check_exchange(&VmUnassigned { vmid: 10_001 }, &Done {});
    check_exchange(
        &PluginRemove {
            id: "name-by-student".into(),
        },
        &Done {},
    );
}

#[test]
fn console_requests() {
    use proxlab_protocol::console::{ConsoleKind, ConsoleOpen, ConsoleReady};
    check_exchange(
        &ConsoleOpen {
            vmid: 10_001,
            kind: ConsoleKind::Vnc,
            password: Some("k7#Qp2!x".into()),
        },
        &ConsoleReady {},
    );
}

#[test]
fn tunnel_requests() {
    use proxlab_protocol::tunnel::{TunnelOpen, TunnelReady};
    check_exchange(
        &TunnelOpen {
            vmid: 10_001,
            address: "192.168.1.50".parse().unwrap(),
            port: 22,
        },
        &TunnelReady {},
    );
}

#[test]
fn inventory_and_metrics_events() {
    use proxlab_protocol::inventory::{
        DiskInfo, Inventory, InventoryDelta, IpAddress, IpSource, IsoInfo, NicInfo, NodeMetrics,
        PowerState, StorageInfo, VmInfo, VmLoad,
    };
    use proxlab_protocol::plugins::{PluginFinding, PluginNotice};
    let storage = StorageInfo {
        id: "local".into(),
        kind: "dir".into(),
        shared: false,
        active: true,
        content: vec!["images".into(), "iso".into()],
        total_bytes: 100 << 30,
        used_bytes: 40 << 30,
        avail_bytes: 60 << 30,
    };
    let vm = VmInfo {
        vmid: 10_001,
        name: "networks-101-s01".into(),
        node: "pve1".into(),
        status: PowerState::Running,
        template: false,
        cores: 2,
        sockets: 1,
        memory_mib: 2048,
        disks: vec![DiskInfo {
            key: "scsi0".into(),
            volid: "local:10000/base-10000-disk-0.qcow2/10001/vm-10001-disk-0.qcow2".into(),
            size_bytes: 2 << 30,
        }],
        nics: vec![NicInfo {
            key: "net0".into(),
            model: "virtio".into(),
            mac: "BC:24:11:2A:3B:4C".into(),
            bridge: Some("vmbr0".into()),
            vlan: Some(20),
        }],
        tags: vec!["proxlab".into()],
        lock: None,
        uptime_secs: 120,
        cpu: 0.25,
        mem_bytes: 1 << 30,
        ips: vec![IpAddress {
            address: "10.0.20.31".into(),
            mac: "BC:24:11:2A:3B:4C".into(),
            source: IpSource::GuestAgent,
        }],
        identity: Some("4f5a0c1e-8d1b-4a43-9d6e-2f1c0b7e9a10".into()),
        pending: Vec::new(),
    };
    check(
        "event_inventory",
        &EventFrame {
            seq: 1,
            event: Event::Inventory {
                inventory: Inventory {
                    vms: vec![vm.clone()],
                    storages: vec![storage.clone()],
                    isos: vec![IsoInfo {
                        storage: "local".into(),
                        volid: "local:iso/debian-12.iso".into(),
                        size_bytes: 650 << 20,
                    }],
                },
            },
        },
    );
    check(
        "event_inventory_delta",
        &EventFrame {
            seq: 2,
            event: Event::InventoryDelta {
                delta: InventoryDelta {
                    upserted: vec![vm],
                    removed: vec![10_002],
                    storages: None,
                    isos: None,
                },
            },
        },
    );
    check(
        "event_metrics",
        &EventFrame {
            seq: 3,
            event: Event::Metrics {
                metrics: NodeMetrics {
                    cpu: 0.5,
                    cpu_count: 16,
                    memory_total_bytes: 64 << 30,
                    memory_used_bytes: 8 << 30,
                    load_average: [0.5, 0.25, 0.125],
                    uptime_secs: 86_400,
                    storages: vec![storage],
                    vms: vec![VmLoad {
                        vmid: 10_001,
                        cpu: 0.25,
                        mem_bytes: 1 << 30,
                        uptime_secs: 120,
                    }],
                },
            },
        },
    );
    check(
        "event_plugin_steps",
        &EventFrame {
            seq: 4,
            event: Event::PluginSteps {
                vmid: 10_001,
                hook: "after-start".into(),
                error: Some("set-guest-password: the guest agent did not answer".into()),
                findings: vec![PluginFinding {
                    plugin: "per-class-sizing".into(),
                    severity: "warning".into(),
                    message: "a negative size is ignored".into(),
                }],
                notices: vec![PluginNotice {
                    plugin: "set-guest-password".into(),
                    message: "Sign in as student".into(),
                    secret: Some("correct-horse".into()),
                }],
            },
        },
    );
}

#[test]
fn idle_requests_and_events() {
    use proxlab_protocol::idle::{
        IdleGuest, IdleOutcome, IdlePolicies, IdlePolicy, IdleReason, IdleStillHere,
        IdleStillHereReply, IdleStop, VmIdlePolicy,
    };
    use proxlab_protocol::vm_ops::Done;
    check_exchange(
        &IdlePolicies {
            vms: vec![VmIdlePolicy {
                vmid: 10_001,
                policy: IdlePolicy {
                    no_connection_secs: Some(900),
                    disconnected_secs: None,
                    idle_guest: Some(IdleGuest {
                        secs: 1800,
                        cpu_percent: 5,
                    }),
                    warn_secs: 300,
                    shutdown_timeout_secs: 300,
                    hard_stop: true,
                    guest_message: true,
                },
            }],
        },
        &Done {},
    );
    check_exchange(
        &IdleStillHere { vmid: 10_001 },
        &IdleStillHereReply { was_warned: true },
    );
    check(
        "event_idle_warning",
        &EventFrame {
            seq: 7,
            event: Event::IdleWarning {
                vmid: 10_001,
                reason: IdleReason::Disconnected,
                stop_at_unix: 1_767_268_800,
                secs_left: 300,
            },
        },
    );
    check(
        "event_idle_cleared",
        &EventFrame {
            seq: 8,
            event: Event::IdleCleared { vmid: 10_001 },
        },
    );
    check(
        "event_idle_stopped",
        &EventFrame {
            seq: 9,
            event: Event::IdleStopped {
                stop: IdleStop {
                    id: "pve1-10001-1767268800".into(),
                    vmid: 10_001,
                    reason: IdleReason::IdleGuest,
                    idle_secs: 1800,
                    at_unix: 1_767_268_800,
                    outcome: IdleOutcome::Failed {
                        message: "the guest did not shut down within 300 s".into(),
                    },
                },
            },
        },
    );
}
