//! The portal and API through real HTTP: authorization for every route and role, CSRF,
//! sessions, login throttling, API tokens, account administration and the audit log. The
//! story runs on SQLite and, when `PROXLAB_TEST_PG` is set, on PostgreSQL.

mod common;

use common::TestHub;
use common::pg::{self, PgDatabase};
use common::web::WebClient;
use proxlab_hub::db::now_unix;
use proxlab_hub::db::states::{ClassState, ClassVmKind};
use proxlab_hub::db::users::Role;
use proxlab_hub::domain::accounts::create_user;
use proxlab_hub::secrets::hash_secret;
use proxlab_protocol::inventory::{
    DiskInfo, Inventory, IpAddress, IpSource, NicInfo, PowerState, VmInfo,
};
use reqwest::StatusCode;

/// A hub with accounts and a node's inventory (no agent: power calls reach an offline node).
struct Site {
    hub: TestHub,
    postgres: Option<PgDatabase>,
}

const ACCOUNTS: &[(&str, Role)] = &[
    ("root", Role::Admin),
    ("tina", Role::Teacher),
    ("alice", Role::Student),
    ("bob", Role::Student),
];

fn password(user: &str) -> String {
    format!("password-of-{user}")
}

fn vm(vmid: u32, template: bool) -> VmInfo {
    VmInfo {
        vmid,
        name: format!("vm{vmid}"),
        node: "pve1".into(),
        status: PowerState::Stopped,
        template,
        cores: 2,
        sockets: 1,
        memory_mib: 2048,
        disks: vec![DiskInfo {
            key: "scsi0".into(),
            volid: format!("local:{vmid}/vm-{vmid}-disk-0.qcow2"),
            size_bytes: 8 << 30,
        }],
        nics: vec![NicInfo {
            key: "net0".into(),
            model: "virtio".into(),
            mac: format!("BC:24:11:00:00:{:02X}", vmid % 256),
            bridge: Some("vmbr0".into()),
            vlan: None,
        }],
        tags: vec![],
        lock: None,
        uptime_secs: 0,
        cpu: 0.0,
        mem_bytes: 0,
        ips: vec![IpAddress {
            address: format!("10.0.0.{}", vmid % 256),
            mac: String::new(),
            source: IpSource::Neighbor,
        }],
        identity: None,
        pending: Vec::new(),
    }
}

impl Site {
    async fn start(postgres: Option<PgDatabase>) -> Self {
        let hub = TestHub::start_on(postgres.as_ref().map(|db| db.url.clone())).await;
        let db = &hub.hub().state.db;
        let mut ids = std::collections::HashMap::new();
        for (name, role) in ACCOUNTS {
            create_user(db, name, *role, Some(&password(name)))
                .await
                .unwrap();
            ids.insert(*name, db.user_by_name(name).await.unwrap().unwrap().id);
        }
        db.insert_join_token(&hash_secret("t"), None, 0, i64::MAX / 2)
            .await
            .unwrap();
        db.enroll_node(&hash_secret("t"), "pve1", "fp", now_unix())
            .await
            .unwrap();
        let inventory = Inventory {
            vms: vec![
                vm(101, false),
                vm(102, false),
                vm(103, false),
                vm(104, false),
                vm(9000, true),
            ],
            storages: vec![],
            isos: vec![],
        };
        db.replace_inventory("pve1", &inventory, now_unix())
            .await
            .unwrap();
        for (vmid, user) in [(101, "alice"), (102, "bob"), (103, "tina")] {
            db.assign_vm(common::key_of(db, vmid).await, ids[user], None, now_unix())
                .await
                .unwrap();
        }
        Self { hub, postgres }
    }

    async fn client(&self, user: &str) -> WebClient {
        WebClient::login(&self.hub.url(), user, &password(user)).await
    }

    async fn finish(mut self) {
        self.hub.stop().await;
        if let Some(database) = self.postgres {
            database.drop_database().await;
        }
    }
}

/// The sites to run the story on: SQLite, and PostgreSQL if configured.
async fn sites() -> Vec<Site> {
    let mut sites = vec![Site::start(None).await];
    if let Some(server) = pg::server_url("portal tests") {
        sites.push(Site::start(Some(PgDatabase::create(&server).await)).await);
    }
    sites
}

/// Expected statuses for anonymous, alice (student), tina (teacher) and root (admin).
type Row = (&'static str, &'static str, [u16; 4]);

/// Every route, for every kind of visitor. VM 101 is alice's, 102 bob's, 103 tina's; the node
/// is offline, so a permitted power action ends in 502 and a forbidden one never gets there.
const MATRIX: &[Row] = &[
    ("GET", "/vms", [303, 200, 200, 200]),
    ("GET", "/vms/101", [303, 200, 404, 200]),
    ("GET", "/vms/102", [303, 404, 404, 200]),
    ("GET", "/vms/103", [303, 404, 200, 200]),
    ("GET", "/vms/9000", [303, 404, 404, 200]),
    ("GET", "/templates", [303, 403, 200, 200]),
    ("GET", "/profile", [303, 200, 200, 200]),
    ("GET", "/admin/nodes", [303, 403, 403, 200]),
    ("GET", "/admin/join-tokens", [303, 403, 403, 200]),
    ("GET", "/admin/users", [303, 403, 403, 200]),
    ("GET", "/admin/audit", [303, 403, 403, 200]),
    ("GET", "/admin/plugins/guide", [303, 403, 403, 200]),
    ("POST", "/vms/101/start", [303, 303, 404, 303]),
    ("POST", "/vms/102/start", [303, 404, 404, 303]),
    ("POST", "/admin/join-tokens", [303, 403, 403, 200]),
    ("POST", "/admin/users", [303, 403, 403, 200]),
    ("POST", "/admin/nodes/ghost/revoke", [303, 403, 403, 303]),
    ("GET", "/api/v1/session", [401, 200, 200, 200]),
    ("GET", "/api/v1/vms", [401, 200, 200, 200]),
    ("GET", "/api/v1/vms/101", [401, 200, 404, 200]),
    ("GET", "/api/v1/vms/102", [401, 404, 404, 200]),
    ("GET", "/api/v1/vms/103", [401, 404, 200, 200]),
    ("GET", "/api/v1/nodes", [401, 403, 403, 200]),
    ("GET", "/api/v1/templates", [401, 403, 200, 200]),
    ("POST", "/api/v1/vms/101/start", [401, 502, 404, 502]),
    ("POST", "/api/v1/vms/102/start", [401, 404, 404, 502]),
    ("POST", "/api/v1/vms/103/stop", [401, 404, 502, 502]),
    ("POST", "/api/v1/vms/101/reboot", [401, 404, 404, 404]),
    ("GET", "/classes", [303, 200, 200, 200]),
    ("POST", "/classes/1/delete", [303, 404, 404, 404]),
    ("GET", "/join/pli_unknown", [400, 400, 400, 400]),
    ("GET", "/api/v1/classes", [401, 200, 200, 200]),
    ("POST", "/api/v1/classes", [401, 403, 400, 400]),
    ("GET", "/api/v1/classes/1", [401, 404, 404, 404]),
    ("POST", "/api/v1/join/pli_unknown", [401, 400, 400, 400]),
    ("GET", "/api/v1/jobs/1", [401, 404, 404, 404]),
    ("POST", "/vms/102/assign", [303, 404, 404, 303]),
    ("POST", "/api/v1/vms/102/unassign", [401, 404, 404, 200]),
    ("GET", "/vms/101/console", [303, 200, 404, 200]),
    ("GET", "/vms/102/console", [303, 404, 404, 200]),
    ("GET", "/admin/consoles", [303, 403, 403, 200]),
    ("POST", "/admin/consoles/1/end", [303, 403, 403, 303]),
    // The VMs are stopped: whoever may open a console is told so.
    ("POST", "/api/v1/vms/101/console", [401, 409, 404, 409]),
    ("POST", "/api/v1/vms/102/console", [401, 404, 404, 409]),
    ("GET", "/api/v1/consoles", [401, 403, 403, 200]),
    ("GET", "/api/v1/console/plc_unknown", [401, 400, 400, 400]),
    // This site forwards no ports: whoever may ask is told so.
    ("POST", "/api/v1/vms/101/forwards", [401, 409, 404, 409]),
    ("GET", "/api/v1/vms/101/forwards", [401, 200, 404, 200]),
    ("GET", "/api/v1/vms/102/forwards", [401, 404, 404, 200]),
    (
        "GET",
        "/api/v1/vms/101/forwards/40000/connect.rdp",
        [401, 404, 404, 404],
    ),
    ("GET", "/api/v1/classes/1/access", [401, 404, 404, 404]),
    ("POST", "/classes/1/access", [303, 404, 404, 404]),
    ("GET", "/api/v1/classes/1/schedule", [401, 404, 404, 404]),
    (
        "POST",
        "/api/v1/classes/1/schedule/rules",
        [401, 404, 404, 404],
    ),
    (
        "DELETE",
        "/api/v1/classes/1/schedule/rules/1",
        [401, 404, 404, 404],
    ),
    ("POST", "/classes/1/schedule", [303, 404, 404, 404]),
    ("POST", "/classes/1/schedule/1/delete", [303, 404, 404, 404]),
    ("GET", "/api/v1/classes/1/idle", [401, 404, 404, 404]),
    ("PUT", "/api/v1/classes/1/idle", [401, 404, 404, 404]),
    ("POST", "/classes/1/idle", [303, 404, 404, 404]),
    // The node is offline: whoever may use the VM is told it cannot be reached.
    ("POST", "/api/v1/vms/101/still-here", [401, 502, 404, 502]),
    ("POST", "/api/v1/vms/102/still-here", [401, 404, 404, 502]),
    ("GET", "/api/v1/classes/1/quota", [401, 404, 404, 404]),
    ("PUT", "/api/v1/classes/1/quota", [401, 404, 404, 404]),
    (
        "POST",
        "/api/v1/classes/1/quota/hours",
        [401, 404, 404, 404],
    ),
    ("POST", "/classes/1/quota", [303, 404, 404, 404]),
    ("POST", "/classes/1/quota/hours", [303, 404, 404, 404]),
    ("GET", "/api/v1/classes/1/usage", [401, 404, 404, 404]),
    ("GET", "/classes/1/usage", [303, 404, 404, 404]),
    ("GET", "/classes/1/usage.csv", [303, 404, 404, 404]),
    ("GET", "/api/v1/usage", [401, 403, 403, 200]),
    ("GET", "/admin/usage", [303, 403, 403, 200]),
    ("GET", "/admin/usage.csv", [303, 403, 403, 200]),
];

async fn status_of(client: &WebClient, method: &str, path: &str, n: usize) -> u16 {
    let response = match (method, path) {
        ("GET", _) => client.get(path).await,
        ("POST", "/admin/join-tokens") => client.post_form(path, &[("ttl", "1h")]).await,
        ("POST", "/admin/users") => {
            let name = format!("made{n}");
            client
                .post_form(path, &[("username", &name), ("role", "student")])
                .await
        }
        ("POST", _) if path.starts_with("/api/") && path.ends_with("/console") => {
            let body = serde_json::json!({"kind": "vnc"});
            client.api_post_json(path, &body).await
        }
        ("POST", _) if path.starts_with("/api/") && path.ends_with("/forwards") => {
            let body = serde_json::json!({"service": "ssh"});
            client.api_post_json(path, &body).await
        }
        ("POST", _) if path.starts_with("/api/") && path.ends_with("/schedule/rules") => {
            let body = serde_json::json!({"repeat": "weekly", "date": "2026-12-07", "weekdays": ["mon"], "start": "08:00"});
            client.api_post_json(path, &body).await
        }
        ("POST", _) if path.starts_with("/api/") && path.ends_with("/quota/hours") => {
            let body = serde_json::json!({"hours": 1});
            client.api_post_json(path, &body).await
        }
        ("POST", _) if path.starts_with("/api/") => client.api_post(path).await,
        ("DELETE", _) => client.api_delete(path).await,
        ("PUT", _) if path.ends_with("/quota") => {
            let body = serde_json::json!({"hours": 10});
            client.api_put_json(path, &body).await
        }
        ("PUT", _) => {
            let body = serde_json::json!({"idle_guest_minutes": 30});
            client.api_put_json(path, &body).await
        }
        ("POST", _) => client.post_form(path, &[]).await,
        _ => unreachable!(),
    };
    response.status().as_u16()
}

#[tokio::test]
async fn every_route_checks_who_is_asking() {
    for site in sites().await {
        let visitors = [
            WebClient::anonymous(&site.hub.url()),
            site.client("alice").await,
            site.client("tina").await,
            site.client("root").await,
        ];
        let mut failures = Vec::new();
        for (n, (method, path, expected)) in MATRIX.iter().enumerate() {
            for (who, client) in visitors.iter().enumerate() {
                let status = status_of(client, method, path, n * 4 + who).await;
                if status != expected[who] {
                    failures.push(format!(
                        "{method} {path} as {}: {status}, expected {}",
                        ["anonymous", "alice", "tina", "root"][who],
                        expected[who]
                    ));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        site.finish().await;
    }
}

fn vmids(list: &serde_json::Value) -> Vec<u64> {
    list["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| vm["vmid"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn lists_hold_only_what_each_user_may_see() {
    for site in sites().await {
        let alice = site.client("alice").await;
        let tina = site.client("tina").await;
        let root = site.client("root").await;
        assert_eq!(vmids(&alice.json("/api/v1/vms").await), [101]);
        assert_eq!(vmids(&tina.json("/api/v1/vms").await), [103]);
        assert_eq!(vmids(&root.json("/api/v1/vms").await), [101, 102, 103, 104]);
        assert_eq!(
            vmids(
                &root
                    .json("/api/v1/vms?name=VM10&status=stopped&node=pve1")
                    .await
            ),
            [101, 102, 103, 104]
        );
        assert!(vmids(&root.json("/api/v1/vms?node=elsewhere").await).is_empty());
        let page = root.json("/api/v1/vms?limit=2&offset=1").await;
        assert_eq!(vmids(&page), [102, 103]);
        assert_eq!(
            (page["total"].as_u64(), page["limit"].as_u64()),
            (Some(4), Some(2))
        );
        let html = root
            .get("/vms?limit=2&offset=2")
            .await
            .text()
            .await
            .unwrap();
        assert!(
            html.contains("3–4 of 4") && html.contains("rel=\"prev\""),
            "{html}"
        );
        assert!(!html.contains("rel=\"next\""));
        let page = alice.get("/vms").await.text().await.unwrap();
        assert!(page.contains("vm101") && !page.contains("vm102"), "{page}");
        let templates = tina.json("/api/v1/templates").await;
        assert_eq!(templates["templates"][0]["vmid"], 9000);
        assert_eq!(templates["templates"][0]["disks"][0]["size"], "8 GiB");
        let vm = alice.json("/api/v1/vms/101").await;
        // Stopped: the address it had is not shown (another VM may have it by now).
        assert_eq!(vm["ip"], serde_json::Value::Null);
        assert_eq!(vm["actions"], serde_json::json!(["start"]));
        assert_eq!(vm["assignee"], "alice");
        site.finish().await;
    }
}

/// A request body with its content type.
type Body = Option<(&'static str, String)>;

#[tokio::test]
async fn every_api_error_has_the_json_shape_and_bad_input_is_refused() {
    use reqwest::Method;
    let site = Site::start(None).await;
    let tina = site.client("tina").await;
    let class = proxlab_hub::db::classes::NewClass {
        name: "Shapes".into(),
        seats: 1,
        ..Default::default()
    };
    let db = &site.hub.hub().state.db;
    let tina_id = db.user_by_name("tina").await.unwrap().unwrap().id;
    let class_id = db.insert_class(&class, tina_id, 0).await.unwrap();
    let send = |method: Method, path: String, body: Body| {
        let tina = &tina;
        async move {
            let mut request = tina
                .client
                .request(method, format!("{}{path}", tina.base))
                .header("x-csrf-token", &tina.csrf);
            if let Some((content_type, body)) = body {
                request = request.header("content-type", content_type).body(body);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, text)
        }
    };
    let json = |body: &str| Some(("application/json", body.to_owned()));
    let cases: Vec<(Method, String, Body, u16, &str)> = vec![
        (
            Method::GET,
            "/api/v1/classes/abc".into(),
            None,
            400,
            "bad-request",
        ),
        (
            Method::GET,
            "/api/v1/jobs/abc".into(),
            None,
            400,
            "bad-request",
        ),
        (
            Method::GET,
            "/api/v1/classes/99999999999999999999".into(),
            None,
            400,
            "bad-request",
        ),
        (
            Method::GET,
            "/api/v1/vms?offset=-1".into(),
            None,
            400,
            "bad-request",
        ),
        (
            Method::GET,
            "/api/v1/vms?status=AAA".into(),
            None,
            400,
            "bad-request",
        ),
        (
            Method::GET,
            "/api/v1/vms?status=running&status=stopped".into(),
            None,
            400,
            "bad-request",
        ),
        (
            Method::GET,
            "/api/v1/vms?limit=0".into(),
            None,
            400,
            "bad-request",
        ),
        (
            Method::GET,
            "/api/v1/vms?limit=5000".into(),
            None,
            400,
            "bad-request",
        ),
        (
            Method::DELETE,
            "/api/v1/vms".into(),
            None,
            405,
            "method-not-allowed",
        ),
        (
            Method::GET,
            "/api/v1/nothing-here".into(),
            None,
            404,
            "not-found",
        ),
        (
            Method::POST,
            format!("/api/v1/classes/{class_id}/invite"),
            json("[7, 5]"),
            400,
            "bad-request",
        ),
        (
            Method::POST,
            format!("/api/v1/classes/{class_id}/invite"),
            Some(("text/plain", "days=3".into())),
            400,
            "bad-request",
        ),
        (
            Method::POST,
            format!("/api/v1/classes/{class_id}/invite"),
            json("{\"expires_in_days\": \"soon\"}"),
            400,
            "bad-request",
        ),
        (
            Method::POST,
            format!("/api/v1/classes/{class_id}/capacity"),
            json("[3]"),
            400,
            "bad-request",
        ),
        (
            Method::PUT,
            format!("/api/v1/classes/{class_id}/plugins"),
            json("{\"plugins\": [], \"extra\": 1}"),
            400,
            "bad-request",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got, text) = send(method.clone(), path.clone(), body).await;
        let parsed: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text:?}"));
        assert_eq!(got, status, "{method} {path}: {text}");
        assert_eq!(parsed["error"]["code"], code, "{method} {path}: {text}");
        assert!(
            !parsed["error"]["message"].as_str().unwrap().is_empty(),
            "{method} {path}: {text}"
        );
    }
    // An empty body is still fine where the body is optional.
    let (status, text) = send(
        Method::POST,
        format!("/api/v1/classes/{class_id}/invite"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    site.finish().await;
}

#[tokio::test]
async fn deleting_a_class_in_the_portal_takes_its_name_typed_again() {
    let site = Site::start(None).await;
    let db = &site.hub.hub().state.db;
    let tina = site.client("tina").await;
    let tina_id = db.user_by_name("tina").await.unwrap().unwrap().id;
    let class = proxlab_hub::db::classes::NewClass {
        name: "Networks 101".into(),
        seats: 1,
        ..Default::default()
    };
    let class_id = db.insert_class(&class, tina_id, 0).await.unwrap();
    let path = format!("/classes/{class_id}/delete");
    for wrong in ["", "networks 101", "Networks"] {
        tina.post_form(&path, &[("confirm_name", wrong)]).await;
        assert_eq!(
            db.class(class_id).await.unwrap().unwrap().state,
            ClassState::Active,
            "{wrong:?}"
        );
    }
    let deleted = tina
        .post_form(&path, &[("confirm_name", "Networks 101")])
        .await;
    assert_eq!(deleted.headers()["location"], "/classes");
    assert_ne!(
        db.class(class_id).await.unwrap().map(|class| class.state),
        Some(ClassState::Active)
    );
    site.finish().await;
}

#[tokio::test]
async fn a_running_vm_without_an_address_is_starting_for_a_while_then_says_why() {
    use proxlab_protocol::inventory::InventoryDelta;
    let site = Site::start(None).await;
    let db = &site.hub.hub().state.db;
    let running = |vmid| VmInfo {
        status: PowerState::Running,
        ips: vec![],
        ..vm(vmid, false)
    };
    let now = now_unix();
    // 101 started ten minutes ago, 102 just now; neither has an address.
    for (vmid, at) in [(101, now - 600), (102, now)] {
        let delta = InventoryDelta {
            upserted: vec![running(vmid)],
            ..InventoryDelta::default()
        };
        db.apply_delta("pve1", &delta, at).await.unwrap();
    }
    let root = site.client("root").await;
    let long = root.json("/api/v1/vms/101").await;
    assert_eq!(long["display_status"], "running", "{long}");
    assert!(
        long["ip_note"]
            .as_str()
            .unwrap()
            .contains("QEMU guest agent"),
        "{long}"
    );
    let fresh = root.json("/api/v1/vms/102").await;
    assert_eq!(fresh["display_status"], "starting", "{fresh}");
    assert_eq!(fresh["ip_wait_until"], now + 180, "{fresh}");
    let page = root.get("/vms").await.text().await.unwrap();
    assert!(
        page.contains("IP unknown: install the QEMU guest agent"),
        "{page}"
    );
    assert!(page.contains(&format!("data-ip-wait-until=\"{}\"", now + 180)));
    site.finish().await;
}

#[tokio::test]
async fn changes_need_the_csrf_token_unless_a_bearer_token_is_used() {
    let site = Site::start(None).await;
    let alice = site.client("alice").await;
    let response = alice.post_form_without_csrf("/vms/101/start", &[]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let mut wrong = site.client("alice").await;
    wrong.csrf = "plc_wrong".into();
    assert_eq!(
        wrong.api_post("/api/v1/vms/101/start").await.status(),
        StatusCode::FORBIDDEN
    );
    let body: serde_json::Value = wrong
        .api_post("/api/v1/vms/101/start")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["error"]["code"], "csrf");
    // Login itself needs the double-submit token.
    let anonymous = WebClient::anonymous(&site.hub.url());
    let response = anonymous
        .post_form_without_csrf(
            "/login",
            &[("username", "alice"), ("password", &password("alice"))],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // A bearer token carries no ambient authority, so it needs no CSRF token.
    let token = site
        .hub
        .hub()
        .state
        .auth
        .create_api_token(
            &proxlab_hub::domain::viewer::Viewer::from(
                &site
                    .hub
                    .hub()
                    .state
                    .db
                    .user_by_name("alice")
                    .await
                    .unwrap()
                    .unwrap(),
            ),
            "script",
        )
        .await
        .unwrap();
    let script = WebClient::with_token(&site.hub.url(), &token);
    assert_eq!(
        script.api_post("/api/v1/vms/101/start").await.status(),
        StatusCode::BAD_GATEWAY
    );
    site.finish().await;
}

#[tokio::test]
async fn sessions_use_safe_cookies_and_end_at_logout() {
    let site = Site::start(None).await;
    let client = WebClient::anonymous(&site.hub.url());
    let response = client.try_login("alice", &password("alice")).await;
    let cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect();
    let session = cookies
        .iter()
        .find(|cookie| cookie.starts_with("proxlab_session=pls_"))
        .expect("a session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    assert!(!session.contains("Secure"), "no TLS configured: {session}");
    // The database holds only the hash of the session id.
    let id = session
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("proxlab_session=");
    let db = &site.hub.hub().state.db;
    assert!(db.session(id).await.unwrap().is_none());
    assert!(db.session(&hash_secret(id)).await.unwrap().is_some());
    assert_eq!(client.get("/vms").await.status(), StatusCode::OK);
    let page = client.get("/vms").await.text().await.unwrap();
    let csrf = common::web::csrf_field(&page);
    let response = client
        .client
        .post(format!("{}/logout", site.hub.url()))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(db.session(&hash_secret(id)).await.unwrap().is_none());
    // The old cookie no longer works, even if a client kept it.
    let replay = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/api/v1/session", site.hub.url()))
        .header("cookie", format!("proxlab_session={id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    // Pages send anonymous visitors to the login page and back.
    let response = client.get("/vms/101").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/login?next=/vms/101");
    site.finish().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_client_is_the_hop_the_proxy_added() {
    let hub = TestHub::start_configured(None, |config| {
        config.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let db = &hub.hub().state.db;
    create_user(db, "alice", Role::Student, Some(&password("alice")))
        .await
        .unwrap();
    // A login as the proxy forwards it: the client's own X-Forwarded-For, then the address
    // the proxy saw.
    let login = |forwarded: &'static str, username: &str, secret: String| {
        let username = username.to_owned();
        let client = WebClient::anonymous(&hub.url());
        async move {
            let page = client.get("/login").await.text().await.unwrap();
            client
                .client
                .post(format!("{}/login", client.base))
                .header("x-forwarded-for", forwarded)
                .form(&[
                    ("csrf", common::web::csrf_field(&page).as_str()),
                    ("username", username.as_str()),
                    ("password", secret.as_str()),
                ])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // 20 failures from one client (on different accounts) lock out that address only.
    for n in 0..20 {
        login("203.0.113.7", &format!("guess{n}"), "wrong-password".into()).await;
    }
    assert_eq!(
        login("203.0.113.7", "alice", password("alice")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Writing another address in front does not escape it: the proxy's entry counts.
    assert_eq!(
        login("198.51.100.9, 203.0.113.7", "alice", password("alice")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Everyone else behind the same proxy signs in.
    assert_eq!(
        login("198.51.100.9", "alice", password("alice")).await,
        StatusCode::SEE_OTHER
    );
    let entries = db
        .find_audit(&proxlab_hub::db::audit::AuditFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        entries
            .iter()
            .any(|entry| entry.detail.contains("203.0.113.7")),
        "the audit log has the client's address"
    );
    assert!(
        !entries
            .iter()
            .any(|entry| entry.detail.contains("127.0.0.1")),
        "not the proxy's"
    );
    let mut hub = hub;
    hub.stop().await;
}

#[tokio::test]
async fn logins_are_throttled_per_account_and_audited() {
    let site = Site::start(None).await;
    let client = WebClient::anonymous(&site.hub.url());
    let wrong = client.try_login("alice", "not her password").await;
    let wrong_status = wrong.status();
    assert_eq!(
        wrong_status,
        StatusCode::BAD_REQUEST,
        "{}",
        wrong.text().await.unwrap()
    );
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("wrong username or password")
    );
    let unknown = client.try_login("nobody", "whatever-password").await;
    assert!(
        unknown
            .text()
            .await
            .unwrap()
            .contains("wrong username or password")
    );
    for _ in 0..4 {
        client.try_login("alice", "still wrong").await;
    }
    // Now even the right password is refused until the window passes.
    let locked = client.try_login("alice", &password("alice")).await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(locked.headers().contains_key("retry-after"));
    // Another account is unaffected.
    assert_eq!(
        client.try_login("bob", &password("bob")).await.status(),
        StatusCode::SEE_OTHER
    );
    let root = site.client("root").await;
    let audit = root
        .get("/admin/audit?target=user:alice&action=auth.")
        .await
        .text()
        .await
        .unwrap();
    assert!(audit.matches("result-denied").count() >= 6, "{audit}");
    assert!(audit.contains("throttled"), "{audit}");
    site.finish().await;
}

#[tokio::test]
async fn api_tokens_are_shown_once_stored_hashed_and_revocable() {
    let site = Site::start(None).await;
    let alice = site.client("alice").await;
    let page = alice
        .post_form("/profile/tokens", &[("name", "grading")])
        .await
        .text()
        .await
        .unwrap();
    let start = page.find("plt_").expect("the new token is shown");
    let token = page[start..start + 68].to_owned();
    let script = WebClient::with_token(&site.hub.url(), &token);
    let session = script.json("/api/v1/session").await;
    assert_eq!(session["user"]["username"], "alice");
    assert_eq!(session["csrf_token"], "");
    assert_eq!(vmids(&script.json("/api/v1/vms").await), [101]);
    let db = &site.hub.hub().state.db;
    let alice_id = db.user_by_name("alice").await.unwrap().unwrap().id;
    let tokens = db.list_api_tokens(alice_id).await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].last_used_at.is_some());
    assert!(
        db.api_token_user(&token, now_unix())
            .await
            .unwrap()
            .is_none(),
        "never stored in clear"
    );
    // The profile lists it without the secret.
    let profile = alice.get("/profile").await.text().await.unwrap();
    assert!(profile.contains("grading") && !profile.contains(&token));
    // Bob cannot revoke it; alice can.
    let bob = site.client("bob").await;
    bob.post_form(&format!("/profile/tokens/{}/revoke", tokens[0].id), &[])
        .await;
    assert_eq!(script.get("/api/v1/session").await.status(), StatusCode::OK);
    alice
        .post_form(&format!("/profile/tokens/{}/revoke", tokens[0].id), &[])
        .await;
    let refused = script.get("/api/v1/session").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");
    site.finish().await;
}

/// Makes a personal API token on the profile page and returns it.
async fn make_token(client: &WebClient, name: &str) -> String {
    let page = client
        .post_form("/profile/tokens", &[("name", name)])
        .await
        .text()
        .await
        .unwrap();
    let start = page.find("plt_").expect("the new token is shown");
    page[start..start + 68].to_owned()
}

#[tokio::test]
async fn password_changes_end_other_sessions_and_api_tokens() {
    let site = Site::start(None).await;
    let laptop = site.client("bob").await;
    let phone = site.client("bob").await;
    let script = WebClient::with_token(&site.hub.url(), &make_token(&laptop, "script").await);
    assert_eq!(script.get("/api/v1/session").await.status(), StatusCode::OK);
    let wrong = laptop
        .post_form(
            "/profile/password",
            &[
                ("current", "nope-nope-nope"),
                ("new", "a-new-password"),
                ("confirm", "a-new-password"),
            ],
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::SEE_OTHER);
    assert_eq!(phone.get("/api/v1/session").await.status(), StatusCode::OK);
    laptop
        .post_form(
            "/profile/password",
            &[
                ("current", &password("bob")),
                ("new", "a-new-password"),
                ("confirm", "a-new-password"),
            ],
        )
        .await;
    assert_eq!(laptop.get("/api/v1/session").await.status(), StatusCode::OK);
    for gone in [&phone, &script] {
        assert_eq!(
            gone.get("/api/v1/session").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let client = WebClient::anonymous(&site.hub.url());
    assert_eq!(
        client.try_login("bob", &password("bob")).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        client.try_login("bob", "a-new-password").await.status(),
        StatusCode::SEE_OTHER
    );
    // An admin's reset revokes the tokens made since, too.
    let script = WebClient::with_token(&site.hub.url(), &make_token(&laptop, "again").await);
    assert_eq!(script.get("/api/v1/session").await.status(), StatusCode::OK);
    let bob_id = site
        .hub
        .hub()
        .state
        .db
        .user_by_name("bob")
        .await
        .unwrap()
        .unwrap()
        .id;
    proxlab_hub::domain::accounts::reset_password(&site.hub.hub().state.db, bob_id)
        .await
        .unwrap();
    assert_eq!(
        script.get("/api/v1/session").await.status(),
        StatusCode::UNAUTHORIZED
    );
    site.finish().await;
}

#[tokio::test]
async fn admins_manage_accounts_and_the_last_admin_stays() {
    let site = Site::start(None).await;
    let root = site.client("root").await;
    let page = root
        .post_form(
            "/admin/users",
            &[("username", "carol"), ("role", "teacher")],
        )
        .await
        .text()
        .await
        .unwrap();
    let marker = "<code class=\"secret\" data-copy>";
    let start = page.find(marker).expect("the password is shown") + marker.len();
    let carol_password = page[start..start + 20].to_owned();
    let carol = WebClient::login(&site.hub.url(), "carol", &carol_password).await;
    assert_eq!(carol.get("/templates").await.status(), StatusCode::OK);
    let db = &site.hub.hub().state.db;
    let carol_id = db.user_by_name("carol").await.unwrap().unwrap().id;
    root.post_form(
        &format!("/admin/users/{carol_id}/role"),
        &[("role", "student")],
    )
    .await;
    assert_eq!(
        db.user_by_id(carol_id).await.unwrap().unwrap().role,
        Role::Student
    );
    root.post_form(&format!("/admin/users/{carol_id}/disable"), &[])
        .await;
    assert_eq!(
        carol.get("/api/v1/session").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let client = WebClient::anonymous(&site.hub.url());
    let refused = client.try_login("carol", &carol_password).await;
    assert!(refused.text().await.unwrap().contains("disabled"));
    // The hub's generated admin and root are the admins; demoting both leaves one.
    let admin_id = db.user_by_name("admin").await.unwrap().unwrap().id;
    root.post_form(
        &format!("/admin/users/{admin_id}/role"),
        &[("role", "teacher")],
    )
    .await;
    let root_id = db.user_by_name("root").await.unwrap().unwrap().id;
    let response = root
        .post_form(
            &format!("/admin/users/{root_id}/role"),
            &[("role", "teacher")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        db.user_by_id(root_id).await.unwrap().unwrap().role,
        Role::Admin
    );
    assert_eq!(db.count_admins().await.unwrap(), 1);
    let audit = root
        .get("/admin/audit?action=user.")
        .await
        .text()
        .await
        .unwrap();
    for action in ["user.create", "user.role", "user.disable"] {
        assert!(audit.contains(action), "{action} missing from {audit}");
    }
    assert!(audit.contains("last admin"), "{audit}");
    site.finish().await;
}

#[tokio::test]
async fn denied_and_failed_actions_are_audited() {
    let site = Site::start(None).await;
    let alice = site.client("alice").await;
    alice.api_post("/api/v1/vms/102/start").await;
    let response = alice.api_post("/api/v1/vms/101/start").await;
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "node-error");
    // Students learn what happened, in a sentence, but not the node's name or words.
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("offline") && !message.contains("pve1"),
        "students do not see node details: {message}"
    );
    assert!(body["error"].get("detail").is_none(), "{body}");
    let root = site.client("root").await;
    let body: serde_json::Value = root
        .api_post("/api/v1/vms/101/start")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("offline"),
        "{body}"
    );
    // Staff also get the details.
    assert!(
        body["error"]["detail"].as_str().unwrap().contains("pve1"),
        "{body}"
    );
    let entries = site
        .hub
        .hub()
        .state
        .db
        .find_audit(&proxlab_hub::db::audit::AuditFilter {
            action: Some("vm.start".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let summary: Vec<(String, String, String)> = entries
        .iter()
        .map(|entry| {
            (
                entry.actor.clone(),
                entry.target.clone(),
                entry.result.clone(),
            )
        })
        .collect();
    let target = |key: proxlab_hub::vm_key::VmKey| key.audit_target();
    let (vm101, vm102) = (
        target(common::key_of(&site.hub.hub().state.db, 101).await),
        target(common::key_of(&site.hub.hub().state.db, 102).await),
    );
    assert_eq!(
        summary,
        [
            ("root".into(), vm101.clone(), "failed".into()),
            ("alice".into(), vm101, "failed".into()),
            ("alice".into(), vm102, "denied".into()),
        ]
    );
    site.finish().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_api_route() {
    let site = Site::start(None).await;
    let anonymous = WebClient::anonymous(&site.hub.url());
    let document = anonymous.json("/api/v1/openapi.json").await;
    assert_eq!(document["openapi"], "3.1.0");
    let mut paths: Vec<&str> = document["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/classes",
            "/classes/adopt",
            "/classes/{id}",
            "/classes/{id}/access",
            "/classes/{id}/assistants",
            "/classes/{id}/assistants/{username}",
            "/classes/{id}/bulk/{action}",
            "/classes/{id}/capacity",
            "/classes/{id}/hardware",
            "/classes/{id}/idle",
            "/classes/{id}/invite",
            "/classes/{id}/owners",
            "/classes/{id}/owners/{username}",
            "/classes/{id}/plugins",
            "/classes/{id}/plugins/{plugin}/settings",
            "/classes/{id}/quota",
            "/classes/{id}/quota/hours",
            "/classes/{id}/remove-vms",
            "/classes/{id}/roster",
            "/classes/{id}/roster/group",
            "/classes/{id}/schedule",
            "/classes/{id}/schedule/rules",
            "/classes/{id}/schedule/rules/{rule}",
            "/classes/{id}/students/{username}",
            "/classes/{id}/tasks/{task}",
            "/classes/{id}/usage",
            "/classes/{id}/versions",
            "/classes/{id}/versions/keep",
            "/classes/{id}/versions/{number}/rollback",
            "/console/{ticket}",
            "/consoles",
            "/consoles/{id}",
            "/events",
            "/events/catch-up",
            "/jobs/{id}",
            "/join/{token}",
            "/nodes",
            "/openapi.json",
            "/plugins",
            "/plugins/{id}",
            "/plugins/{id}/scope",
            "/plugins/{id}/settings",
            "/session",
            "/templates",
            "/templates/builds",
            "/templates/builds/{vmid}/convert",
            "/usage",
            "/vms",
            "/vms/{vmid}",
            "/vms/{vmid}/assign",
            "/vms/{vmid}/console",
            "/vms/{vmid}/forwards",
            "/vms/{vmid}/forwards/{port}/connect.rdp",
            "/vms/{vmid}/reset",
            "/vms/{vmid}/shutdown",
            "/vms/{vmid}/start",
            "/vms/{vmid}/still-here",
            "/vms/{vmid}/stop",
            "/vms/{vmid}/unassign",
        ]
    );
    let root = site.client("root").await;
    for path in [
        "/api/v1/session",
        "/api/v1/vms",
        "/api/v1/nodes",
        "/api/v1/templates",
    ] {
        assert_eq!(root.get(path).await.status(), StatusCode::OK, "{path}");
    }
    let missing = root.get("/api/v1/nothing-here").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not-found");
    site.finish().await;
}

#[tokio::test]
async fn error_pages_speak_plainly_and_a_second_sign_in_tab_keeps_the_first_working() {
    let site = Site::start(None).await;
    let visitor = WebClient::anonymous(&site.hub.url());
    let missing = visitor.get("/no/such/page").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let page = missing.text().await.unwrap();
    assert!(page.contains("<title>Not found"), "{page}");
    assert!(page.contains("There is no page at this address"), "{page}");
    assert!(page.contains("href=\"/\""), "a way on: {page}");
    let expired = visitor.get("/join/pli_gone").await.text().await.unwrap();
    assert!(!expired.contains("Bad Request"), "{expired}");
    // Two sign-in tabs in one browser: the first tab's form still works.
    let first = visitor.get("/login").await.text().await.unwrap();
    visitor.get("/login").await;
    let response = visitor
        .client
        .post(format!("{}/login", visitor.base))
        .form(&[
            ("csrf", common::web::csrf_field(&first).as_str()),
            ("username", "alice"),
            ("password", &password("alice")),
            ("next", "/vms"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    site.finish().await;
}

#[tokio::test]
async fn pages_carry_security_headers() {
    let site = Site::start(None).await;
    let response = WebClient::anonymous(&site.hub.url()).get("/login").await;
    let headers = response.headers();
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-store");
    let css = WebClient::anonymous(&site.hub.url())
        .get("/assets/app.css")
        .await;
    assert_eq!(css.status(), StatusCode::OK);
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    site.finish().await;
}

#[tokio::test]
async fn live_update_streams_end_with_the_session_token_or_account_and_follow_the_role() {
    use common::web::EventStream;
    use proxlab_hub::db::users::Role;
    let site = Site::start(None).await;
    let db = &site.hub.hub().state.db;
    // A logout ends the session's stream.
    let alice = site.client("alice").await;
    let mut stream = EventStream::open(&alice, "/api/v1/events").await;
    alice.post_form("/logout", &[]).await;
    stream.ended().await;
    // A revoked token ends its stream; disabling the account ends the session's.
    let bob = site.client("bob").await;
    let script = WebClient::with_token(&site.hub.url(), &make_token(&bob, "feed").await);
    let mut by_token = EventStream::open(&script, "/api/v1/events").await;
    let mut by_session = EventStream::open(&bob, "/api/v1/events").await;
    let bob_id = db.user_by_name("bob").await.unwrap().unwrap().id;
    let token_id = db.list_api_tokens(bob_id).await.unwrap()[0].id;
    db.revoke_api_token(bob_id, token_id, now_unix())
        .await
        .unwrap();
    by_token.ended().await;
    proxlab_hub::domain::accounts::set_disabled(db, bob_id, true)
        .await
        .unwrap();
    by_session.ended().await;
    // A demoted admin's stream is told to reload and filters by the new role.
    let ada_password = "ada-long-password";
    create_user(db, "ada", Role::Admin, Some(ada_password))
        .await
        .unwrap();
    let ada = WebClient::login(&site.hub.url(), "ada", ada_password).await;
    let mut stream = EventStream::open(&ada, "/api/v1/events").await;
    let ada_id = db.user_by_name("ada").await.unwrap().unwrap().id;
    proxlab_hub::domain::accounts::change_role(db, ada_id, Role::Student)
        .await
        .unwrap();
    stream
        .until("a resync", |_, _| {}, |name, _| name == "resync")
        .await;
    site.finish().await;
}

#[tokio::test]
async fn admins_see_a_node_go_offline_live() {
    use common::web::EventStream;
    let hub = TestHub::start().await;
    let db = &hub.hub().state.db;
    create_user(db, "root", Role::Admin, Some(&password("root")))
        .await
        .unwrap();
    let root = WebClient::login(&hub.url(), "root", &password("root")).await;
    let mut stream = EventStream::open(&root, "/api/v1/events").await;
    let mut agent = hub.online_agent("pve1").await;
    let node_is = |online: bool| {
        move |name: &str, data: &serde_json::Value| {
            name == "node" && data["name"] == "pve1" && data["online"] == online
        }
    };
    stream.until("pve1 online", |_, _| {}, node_is(true)).await;
    // The agent stops (as on a node's shutdown): it closes its connection on the way out.
    let pid = agent.id().unwrap().to_string();
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(stopped.success());
    stream
        .until("pve1 offline", |_, _| {}, node_is(false))
        .await;
    let _ = agent.wait().await;
    let mut hub = hub;
    hub.stop().await;
}

#[tokio::test]
async fn sign_in_never_sends_anyone_off_site_and_api_answers_are_not_cached() {
    let site = Site::start(None).await;
    let alice = site.client("alice").await;
    // Signed in, /login?next= redirects at once; signing in follows `next` too.
    for next in [
        "/%09/evil.example/x",
        "/%0a/evil.example/x",
        "/%0d%0a/evil.example",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "https://evil.example/",
        "/vms%0d%0aSet-Cookie:%20x=1",
    ] {
        let response = alice.get(&format!("/login?next={next}")).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{next}");
        assert_eq!(response.headers()["location"], "/vms", "{next}");
        let fresh = WebClient::anonymous(&site.hub.url());
        let page = fresh.get("/login").await.text().await.unwrap();
        let decoded: String = form_urlencoded::parse(format!("n={next}").as_bytes())
            .next()
            .unwrap()
            .1
            .into_owned();
        let response = fresh
            .client
            .post(format!("{}/login", fresh.base))
            .form(&[
                ("csrf", common::web::csrf_field(&page).as_str()),
                ("username", "alice"),
                ("password", &password("alice")),
                ("next", decoded.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{next}");
        assert_eq!(response.headers()["location"], "/vms", "{next}");
    }
    let kept = alice.get("/login?next=/vms/101").await;
    assert_eq!(kept.headers()["location"], "/vms/101");
    // A VM form's way back is held to the same rule.
    let back = alice
        .post_form("/vms/101/start", &[("back", "/\t/evil.example")])
        .await;
    assert_eq!(back.headers()["location"], "/vms");
    // JSON answers, errors included, are never stored by a cache.
    for path in ["/api/v1/vms", "/api/v1/vms/102", "/api/v1/session"] {
        let response = alice.get(path).await;
        assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
    }
    site.finish().await;
}

#[tokio::test]
async fn students_register_through_an_invite_only_when_an_admin_allows_it() {
    use proxlab_hub::db::classes::NewClass;
    let site = Site::start(None).await;
    let db = &site.hub.hub().state.db;
    let tina = db.user_by_name("tina").await.unwrap().unwrap().id;
    let class = db
        .insert_class(
            &NewClass {
                name: "Open day".into(),
                seats: 2,
                ..NewClass::default()
            },
            tina,
            0,
        )
        .await
        .unwrap();
    let plan = vec![(ClassVmKind::Student, "pve1".to_owned()); 2];
    let vmids = db
        .reserve_vmids(class, &plan, 20_000..=20_999, 0)
        .await
        .unwrap();
    let token = "pli_open-day-invite";
    let hash = hash_secret(token);
    let invite = |seat_limit| proxlab_hub::db::classes::NewInvite {
        hash: &hash,
        seat_limit,
        ..Default::default()
    };
    db.set_invite(class, &invite(None)).await.unwrap();
    let path = format!("/join/{token}");

    // Off by default: the link shows the sign-in form, naming the class.
    let visitor = WebClient::anonymous(&site.hub.url());
    let response = visitor.get(&path).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(page.contains("Sign in to join Open day"), "{page}");
    // Tera escapes the slashes of the path it comes back to.
    assert!(
        page.contains(&format!("name=\"next\" value=\"&#x2F;join&#x2F;{token}\"")),
        "back to the invite after: {page}"
    );
    let refused = visitor
        .post_form_without_csrf(&format!("{path}/register"), &[("username", "x")])
        .await;
    assert_eq!(
        refused.status(),
        StatusCode::FORBIDDEN,
        "no CSRF token, no registration"
    );

    let root = site.client("root").await;
    root.post_form("/admin/settings/self-registration", &[("value", "on")])
        .await;
    let page = visitor.get(&path).await.text().await.unwrap();
    assert!(page.contains("Create my account and join"), "{page}");
    // Each page carries a fresh form token, so every attempt starts from the page.
    let register = |username: &'static str, password: &'static str| {
        let (visitor, path) = (&visitor, path.clone());
        async move {
            let page = visitor.get(&path).await.text().await.unwrap();
            let csrf = common::web::csrf_field(&page);
            visitor
                .post_form_without_csrf(
                    &format!("{path}/register"),
                    &[
                        ("csrf", &csrf),
                        ("username", username),
                        ("password", password),
                        ("confirm", password),
                    ],
                )
                .await
        }
    };
    // A taken name reads like any unusable one.
    let taken = register("alice", "a-long-password").await;
    assert_eq!(taken.status(), StatusCode::BAD_REQUEST);
    let taken = taken.text().await.unwrap();
    assert!(taken.contains("cannot be used; choose another"), "{taken}");
    let short = register("newbie", "short").await;
    assert_eq!(short.status(), StatusCode::BAD_REQUEST);
    let page = visitor.get(&path).await.text().await.unwrap();
    let csrf = common::web::csrf_field(&page);
    let joined = visitor
        .post_form_without_csrf(
            &format!("{path}/register"),
            &[
                ("csrf", &csrf),
                ("username", "newbie"),
                ("password", "a-long-password"),
                ("confirm", "a-long-password"),
            ],
        )
        .await;
    assert_eq!(joined.status(), StatusCode::SEE_OTHER);
    assert_eq!(joined.headers()["location"], format!("/vms/{}", vmids[0]));
    // Signed in as the new student, who holds the VM.
    let session = visitor.json("/api/v1/session").await;
    assert_eq!(session["user"]["username"], "newbie");
    assert_eq!(session["user"]["role"], "student");
    let newbie = db.user_by_name("newbie").await.unwrap().unwrap();
    assert_eq!(db.assigned_vms(newbie.id).await.unwrap(), [vmids[0]]);
    // A wrong invite creates nothing.
    let stranger = WebClient::anonymous(&site.hub.url());
    let page = stranger.get(&path).await.text().await.unwrap();
    let csrf = common::web::csrf_field(&page);
    let wrong = stranger
        .post_form_without_csrf(
            "/join/pli_wrong/register",
            &[
                ("csrf", &csrf),
                ("username", "ghost"),
                ("password", "a-long-password"),
                ("confirm", "a-long-password"),
            ],
        )
        .await;
    let wrong_status = wrong.status();
    assert_eq!(
        wrong_status,
        StatusCode::BAD_REQUEST,
        "{}",
        wrong.text().await.unwrap()
    );
    assert!(db.user_by_name("ghost").await.unwrap().is_none());
    // A full class turns a registration away before any account exists.
    db.set_invite(class, &invite(Some(1))).await.unwrap();
    let full = register("latecomer", "a-long-password").await;
    assert_eq!(full.status(), StatusCode::CONFLICT);
    assert!(db.user_by_name("latecomer").await.unwrap().is_none());
    let audit = root
        .get("/admin/audit?action=user.register")
        .await
        .text()
        .await
        .unwrap();
    assert!(audit.contains("user:newbie"), "{audit}");
    site.finish().await;
}
