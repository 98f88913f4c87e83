//! Reaching a VM over the network through the hub, with a real OpenSSH server standing in for
//! the VM's: the SSH terminal (the hub's russh client over a tunnel through the agent), host
//! keys trusted on first use, forwarded ports used by the real `ssh` client and by a stand-in
//! RDP server, and every way a tunnel could be pointed elsewhere refused at the hub and again
//! at the agent.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::console;
use common::lab::Lab;
use common::web::{WebClient, join_class};
use common::within;
use proxlab_hub::db::users::Role;
use proxlab_hub::demo::sshd::LocalSshd;
use proxlab_protocol::ErrorKind;
use proxlab_protocol::tunnel::TunnelOpen;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A class of two whose VMs' SSH servers listen on `ssh_port`; alice's VM runs and answers
/// on the address of `sshd`.
struct Classroom {
    lab: Lab,
    teacher: WebClient,
    alice: WebClient,
    bob: WebClient,
    class_id: i64,
    alice_vm: u32,
    node: String,
}

async fn classroom(lab: Lab, sshd: &LocalSshd, rdp_port: u16) -> Classroom {
    let teacher = lab.user("tina", Role::Teacher).await;
    let alice = lab.user("alice", Role::Student).await;
    let bob = lab.user("bob", Role::Student).await;
    let (class_id, _) = lab.deployed_class(&teacher, "Networks", 2).await;
    let access = json!({"console": true, "ssh": true, "rdp": true,
        "ssh_port": sshd.port, "rdp_port": rdp_port});
    let set = teacher
        .api_put_json(&format!("/api/v1/classes/{class_id}/access"), &access)
        .await;
    assert_eq!(set.status(), StatusCode::OK);
    let alice_vm = join_class(&teacher, &alice, class_id).await["vmid"]
        .as_u64()
        .expect("alice gets a VM") as u32;
    join_class(&teacher, &bob, class_id).await;
    let node = lab.node_of(alice_vm);
    // A guest agent is configured (it stays silent until a test scripts it to answer).
    lab.sim
        .ok(&node, "qm", &["set", &alice_vm.to_string(), "--agent", "1"]);
    lab.run_at_address(&alice, alice_vm, &sshd.address.to_string())
        .await;
    Classroom {
        lab,
        teacher,
        alice,
        bob,
        class_id,
        alice_vm,
        node,
    }
}

/// Opens the SSH terminal of `vmid` as `client` and sends `login`.
async fn ssh_terminal(client: &WebClient, vmid: u32, login: &Value) -> console::ConsoleSocket {
    let (status, ticket) = console::ticket(client, vmid, "ssh").await;
    assert_eq!(status, 201, "{ticket}");
    let mut socket = console::open(client, ticket["url"].as_str().unwrap(), None)
        .await
        .socket();
    socket.send_json(login).await;
    socket
}

#[tokio::test]
async fn the_ssh_terminal_logs_in_runs_commands_and_guards_the_host_key() {
    let Some((mut sshd, _keys)) = common::sshd::start(47022).await else {
        return;
    };
    let room = classroom(Lab::start().await, &sshd, 3389).await;
    let (alice, vmid) = (&room.alice, room.alice_vm);
    let with_key = json!({"username": sshd.user, "private_key": sshd.client_key().unwrap(),
        "cols": 80, "rows": 24});

    // First use: the key is remembered, the shell runs commands, a resize reaches the pty.
    let mut terminal = ssh_terminal(alice, vmid, &with_key).await;
    let host_key = terminal.next_json().await;
    assert_eq!(host_key["type"], "host-key", "{host_key}");
    assert_eq!(host_key["status"], "new", "{host_key}");
    let fingerprint = host_key["fingerprint"].as_str().unwrap().to_owned();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    assert_eq!(terminal.next_json().await["type"], "connected");
    terminal.send(b"echo proxlab-$((6*7))\n").await;
    terminal.read_until("proxlab-42").await;
    terminal
        .send_json(&json!({"type": "resize", "cols": 100, "rows": 30}))
        .await;
    terminal.send(b"stty size\n").await;
    terminal.read_until("30 100").await;
    terminal.send(b"exit\n").await;
    assert_eq!(terminal.close_frame().await.0, 4015);

    // A wrong password: a clear refusal, the key now known.
    let wrong =
        json!({"username": sshd.user, "password": "not-the-password", "cols": 80, "rows": 24});
    let mut terminal = ssh_terminal(alice, vmid, &wrong).await;
    assert_eq!(terminal.next_json().await["status"], "known");
    let (code, reason) = terminal.close_frame().await;
    assert_eq!(code, 4401, "{reason}");
    assert!(reason.contains("refused the login"), "{reason}");

    // Nonsense and oversized logins are refused before anything reaches the VM.
    let mut terminal = ssh_terminal(alice, vmid, &json!({"username": "x"})).await;
    assert_eq!(terminal.close_frame().await.0, 4400);
    let huge =
        json!({"username": sshd.user, "password": "p".repeat(1 << 20), "cols": 80, "rows": 24});
    let mut terminal = ssh_terminal(alice, vmid, &huge).await;
    assert_eq!(terminal.close_frame().await.0, 1009);

    // A browser that stops reading stops the shell: nothing piles up in the hub on the way.
    // (64 MB of output, far more than every buffer between the shell and the page.)
    let marker = tempfile::tempdir().unwrap();
    let done = marker.path().join("done");
    let (_, ticket) = console::ticket(alice, vmid, "ssh").await;
    let mut slow = console::open_small_buffered(alice, ticket["url"].as_str().unwrap()).await;
    slow.send_json(&with_key).await;
    assert_eq!(slow.next_json().await["status"], "known");
    assert_eq!(slow.next_json().await["type"], "connected");
    let command = format!(
        "head -c 48000000 /dev/zero | base64 -w 0; echo; touch {}; echo FLOOD-$((2*3))-END\n",
        done.display()
    );
    slow.send(command.as_bytes()).await;
    let session = room
        .lab
        .hub
        .hub()
        .state
        .consoles
        .list()
        .pop()
        .expect("the SSH session is open");
    let held = console::until_flow_stops(&session).await;
    eprintln!("an SSH terminal that reads nothing held up after {held} bytes");
    assert!(held < 32_000_000, "the hub passed on {held} bytes");
    assert!(
        !done.exists(),
        "the shell wrote all its output: something buffered it"
    );
    slow.read_until("FLOOD-6-END").await;
    assert!(done.exists());
    slow.close().await;

    // A first message that is not a login ends the session before anything reaches the VM.
    let (_, ticket) = console::ticket(alice, vmid, "ssh").await;
    let mut terminal = console::open(alice, ticket["url"].as_str().unwrap(), None)
        .await
        .socket();
    terminal.send(b"\x00\xffbinary first").await;
    assert_eq!(terminal.close_frame().await.0, 4400);

    // A server that accepts and then says nothing: the login times out with a clear reason.
    let silent = tokio::net::TcpListener::bind((sshd.address, 47025))
        .await
        .unwrap();
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            kept.push(stream);
        }
    });
    let hanging =
        json!({"console": true, "ssh": true, "rdp": true, "ssh_port": 47025, "rdp_port": 3389});
    let path = format!("/api/v1/classes/{}/access", room.class_id);
    room.teacher.api_put_json(&path, &hanging).await;
    let mut terminal = ssh_terminal(alice, vmid, &with_key).await;
    let (code, reason) = terminal.close_frame().await;
    assert_eq!(code, 4503, "{reason}");
    assert!(reason.contains("did not answer in time"), "{reason}");
    held.abort();
    let normal =
        json!({"console": true, "ssh": true, "rdp": true, "ssh_port": sshd.port, "rdp_port": 3389});
    room.teacher.api_put_json(&path, &normal).await;

    // A new host key (the VM made again, or someone in between) stops the login until the
    // user accepts exactly the key shown.
    sshd.change_host_key().await.unwrap();
    let mut terminal = ssh_terminal(alice, vmid, &with_key).await;
    let changed = terminal.next_json().await;
    assert_eq!(changed["status"], "changed", "{changed}");
    assert_eq!(changed["known_fingerprint"], fingerprint.as_str());
    let new_fingerprint = changed["fingerprint"].as_str().unwrap().to_owned();
    assert_ne!(new_fingerprint, fingerprint);
    terminal
        .send_json(&json!({"type": "accept-host-key", "fingerprint": "SHA256:someone-else"}))
        .await;
    assert_eq!(terminal.close_frame().await.0, 4402);
    let mut terminal = ssh_terminal(alice, vmid, &with_key).await;
    assert_eq!(terminal.next_json().await["status"], "changed");
    terminal
        .send_json(&json!({"type": "accept-host-key", "fingerprint": new_fingerprint}))
        .await;
    assert_eq!(terminal.next_json().await["type"], "connected");
    terminal.send(b"echo again-$((1+1))\n").await;
    terminal.read_until("again-2").await;
    terminal.close().await;
    let mut terminal = ssh_terminal(alice, vmid, &with_key).await;
    assert_eq!(terminal.next_json().await["status"], "known");
    terminal.close().await;

    // Bob cannot reach alice's VM; with SSH turned off for the class, alice cannot either,
    // and her open terminal ends within a second.
    let (status, _) = console::ticket(&room.bob, vmid, "ssh").await;
    assert_eq!(status, 404);
    let mut open_terminal = ssh_terminal(alice, vmid, &with_key).await;
    assert_eq!(open_terminal.next_json().await["status"], "known");
    assert_eq!(open_terminal.next_json().await["type"], "connected");
    let off = json!({"console": true, "ssh": false, "rdp": false, "ssh_port": sshd.port, "rdp_port": 3389});
    let set = room
        .teacher
        .api_put_json(&format!("/api/v1/classes/{}/access", room.class_id), &off)
        .await;
    assert_eq!(set.status(), StatusCode::OK);
    assert_eq!(open_terminal.close_frame().await.0, 4012);
    let (status, body) = console::ticket(alice, vmid, "ssh").await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = console::ticket(&room.teacher, vmid, "ssh").await;
    assert_eq!(status, 201, "the class's teacher still may");

    // The VMID made into another VM (a new SMBIOS identity; no longer alice's): its key is
    // simply new to whoever connects next.
    let stopped = alice.api_post(&format!("/api/v1/vms/{vmid}/stop")).await;
    assert_eq!(stopped.status(), StatusCode::OK);
    let uuid = "0b8c5e52-0c4d-4a7e-9d61-3f2a1c9e7b11";
    let smbios = format!("uuid={uuid}");
    room.lab.sim.ok(
        &room.node,
        "qm",
        &["set", &vmid.to_string(), "--smbios1", &smbios],
    );
    let admin = room.lab.user("ada", Role::Admin).await;
    room.lab
        .run_at_address(&admin, vmid, &sshd.address.to_string())
        .await;
    let db = room.lab.hub.hub().state.db.clone();
    let mut changes = room.lab.hub.hub().state.inventory_changes.subscribe();
    within("the VM's new identity", async {
        while db
            .vm(room.lab.key(vmid))
            .await
            .unwrap()
            .unwrap()
            .identity
            .as_deref()
            != Some(uuid)
        {
            let _ = changes.recv().await;
        }
    })
    .await;
    sshd.change_host_key().await.unwrap();
    let mut terminal = ssh_terminal(&admin, vmid, &with_key).await;
    assert_eq!(terminal.next_json().await["status"], "new");
    assert_eq!(terminal.next_json().await["type"], "connected");
    terminal.close().await;
}

/// Connects to `port` of this machine from `source` and reads what comes back for `sent`.
async fn exchange(source: IpAddr, port: u16, sent: &[u8]) -> Vec<u8> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let target = SocketAddr::new(source, port);
    let mut stream = socket.connect(target).await.unwrap();
    stream.write_all(sent).await.unwrap();
    let mut received = vec![0u8; sent.len()];
    let mut got = 0;
    within("an answer through the forwarded port", async {
        while got < received.len() {
            match stream.read(&mut received[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    received.truncate(got);
    received
}

#[tokio::test]
async fn forwarded_ports_reach_ssh_and_rdp_only_for_whom_asked() {
    let Some((sshd, _keys)) = common::sshd::start(47023).await else {
        return;
    };
    // A stand-in for the VM's RDP server: echoes what it gets.
    let rdp = tokio::net::TcpListener::bind((sshd.address, 47024))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = rdp.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    let lab = Lab::start_configured("shared", |config| {
        config.forwarding.ports = Some(47100..=47110);
    })
    .await;
    let room = classroom(lab, &sshd, 47024).await;
    let (alice, vmid) = (&room.alice, room.alice_vm);
    let forwards = format!("/api/v1/vms/{vmid}/forwards");

    // SSH: the real client, through the hub's port, runs a command on the VM.
    let response = alice
        .api_post_json(&forwards, &json!({"service": "ssh"}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let ssh: Value = response.json().await.unwrap();
    let port = ssh["port"].as_u64().unwrap() as u16;
    assert_eq!(ssh["allowed_from"], "127.0.0.1", "{ssh}");
    assert_eq!(ssh["vm_port"], sshd.port);
    assert_eq!(
        ssh["ssh_command"],
        format!("ssh -p {port} USER@127.0.0.1").as_str()
    );
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let output = common::sshd::client(&sshd, loopback, port, "echo proxlab-$((6*7))")
        .output()
        .await
        .expect("ssh runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "proxlab-42");

    // RDP: the file names the port, which reaches the VM's RDP server.
    let rdp: Value = alice
        .api_post_json(&forwards, &json!({"service": "rdp"}))
        .await
        .json()
        .await
        .unwrap();
    let rdp_port = rdp["port"].as_u64().unwrap() as u16;
    let file = alice.get(rdp["rdp_file"].as_str().unwrap()).await;
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(
        file.headers()["content-type"].to_str().unwrap(),
        "application/x-rdp"
    );
    let text = file.text().await.unwrap();
    assert!(
        text.starts_with(&format!("full address:s:127.0.0.1:{rdp_port}\r\n")),
        "{text}"
    );
    assert_eq!(
        exchange(loopback, rdp_port, b"rdp-hello").await,
        b"rdp-hello"
    );
    // From another address than the one that asked, the port answers nothing.
    assert_eq!(exchange(sshd.address, rdp_port, b"rdp-hello").await, b"");
    let listed = alice.json(&forwards).await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    // The hub refuses whoever may not: another student, a service the class turned off.
    let refused = room
        .bob
        .api_post_json(&forwards, &json!({"service": "ssh"}))
        .await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    let access = json!({"console": true, "ssh": true, "rdp": false, "ssh_port": sshd.port, "rdp_port": 47024});
    room.teacher
        .api_put_json(
            &format!("/api/v1/classes/{}/access", room.class_id),
            &access,
        )
        .await;
    let refused = alice
        .api_post_json(&forwards, &json!({"service": "rdp"}))
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // The RDP port she had closes with it; her SSH port stays.
    within("the RDP port to close", async {
        while alice.json(&forwards).await.as_array().unwrap().len() != 1 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(alice.json(&forwards).await[0]["service"], "ssh");

    // The agent refuses too, whatever the hub asks: loopback, an address that is not the VM's,
    // a port its operator does not allow, a VM it does not have.
    let registry = &room.lab.hub.hub().state.registry;
    for (address, port, target) in [
        ("127.0.0.1", sshd.port, vmid),
        ("192.0.2.77", sshd.port, vmid),
        (&sshd.address.to_string()[..], 8006, vmid),
        (&sshd.address.to_string()[..], sshd.port, 99_999),
    ] {
        let request = TunnelOpen {
            vmid: target,
            address: address.parse().unwrap(),
            port,
        };
        let result = registry
            .open_stream(&room.node, &request, Duration::from_secs(20))
            .await;
        match result {
            Err(proxlab_hub::agents::CallError::Remote(error)) => assert!(
                matches!(error.kind, ErrorKind::Unauthorized | ErrorKind::NotFound),
                "{address}:{port}: {error:?}"
            ),
            Err(other) => panic!("{address}:{port}: {other}"),
            Ok(_) => panic!("the agent opened a tunnel to {address}:{port} of VM {target}"),
        }
    }

    // A guest that claims an address through its guest agent is believed only where the
    // node's neighbour table shows that address at the VM's own NIC.
    let db = room.lab.hub.hub().state.db.clone();
    let mac = db.vm(room.lab.key(vmid)).await.unwrap().unwrap().nics[0]
        .mac
        .clone();
    let claimed = sshd.address.to_string();
    let interfaces = json!([{"name": "eth0", "hardware-address": mac,
        "ip-addresses": [{"ip-address": claimed, "ip-address-type": "ipv4", "prefix": 24}]}]);
    let id = vmid.to_string();
    room.lab
        .sim
        .ok(&room.node, "qm", &["set", &id, "--agent", "1"]);
    room.lab.sim.ok(
        &room.node,
        "script",
        &[
            &id,
            "--neighbor-ip",
            "off",
            "--guest-agent",
            "on",
            "--interfaces",
            &interfaces.to_string(),
        ],
    );
    let mut changes = room.lab.hub.hub().state.inventory_changes.subscribe();
    within("the guest agent's claim in the inventory", async {
        while !db.vm(room.lab.key(vmid)).await.unwrap().is_some_and(|vm| {
            vm.ips.iter().any(|ip| {
                ip.address == claimed
                    && ip.source == proxlab_protocol::inventory::IpSource::GuestAgent
            })
        }) {
            let _ = changes.recv().await;
        }
    })
    .await;
    let request = TunnelOpen {
        vmid,
        address: sshd.address,
        port: sshd.port,
    };
    match registry
        .open_stream(&room.node, &request, Duration::from_secs(20))
        .await
    {
        Err(proxlab_hub::agents::CallError::Remote(error)) => {
            assert_eq!(error.kind, ErrorKind::Unauthorized, "{error:?}");
            assert!(
                error.message.contains("is not an address of VM"),
                "{error:?}"
            );
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("the agent believed a guest agent's claim the network does not back"),
    }

    // The VM stops: its ports close.
    let stopped = alice.api_post(&format!("/api/v1/vms/{vmid}/stop")).await;
    assert_eq!(stopped.status(), StatusCode::OK);
    within("the forwarded ports to close", async {
        while !alice.json(&forwards).await.as_array().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let closed = tokio::net::TcpStream::connect((loopback, port)).await;
    assert!(closed.is_err(), "port {port} still accepts connections");
}
