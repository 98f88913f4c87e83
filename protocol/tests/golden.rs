//! Golden files pin the encoding of every message kind. A change to the wire format shows up
//! as a diff under `tests/golden/`. To accept an intended change, run the tests with
//! `PROXLAB_UPDATE_GOLDEN=1` and review the diff.

use std::path::PathBuf;

use proxlab_protocol::requests::{NodeInfo, NodeInfoReply, Ping, Pong};
use proxlab_protocol::{
    EnrollRequest, EnrollResponse, ErrorKind, Event, EventFrame, Hello, PROTOCOL_VERSION,
    RemoteError, RequestFrame, ResponseFrame, Welcome,
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
        "response_pong",
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
