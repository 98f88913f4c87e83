//! Consoles end to end through real processes: a WebSocket to the hub, a QUIC stream to the
//! agent, `qm vncproxy` (or the serial socket) of pve-sim's VM process, and back. The client
//! side speaks RFB itself, as noVNC would.

mod common;

use std::time::Duration;

use common::console::{self, Opened};
use common::lab::Lab;
use common::web::{WebClient, join_class};
use common::within;
use proxlab_hub::config::HubConfig;
use proxlab_hub::db::audit::AuditFilter;
use proxlab_hub::db::now_unix;
use proxlab_hub::db::users::Role;
use proxlab_hub::domain::admin::{self, UserChange};
use proxlab_hub::domain::audit::Actor;
use reqwest::StatusCode;
use serde_json::Value;

/// The processes of this lab that are `qm vncproxy` for `vmid`.
fn vncproxies(lab: &Lab, vmid: u32) -> usize {
    let root = lab.sim.root.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            args.iter().any(|arg| *arg == b"vncproxy")
                && args.iter().any(|arg| *arg == vmid.to_string().as_bytes())
                && String::from_utf8_lossy(&environ).contains(&root)
        })
        .count()
}

/// Waits until no `qm vncproxy` of this lab serves `vmid`. Nothing announces a process's
/// end to an outsider, so this looks at the process table until it is so.
async fn no_vncproxy_left(lab: &Lab, vmid: u32) {
    within("no qm vncproxy left", async {
        while vncproxies(lab, vmid) > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

struct Classroom {
    lab: Lab,
    admin: WebClient,
    teacher: WebClient,
    alice: WebClient,
    bob: WebClient,
    alice_vm: u32,
    bob_vm: u32,
}

/// A class of two with alice's and bob's VMs; alice's has a serial port and runs.
async fn classroom() -> Classroom {
    classroom_with(|_| {}).await
}

async fn classroom_with(configure: impl FnOnce(&mut HubConfig)) -> Classroom {
    let lab = Lab::start_configured("shared", configure).await;
    let admin = lab.user("ada", Role::Admin).await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let alice = lab.user("alice", Role::Student).await;
    let bob = lab.user("bob", Role::Student).await;
    let (class_id, _) = lab.deployed_class(&teacher, "Consoles 101", 2).await;
    let alice_vm = join_class(&teacher, &alice, class_id).await["vmid"]
        .as_u64()
        .expect("alice gets a VM") as u32;
    let bob_vm = join_class(&teacher, &bob, class_id).await["vmid"]
        .as_u64()
        .expect("bob gets a VM") as u32;
    for vmid in [alice_vm, bob_vm] {
        let owner = lab.node_of(vmid);
        lab.sim.ok(
            &owner,
            "qm",
            &["set", &vmid.to_string(), "--serial0", "socket"],
        );
    }
    let started = alice
        .api_post(&format!("/api/v1/vms/{alice_vm}/start"))
        .await;
    assert_eq!(started.status(), StatusCode::OK);
    Classroom {
        lab,
        admin,
        teacher,
        alice,
        bob,
        alice_vm,
        bob_vm,
    }
}

/// Opens a console of `kind` as `client`: the socket and the ticket's answer.
async fn open_console(
    client: &WebClient,
    vmid: u32,
    kind: &str,
) -> (console::ConsoleSocket, Value) {
    let (status, ticket) = console::ticket(client, vmid, kind).await;
    assert_eq!(status, 201, "{ticket}");
    let socket = console::open(client, ticket["url"].as_str().unwrap(), None)
        .await
        .socket();
    (socket, ticket)
}

#[tokio::test]
async fn a_student_sees_her_vms_screen_and_types_into_its_serial_console() {
    let room = classroom().await;
    let (lab, vmid) = (&room.lab, room.alice_vm);
    let hub = lab.hub.hub();

    // The screen: RFB through the hub, with the one-time password from the ticket.
    let (status, ticket) = console::ticket(&room.alice, vmid, "vnc").await;
    assert_eq!(status, 201, "{ticket}");
    let url = ticket["url"].as_str().unwrap();
    assert!(url.starts_with("/api/v1/console/plc_"), "{ticket}");
    let password = ticket["password"].as_str().unwrap().to_owned();
    assert_eq!(password.len(), 8);
    let origin = lab.hub.url();
    let mut screen = console::open(&room.alice, url, Some(&origin))
        .await
        .socket();
    let (name, (width, height), pixels) = screen.rfb_login(&password).await;
    assert!(
        name.contains(&format!("VM {vmid}")) || name.contains("consoles-101"),
        "{name}"
    );
    assert_eq!((width, height), (640, 360));
    assert!(
        pixels.chunks(4).any(|pixel| pixel[..3] != [0, 0, 0]),
        "the screen shows something (the VMID in large digits)"
    );
    assert!(
        hub.state
            .consoles
            .vms_in_use()
            .contains(&common::key_of(&hub.state.db, vmid).await)
    );
    // The ticket was spent: the same URL opens nothing a second time.
    let mut again = console::open(&room.alice, url, None).await.socket();
    assert_eq!(again.close_frame().await.0, 4002);
    // Leaving the page ends the VM side too: no `qm vncproxy` is left on the node.
    assert_eq!(vncproxies(lab, vmid), 1);
    screen.close().await;
    no_vncproxy_left(lab, vmid).await;

    // The serial console: a shell prompt that echoes what is typed.
    let (mut serial, ticket) = open_console(&room.alice, vmid, "serial").await;
    assert!(ticket.get("password").is_none(), "{ticket}");
    serial.read_until(":~# ").await;
    serial.send(b"echo hello through the hub\r").await;
    let echoed = serial.read_until("hello through the hub\r\nroot@").await;
    assert!(echoed.contains("echo hello through the hub"), "{echoed:?}");
    serial.close().await;

    // The teacher may watch alice's screen; bob may not, not even with alice's ticket.
    let (status, _) = console::ticket(&room.teacher, vmid, "vnc").await;
    assert_eq!(status, 201);
    let (status, _) = console::ticket(&room.bob, vmid, "vnc").await;
    assert_eq!(status, 404);
    let (_, alices) = console::ticket(&room.alice, vmid, "vnc").await;
    let mut stolen = console::open(&room.bob, alices["url"].as_str().unwrap(), None)
        .await
        .socket();
    assert_eq!(stolen.close_frame().await.0, 4003);
    // A stopped VM has no console to give: the page offers to start it.
    let (status, answer) = console::ticket(&room.bob, room.bob_vm, "vnc").await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not running"),
        "{answer}"
    );

    // Every session is in the audit log, with its traffic; refusals too.
    let filter = AuditFilter {
        action: Some("console.".into()),
        limit: 100,
        ..AuditFilter::default()
    };
    let entries = hub.state.db.find_audit(&filter).await.unwrap();
    let closed = entries
        .iter()
        .find(|entry| entry.action == "console.close" && entry.actor == "alice")
        .unwrap_or_else(|| panic!("{entries:?}"));
    assert_eq!(
        closed.target,
        format!("vm:{}", common::key_of(&hub.state.db, vmid).await)
    );
    assert!(closed.detail.contains("bytes to the VM"), "{closed:?}");
    assert!(
        entries
            .iter()
            .any(|entry| entry.actor == "bob" && entry.result == "denied"),
        "{entries:?}"
    );
}

#[tokio::test]
async fn tickets_are_refused_when_expired_from_another_site_or_unknown() {
    let room = classroom().await;
    let (lab, vmid) = (&room.lab, room.alice_vm);
    let db = lab.hub.hub().state.db.clone();

    // Another site's page cannot open a console, even with a valid ticket.
    let (_, ticket) = console::ticket(&room.alice, vmid, "vnc").await;
    let url = ticket["url"].as_str().unwrap();
    let opened = console::open(&room.alice, url, Some("https://evil.example")).await;
    assert!(matches!(opened, Opened::Refused(403)));
    // ... and that attempt did not spend it.
    let mut socket = console::open(&room.alice, url, None).await.socket();
    socket.read_exact(12).await;
    socket.close().await;

    // A ticket expires half a minute after it was made.
    let alice = db.user_by_name("alice").await.unwrap().unwrap();
    let old = "plc_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let hash = proxlab_hub::secrets::hash_secret(old);
    db.insert_console_ticket(
        &hash,
        alice.id,
        common::key_of(&db, vmid).await,
        "vnc",
        now_unix() - 60,
        now_unix() - 30,
    )
    .await
    .unwrap();
    let mut expired = console::open(&room.alice, &format!("/api/v1/console/{old}"), None)
        .await
        .socket();
    let (code, reason) = expired.close_frame().await;
    assert_eq!(code, 4001, "{reason}");
    assert!(reason.contains("expired"), "{reason}");
    let mut unknown = console::open(&room.alice, "/api/v1/console/plc_nope", None)
        .await
        .socket();
    assert_eq!(unknown.close_frame().await.0, 4003);
    // Without signing in, there is no socket at all.
    let anonymous = WebClient::anonymous(&lab.hub.url());
    assert!(matches!(
        console::open(&anonymous, url, None).await,
        Opened::Refused(401)
    ));
    // Garbage kinds are refused before any ticket exists.
    let (status, _) = console::ticket(&room.alice, vmid, "spice").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn sessions_end_when_an_admin_ends_them_access_is_lost_or_the_vm_stops() {
    let room = classroom().await;
    let (lab, vmid) = (&room.lab, room.alice_vm);
    let hub = lab.hub.hub();

    // An admin sees the open console and ends it.
    let (mut serial, _) = open_console(&room.alice, vmid, "serial").await;
    serial.read_until(":~# ").await;
    let open = room.admin.json("/api/v1/consoles").await;
    let sessions = open.as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{open}");
    assert_eq!(sessions[0]["username"], "alice");
    assert_eq!(sessions[0]["vmid"], vmid);
    assert_eq!(
        room.alice.api_delete("/api/v1/consoles/1").await.status(),
        StatusCode::FORBIDDEN
    );
    let id = sessions[0]["id"].as_u64().unwrap();
    let ended = room
        .admin
        .api_delete(&format!("/api/v1/consoles/{id}"))
        .await;
    assert_eq!(ended.status(), StatusCode::OK);
    let (code, reason) = serial.close_frame().await;
    assert_eq!(code, 4011);
    assert!(reason.contains("ada"), "{reason}");

    // A browser that sends more than a console message may be is cut off.
    let (mut serial, _) = open_console(&room.alice, vmid, "serial").await;
    serial.read_until(":~# ").await;
    serial.try_send(&vec![b'x'; 300 * 1024]).await;
    assert_eq!(serial.close_frame().await.0, 1009);

    // Disabling alice ends her console within a moment.
    let (mut serial, _) = open_console(&room.alice, vmid, "serial").await;
    serial.read_until(":~# ").await;
    let alice = hub.state.db.user_by_name("alice").await.unwrap().unwrap();
    admin::change_user(
        &hub.state.db,
        Actor::Operator,
        alice.id,
        UserChange::Disable,
        None,
    )
    .await
    .unwrap();
    assert_eq!(serial.close_frame().await.0, 4012);
    admin::change_user(
        &hub.state.db,
        Actor::Operator,
        alice.id,
        UserChange::Enable,
        None,
    )
    .await
    .unwrap();

    // The VM stopping closes its screen, and the page is told so.
    let (mut screen, _) = open_console(&room.teacher, vmid, "vnc").await;
    screen.read_exact(12).await;
    let node = lab.node_of(vmid);
    lab.sim.ok(&node, "qm", &["stop", &vmid.to_string()]);
    assert_eq!(screen.close_frame().await.0, 4010);
    no_vncproxy_left(lab, vmid).await;
    within("no console open", hub.state.consoles.all_closed()).await;
}

#[tokio::test]
async fn a_lost_agent_closes_the_console_and_a_restarted_hub_opens_new_ones() {
    let mut room = classroom().await;
    let vmid = room.alice_vm;

    // The hub restarting ends the session with a reason the page shows.
    let (mut serial, _) = open_console(&room.alice, vmid, "serial").await;
    serial.read_until(":~# ").await;
    let restart = room.lab.hub.stop();
    let ((code, _), ()) = tokio::join!(serial.close_frame(), restart);
    assert_eq!(code, 4014);
    room.lab.hub.restart().await;
    let hub = room.lab.hub.hub();
    within(
        "the agents back",
        hub.registry().wait_for(&room.lab.node_of(vmid), true),
    )
    .await;
    let (mut serial, _) = open_console(&room.alice, vmid, "serial").await;
    serial.read_until(":~# ").await;

    // The agent going away closes the browser's socket with a clear message.
    room.lab.kill_agents();
    let (code, reason) = serial.close_frame().await;
    assert_eq!(code, 4502, "{reason}");
}

#[tokio::test]
async fn a_browser_that_never_reads_does_not_grow_the_hubs_memory() {
    let room = classroom().await;
    let hub = room.lab.hub.hub();
    let (status, ticket) = console::ticket(&room.alice, room.alice_vm, "vnc").await;
    assert_eq!(status, 201, "{ticket}");
    // The client's own socket buffer is kept small: what piles up is then the hub's doing.
    let mut screen =
        console::open_small_buffered(&room.alice, ticket["url"].as_str().unwrap()).await;
    screen.rfb_login(ticket["password"].as_str().unwrap()).await;
    // Ask for 60 full screens (55 MB) and read none of them.
    let request = [3, 0, 0, 0, 0, 0, 2, 128, 1, 104];
    const SCREENS: usize = 60;
    const SCREEN_BYTES: u64 = 16 + 640 * 360 * 4;
    for _ in 0..SCREENS {
        screen.send(&request).await;
    }
    let session = hub
        .state
        .consoles
        .list()
        .pop()
        .expect("the console is open");
    // What the hub passed on stops growing once the buffers on the way are full.
    let held = console::until_flow_stops(&session).await;
    eprintln!("a browser that reads nothing held up after {held} bytes");
    assert!(
        held < 12 * 1024 * 1024,
        "the hub took {held} bytes for a browser that reads nothing"
    );
    // Reading again lets everything through: nothing was dropped on the way.
    for _ in 0..SCREENS {
        let header = screen.read_exact(16).await;
        assert_eq!(header[0], 0);
        screen.read_exact((SCREEN_BYTES - 16) as usize).await;
    }
    screen.close().await;
}

#[tokio::test]
async fn a_hundred_consoles_at_once_all_echo() {
    let room = classroom_with(|config| {
        config.consoles.per_user = 100;
        config.consoles.per_vm = 100;
        config.consoles.total = 100;
    })
    .await;
    let vmid = room.alice_vm;
    let sessions = (0..100).map(|n| {
        let alice = &room.alice;
        async move {
            let (mut serial, _) = open_console(alice, vmid, "serial").await;
            serial.read_until(":~# ").await;
            serial.send(format!("echo console-{n}\r").as_bytes()).await;
            serial.read_until(&format!("console-{n}\r\nroot@")).await;
            serial
        }
    });
    let open = futures_util::future::join_all(sessions).await;
    assert_eq!(room.lab.hub.hub().state.consoles.list().len(), 100);
    // The hundred-and-first is refused, with why.
    let (status, answer) = console::ticket(&room.alice, vmid, "serial").await;
    assert_eq!(status, 201, "{answer}");
    let mut refused = console::open(&room.alice, answer["url"].as_str().unwrap(), None)
        .await
        .socket();
    assert_eq!(refused.close_frame().await.0, 4029);
    for serial in open {
        serial.close().await;
    }
    within(
        "every console closed",
        room.lab.hub.hub().state.consoles.all_closed(),
    )
    .await;
}

#[tokio::test]
async fn garbage_on_the_websocket_ends_that_session_and_nothing_else() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let room = classroom().await;
    let hub = room.lab.hub.hub();
    let (_, ticket) = console::ticket(&room.alice, room.alice_vm, "serial").await;
    let (addr, token) = (
        room.lab.hub.config.http_addr,
        room.alice.bearer.clone().unwrap(),
    );
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let upgrade = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {token}\r\n\r\n",
        ticket["url"].as_str().unwrap()
    );
    tcp.write_all(upgrade.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        answer.push(byte[0]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // An unmasked frame with a reserved opcode and a length that lies: no client may send it.
    tcp.write_all(&[
        0x8b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3,
    ])
    .await
    .unwrap();
    within("the hub to hang up", async {
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest).await;
    })
    .await;
    within("no console open", hub.state.consoles.all_closed()).await;
    // Everyone else's consoles work on.
    let (mut serial, _) = open_console(&room.alice, room.alice_vm, "serial").await;
    serial.read_until(":~# ").await;
    serial.close().await;
}
