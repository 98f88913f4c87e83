//! The agent-hub link end to end: real hub, real agent processes, real QUIC on 127.0.0.1.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{RawAgent, TestHub, within};
use proxlab_agent::link::EXIT_REFUSED_BY_HUB;
use proxlab_hub::agents::CallError;
use proxlab_hub::domain::admin;
use proxlab_hub::domain::audit::Actor;
use proxlab_link::pki::{CertificateAuthority, generate_node_key_and_csr};
use proxlab_protocol::requests::{NodeInfo, Ping};
use proxlab_protocol::{CloseCode, ProtocolVersion};
use tokio::io::AsyncWriteExt;

fn ping(payload: &str, delay_ms: u64) -> Ping {
    Ping {
        payload: payload.into(),
        delay_ms,
    }
}

#[tokio::test]
async fn enrolled_agent_comes_online_and_answers() {
    let hub = TestHub::start().await;
    let _agent = hub.online_agent("pve1").await;

    // The key never left the node and is private; the token is spent.
    let key = hub.state_dir("pve1").join("node.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let tokens = hub.hub().db().list_join_tokens().await.unwrap();
    assert_eq!(tokens[0].spent_by_node.as_deref(), Some("pve1"));

    let registry = hub.hub().registry();
    let pong = registry.call("pve1", &ping("hello", 0)).await.unwrap();
    assert_eq!(pong.payload, "hello");
    let info = registry.call("pve1", &NodeInfo {}).await.unwrap();
    assert!(
        info.cpu_count >= 1 && info.memory_total_bytes > 0,
        "{info:?}"
    );
    assert_eq!(info.agent_version, env!("CARGO_PKG_VERSION"));

    let node = hub.hub().db().node_by_name("pve1").await.unwrap().unwrap();
    assert!(node.online);
    assert_eq!(
        node.agent_version.as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(node.remote_addr.unwrap().starts_with("127.0.0.1:"));

    let health: serde_json::Value =
        serde_json::from_str(&http_get(hub.hub().http_addr(), "/health").await).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["nodes_online"], 1);
    assert_eq!(health["nodes_total"], 1);
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn expired_token_is_refused_and_nothing_is_written() {
    let hub = TestHub::start().await;
    let token = hub.token(Duration::ZERO, None).await;
    let output = hub.enroll_with("pve1", &token.token, &token.ca_pin).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("expired"), "{stderr}");
    assert!(
        !hub.state_dir("pve1").exists(),
        "state written after a refused enrollment"
    );
    assert!(hub.hub().db().node_by_name("pve1").await.unwrap().is_none());
}

#[tokio::test]
async fn spent_token_is_refused() {
    let hub = TestHub::start().await;
    let token = hub.token(Duration::from_secs(600), None).await;
    assert!(
        hub.enroll_with("pve1", &token.token, &token.ca_pin)
            .await
            .status
            .success()
    );
    let output = hub.enroll_with("pve2", &token.token, &token.ca_pin).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already been used"), "{stderr}");
    assert!(!hub.state_dir("pve2").exists());
}

#[tokio::test]
async fn unknown_token_and_token_for_another_node_are_refused() {
    let hub = TestHub::start().await;
    let bound = hub.token(Duration::from_secs(600), Some("pve7")).await;
    let output = hub.enroll_with("pve1", &bound.token, &bound.ca_pin).await;
    assert!(String::from_utf8_lossy(&output.stderr).contains("another node name"));
    let output = hub
        .enroll_with("pve1", "plj_not-a-token", &bound.ca_pin)
        .await;
    assert!(String::from_utf8_lossy(&output.stderr).contains("not valid"));
    // The bound token still works for its node.
    assert!(
        hub.enroll_with("pve7", &bound.token, &bound.ca_pin)
            .await
            .status
            .success()
    );
}

#[tokio::test]
async fn wrong_ca_pin_makes_the_agent_refuse_the_hub() {
    let hub = TestHub::start().await;
    let token = hub.token(Duration::from_secs(600), None).await;
    let wrong_pin = format!("sha256:{}", "ab".repeat(32));
    let output = hub.enroll_with("pve1", &token.token, &wrong_pin).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CA fingerprint is"), "{stderr}");
    assert!(
        stderr.contains(&token.ca_pin),
        "the message names the real pin: {stderr}"
    );
    assert!(!hub.state_dir("pve1").exists());
    // The token was never sent, so it still works with the right pin.
    assert!(
        hub.enroll_with("pve1", &token.token, &token.ca_pin)
            .await
            .status
            .success()
    );
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let hub = TestHub::start().await;
    hub.enroll("pve1").await;
    let mut identity = hub.identity("pve1");
    // Same node name, but signed by a CA the hub never heard of.
    let (other_ca, _) = CertificateAuthority::generate("impostor").unwrap();
    let key_and_csr = generate_node_key_and_csr("pve1").unwrap();
    identity.node.cert_pem = other_ca
        .sign_node_csr(&key_and_csr.cert_pem, "pve1")
        .unwrap();
    identity.node.key_pem = key_and_csr.key_pem;

    let refused = match RawAgent::connect(&hub, &identity).await {
        Err(err) => err,
        Ok(raw) => match raw.hello("pve1", proxlab_protocol::PROTOCOL_VERSION).await {
            Err(err) => err,
            Ok(_) => panic!("the hub accepted a certificate from another CA"),
        },
    };
    eprintln!("refused as expected: {refused}");
    assert!(!hub.hub().registry().is_online("pve1"));
}

#[tokio::test]
async fn agent_is_back_within_five_seconds_of_a_hub_restart() {
    let mut hub = TestHub::start().await;
    let _agent = hub.online_agent("pve1").await;
    hub.stop().await;
    hub.restart().await;
    let restarted = Instant::now();
    within(
        "pve1 online after restart",
        hub.hub().registry().wait_for("pve1", true),
    )
    .await;
    let took = restarted.elapsed();
    assert!(took < Duration::from_secs(5), "reconnect took {took:?}");
    let pong = hub
        .hub()
        .registry()
        .call("pve1", &ping("again", 0))
        .await
        .unwrap();
    assert_eq!(pong.payload, "again");
    let transitions = hub.hub().db().node_transitions("pve1").await.unwrap();
    let states: Vec<bool> = transitions.iter().map(|t| t.online).collect();
    assert!(
        states.ends_with(&[true, false, true]),
        "online, offline across the restart, online again: {transitions:?}"
    );
}

#[tokio::test]
async fn revoked_agent_exits_instead_of_retrying() {
    let hub = TestHub::start().await;
    let mut agent = hub.online_agent("pve1").await;
    let state = &hub.hub().state;
    let revoked = admin::revoke_node(&state.db, Some(&state.registry), Actor::Operator, "pve1");
    assert!(revoked.await.unwrap());
    let status = within("the revoked agent to exit", agent.wait())
        .await
        .unwrap();
    assert_eq!(
        status.code(),
        Some(i32::from(EXIT_REFUSED_BY_HUB)),
        "{}",
        hub.agent_log("pve1")
    );
    assert!(
        hub.agent_log("pve1").contains("revoked"),
        "{}",
        hub.agent_log("pve1")
    );

    // Started again, it is refused on connect and exits the same way.
    let mut again = hub.spawn_agent("pve1");
    let status = within("the restarted revoked agent to exit", again.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(i32::from(EXIT_REFUSED_BY_HUB)));
    assert!(!hub.hub().registry().is_online("pve1"));
}

#[tokio::test]
async fn revocation_from_another_process_takes_effect_at_the_next_heartbeat() {
    let hub = TestHub::start().await;
    let mut agent = hub.online_agent("pve1").await;
    // As `proxlab-hub nodes revoke` does: only the database changes.
    assert!(
        hub.hub()
            .db()
            .revoke_node("pve1", proxlab_hub::db::now_unix())
            .await
            .unwrap()
    );
    let status = within("the revoked agent to exit", agent.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(i32::from(EXIT_REFUSED_BY_HUB)));
}

#[tokio::test]
async fn a_second_connection_replaces_the_first() {
    let hub = TestHub::start().await;
    hub.enroll("pve1").await;
    let identity = hub.identity("pve1");
    let first = RawAgent::connect(&hub, &identity).await.unwrap();
    let _control_first = first.hello_current("pve1").await;
    within("first online", hub.hub().registry().wait_for("pve1", true)).await;

    let second = RawAgent::connect(&hub, &identity).await.unwrap();
    let _control_second = second.hello_current("pve1").await;
    assert_eq!(
        first.close_code().await,
        Some(u64::from(CloseCode::Replaced.code()))
    );

    let session = hub
        .hub()
        .registry()
        .session("pve1")
        .expect("one session remains");
    assert_eq!(
        session.remote.port(),
        second.endpoint.local_addr().unwrap().port()
    );
    assert_eq!(hub.hub().registry().online_nodes(), vec!["pve1".to_owned()]);
    // The replaced session's end did not take the node offline.
    let node = hub.hub().db().node_by_name("pve1").await.unwrap().unwrap();
    assert!(node.online);
}

#[tokio::test]
async fn twenty_concurrent_requests_and_a_slow_one_does_not_block_the_rest() {
    let hub = TestHub::start().await;
    let _agent = hub.online_agent("pve1").await;
    let registry = hub.hub().registry().clone();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..20u64 {
        let registry = registry.clone();
        // Request 0 is slow; the others answer at once.
        let delay = if i == 0 { 3_000 } else { 0 };
        calls.spawn(async move {
            let pong = registry.call("pve1", &ping(&i.to_string(), delay)).await;
            (i, pong)
        });
    }
    let mut order = Vec::new();
    while let Some(done) = within("all 20 calls", calls.join_next()).await {
        let (i, pong) = done.unwrap();
        assert_eq!(pong.unwrap().payload, i.to_string());
        order.push(i);
    }
    assert_eq!(order.len(), 20);
    assert_eq!(
        order.last(),
        Some(&0),
        "the slow request held up others: {order:?}"
    );
}

#[tokio::test]
async fn calls_to_offline_or_unknown_nodes_fail_at_once() {
    let hub = TestHub::start().await;
    let started = Instant::now();
    let err = hub
        .hub()
        .registry()
        .call("nowhere", &ping("", 0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Offline(ref node) if node == "nowhere"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn call_timeout_is_reported() {
    let hub = TestHub::start().await;
    let _agent = hub.online_agent("pve1").await;
    let err = hub
        .hub()
        .registry()
        .call_with(
            "pve1",
            &ping("", 5_000),
            "op-timeout",
            Duration::from_millis(200),
            |_| {},
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Timeout { .. }), "{err}");
}

/// Starts a healthy agent and a raw one for `pve2`, and returns both with the raw control
/// stream, so a test can misbehave on it.
async fn healthy_and_raw(hub: &TestHub) -> (tokio::process::Child, RawAgent, quinn::SendStream) {
    let healthy = hub.online_agent("pve1").await;
    hub.enroll("pve2").await;
    let raw = RawAgent::connect(hub, &hub.identity("pve2")).await.unwrap();
    let (send, _recv, _welcome) = raw.hello_current("pve2").await;
    within("pve2 online", hub.hub().registry().wait_for("pve2", true)).await;
    (healthy, raw, send)
}

#[tokio::test]
async fn oversized_frame_closes_that_agent_and_spares_the_others() {
    let hub = TestHub::start().await;
    let (_healthy, raw, mut send) = healthy_and_raw(&hub).await;
    // A header announcing 1 GiB: refused from the header alone.
    send.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
    assert_eq!(
        raw.close_code().await,
        Some(u64::from(CloseCode::ProtocolError.code()))
    );
    within("pve2 offline", hub.hub().registry().wait_for("pve2", false)).await;
    let pong = hub
        .hub()
        .registry()
        .call("pve1", &ping("still here", 0))
        .await
        .unwrap();
    assert_eq!(pong.payload, "still here");
}

#[tokio::test]
async fn garbage_frame_closes_that_agent_and_spares_the_others() {
    let hub = TestHub::start().await;
    let (_healthy, raw, mut send) = healthy_and_raw(&hub).await;
    let garbage = b"\x00\x00\x00\x08\xde\xad\xbe\xef{{{{";
    send.write_all(garbage).await.unwrap();
    assert_eq!(
        raw.close_code().await,
        Some(u64::from(CloseCode::ProtocolError.code()))
    );
    let pong = hub
        .hub()
        .registry()
        .call("pve1", &ping("still here", 0))
        .await
        .unwrap();
    assert_eq!(pong.payload, "still here");
}

#[tokio::test]
async fn garbage_enrollment_gets_an_error_answer() {
    let hub = TestHub::start().await;
    let pin = hub.hub().state.ca_pin;
    let (config, _) = proxlab_link::tls::enroll_client_config(pin).unwrap();
    let addr = hub.config.quic_addr;
    let endpoint = proxlab_agent::link::connect::client_endpoint(addr).unwrap();
    let connection = proxlab_agent::link::connect::dial(&endpoint, addr, config)
        .await
        .unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(b"\x00\x00\x00\x05hello").await.unwrap();
    send.finish().unwrap();
    let answer: proxlab_protocol::ResponseFrame =
        proxlab_link::read_frame(&mut recv, 1 << 20, Duration::from_secs(10))
            .await
            .unwrap();
    match answer {
        proxlab_protocol::ResponseFrame::Err { error } => {
            assert_eq!(error.kind, proxlab_protocol::ErrorKind::BadFrame)
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // And an oversized enrollment frame is refused from its header.
    let connection = proxlab_agent::link::connect::dial(
        &endpoint,
        addr,
        proxlab_link::tls::enroll_client_config(pin).unwrap().0,
    )
    .await
    .unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
    let answer: proxlab_protocol::ResponseFrame =
        proxlab_link::read_frame(&mut recv, 1 << 20, Duration::from_secs(10))
            .await
            .unwrap();
    assert!(matches!(
        answer,
        proxlab_protocol::ResponseFrame::Err { .. }
    ));
}

#[tokio::test]
async fn incompatible_major_version_is_refused_with_its_close_code() {
    let hub = TestHub::start().await;
    hub.enroll("pve1").await;
    let raw = RawAgent::connect(&hub, &hub.identity("pve1"))
        .await
        .unwrap();
    let future = ProtocolVersion { major: 2, minor: 0 };
    assert!(raw.hello("pve1", future).await.is_err());
    assert_eq!(
        raw.close_code().await,
        Some(u64::from(CloseCode::VersionMismatch.code()))
    );
    assert!(!hub.hub().registry().is_online("pve1"));
}

#[tokio::test]
async fn hello_naming_another_node_is_refused() {
    let hub = TestHub::start().await;
    hub.enroll("pve1").await;
    let raw = RawAgent::connect(&hub, &hub.identity("pve1"))
        .await
        .unwrap();
    assert!(
        raw.hello("pve2", proxlab_protocol::PROTOCOL_VERSION)
            .await
            .is_err()
    );
    assert_eq!(
        raw.close_code().await,
        Some(u64::from(CloseCode::ProtocolError.code()))
    );
}

#[tokio::test]
async fn enrolling_an_active_name_twice_is_a_conflict_that_keeps_the_token() {
    let hub = TestHub::start().await;
    hub.enroll("pve1").await;
    let token = hub.token(Duration::from_secs(600), None).await;
    let output = within("enroll", async {
        tokio::process::Command::new(common::agent_bin())
            .arg("--state-dir")
            .arg(hub.dir.path().join("elsewhere"))
            .args(["enroll", "--hub", &hub.address(), "--token", &token.token])
            .args(["--ca-pin", &token.ca_pin, "--node-name", "pve1"])
            .output()
            .await
            .unwrap()
    })
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already enrolled"), "{stderr}");
    let tokens = hub.hub().db().list_join_tokens().await.unwrap();
    assert!(
        tokens.iter().any(|t| t.spent_at.is_none()),
        "the token was spent: {tokens:?}"
    );
    // After revoking, the same token re-enrolls the name.
    let state = &hub.hub().state;
    let revoked = admin::revoke_node(&state.db, Some(&state.registry), Actor::Operator, "pve1");
    assert!(revoked.await.unwrap());
    let output = hub.enroll_with("pve1b", &token.token, &token.ca_pin).await;
    assert!(output.status.success());
}
