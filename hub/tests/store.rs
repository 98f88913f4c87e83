//! The link's tables, on SQLite always and on PostgreSQL when `PROXLAB_TEST_PG` holds a
//! server URL (each run gets a fresh database there).

mod common;

use common::pg::{self, PgDatabase};
use proxlab_hub::db::nodes::EnrollOutcome;
use proxlab_hub::db::states::ClassVmKind;
use proxlab_hub::db::tokens::SpendRefusal;
use proxlab_hub::db::{Backend, Db};
use proxlab_hub::secrets::hash_secret;

/// One database under test; PostgreSQL ones are dropped by [`TestDb::finish`].
struct TestDb {
    db: Db,
    /// Where it is, for a second connection pool (another hub process, say).
    url: String,
    _sqlite_dir: Option<tempfile::TempDir>,
    postgres: Option<PgDatabase>,
}

impl TestDb {
    async fn finish(self) {
        self.db.close().await;
        if let Some(database) = self.postgres {
            database.drop_database().await;
        }
    }
}

/// The databases to run against: SQLite, and PostgreSQL if configured.
async fn databases() -> Vec<TestDb> {
    let dir = tempfile::tempdir().unwrap();
    let url = Db::sqlite_url(dir.path());
    let sqlite = Db::connect(&url).await.unwrap();
    let mut dbs = vec![TestDb {
        db: sqlite,
        url,
        _sqlite_dir: Some(dir),
        postgres: None,
    }];
    if let Some(server) = pg::server_url("store tests") {
        let database = PgDatabase::create(&server).await;
        let db = Db::connect(&database.url).await.unwrap();
        assert_eq!(db.backend(), Backend::Postgres);
        dbs.push(TestDb {
            db,
            url: database.url.clone(),
            _sqlite_dir: None,
            postgres: Some(database),
        });
    }
    dbs
}

#[tokio::test]
async fn a_token_is_spent_exactly_once_with_the_enrollment() {
    for test_db in databases().await {
        let db = test_db.db.clone();
        let hash = hash_secret("plj_one");
        db.insert_join_token(&hash, None, 100, 1_000).await.unwrap();
        let first = db
            .enroll_node(&hash, "pve1", "sha256:aa", 200)
            .await
            .unwrap();
        assert_eq!(first, EnrollOutcome::Enrolled, "{:?}", db.backend());
        let second = db
            .enroll_node(&hash, "pve2", "sha256:bb", 201)
            .await
            .unwrap();
        assert_eq!(second, EnrollOutcome::TokenRefused(SpendRefusal::Spent));
        assert!(db.node_by_name("pve2").await.unwrap().is_none());
        let node = db.node_by_name("pve1").await.unwrap().unwrap();
        assert_eq!(node.cert_fingerprint, "sha256:aa");
        assert!(!node.online);
        test_db.finish().await;
    }
}

#[tokio::test]
async fn expired_revoked_unknown_and_bound_tokens_are_refused() {
    for test_db in databases().await {
        let db = test_db.db.clone();
        db.insert_join_token(&hash_secret("old"), None, 0, 50)
            .await
            .unwrap();
        let revoked = db
            .insert_join_token(&hash_secret("rev"), None, 0, 1_000)
            .await
            .unwrap();
        assert!(db.revoke_join_token(revoked, 10).await.unwrap());
        db.insert_join_token(&hash_secret("bound"), Some("pve9"), 0, 1_000)
            .await
            .unwrap();
        let cases = [
            ("old", SpendRefusal::Expired),
            ("rev", SpendRefusal::Revoked),
            ("nope", SpendRefusal::Unknown),
            ("bound", SpendRefusal::WrongNode),
        ];
        for (token, refusal) in cases {
            let outcome = db
                .enroll_node(&hash_secret(token), "pve1", "fp", 100)
                .await
                .unwrap();
            assert_eq!(
                outcome,
                EnrollOutcome::TokenRefused(refusal),
                "{token} on {:?}",
                db.backend()
            );
        }
        assert!(db.list_nodes().await.unwrap().is_empty());
        test_db.finish().await;
    }
}

#[tokio::test]
async fn concurrent_enrollments_with_one_token_enroll_one_node() {
    for test_db in databases().await {
        let db = test_db.db.clone();
        let hash = hash_secret("plj_race");
        db.insert_join_token(&hash, None, 0, i64::MAX / 2)
            .await
            .unwrap();
        let mut racers = tokio::task::JoinSet::new();
        for i in 0..8 {
            let db = db.clone();
            let hash = hash.clone();
            racers.spawn(async move { db.enroll_node(&hash, &format!("pve{i}"), "fp", 10).await });
        }
        let mut enrolled = 0;
        while let Some(outcome) = racers.join_next().await {
            match outcome.unwrap() {
                Ok(EnrollOutcome::Enrolled) => enrolled += 1,
                Ok(EnrollOutcome::TokenRefused(SpendRefusal::Spent)) => {}
                // A writer that lost the race on SQLite may see a busy database instead.
                Ok(other) => panic!("unexpected {other:?}"),
                Err(err) => eprintln!("lost the race with an error: {err}"),
            }
        }
        assert_eq!(enrolled, 1, "{:?}", db.backend());
        assert_eq!(db.list_nodes().await.unwrap().len(), 1);
        test_db.finish().await;
    }
}

#[tokio::test]
async fn revocation_and_re_enrollment_replace_the_certificate() {
    for test_db in databases().await {
        let db = test_db.db.clone();
        db.insert_join_token(&hash_secret("a"), None, 0, 1_000)
            .await
            .unwrap();
        db.insert_join_token(&hash_secret("b"), None, 0, 1_000)
            .await
            .unwrap();
        assert_eq!(
            db.enroll_node(&hash_secret("a"), "pve1", "fp-old", 1)
                .await
                .unwrap(),
            EnrollOutcome::Enrolled
        );
        // An active name cannot be taken, and the token survives the refusal.
        assert_eq!(
            db.enroll_node(&hash_secret("b"), "pve1", "fp-new", 2)
                .await
                .unwrap(),
            EnrollOutcome::NameTaken
        );
        assert!(db.revoke_node("pve1", 3).await.unwrap());
        assert!(!db.revoke_node("pve1", 4).await.unwrap(), "revoking twice");
        assert_eq!(
            db.enroll_node(&hash_secret("b"), "pve1", "fp-new", 5)
                .await
                .unwrap(),
            EnrollOutcome::Enrolled
        );
        let node = db.node_by_name("pve1").await.unwrap().unwrap();
        assert_eq!(node.cert_fingerprint, "fp-new");
        assert_eq!(node.revoked_at, None);
        test_db.finish().await;
    }
}

#[tokio::test]
async fn online_transitions_are_recorded_in_order() {
    for test_db in databases().await {
        let db = test_db.db.clone();
        db.insert_join_token(&hash_secret("t"), None, 0, 1_000)
            .await
            .unwrap();
        db.enroll_node(&hash_secret("t"), "pve1", "fp", 1)
            .await
            .unwrap();
        let lab = proxlab_protocol::ClusterIdentity {
            name: "lab".into(),
            ca_fingerprint: String::new(),
        };
        let connected = proxlab_hub::db::nodes::ConnectedAgent {
            agent_version: "0.1.0",
            remote_addr: "127.0.0.1:5",
            cluster: Some(&lab),
        };
        db.set_node_online("pve1", true, 10, "connected", Some(&connected))
            .await
            .unwrap();
        db.touch_nodes(&[("pve1".to_owned(), 15)].into())
            .await
            .unwrap();
        db.mark_all_nodes_offline(20).await.unwrap();
        let node = db.node_by_name("pve1").await.unwrap().unwrap();
        assert!(!node.online);
        assert_eq!(node.state_changed_at, Some(20));
        assert_eq!(node.agent_version.as_deref(), Some("0.1.0"));
        assert_eq!(
            node.cluster.map(|cluster| cluster.name).as_deref(),
            Some("lab")
        );
        let transitions = db.node_transitions("pve1").await.unwrap();
        let seen: Vec<(bool, i64, &str)> = transitions
            .iter()
            .map(|t| (t.online, t.at, t.reason.as_str()))
            .collect();
        assert_eq!(
            seen,
            vec![(true, 10, "connected"), (false, 20, "hub restarted")]
        );
        assert!(matches!(
            db.set_node_online("ghost", true, 1, "x", None).await,
            Err(proxlab_hub::db::DbError::NotFound)
        ));
        // Cluster ids are in VMs' addresses: reconnections do not use them up.
        let first = db.ensure_cluster(&lab, 30).await.unwrap();
        for at in 31..34 {
            db.set_node_online("pve1", true, at, "connected", Some(&connected))
                .await
                .unwrap();
        }
        let other = proxlab_protocol::ClusterIdentity {
            name: "other".into(),
            ca_fingerprint: String::new(),
        };
        assert_eq!(db.ensure_cluster(&other, 40).await.unwrap(), first + 1);
        test_db.finish().await;
    }
}

fn vm(
    vmid: u32,
    status: proxlab_protocol::inventory::PowerState,
) -> proxlab_protocol::inventory::VmInfo {
    use proxlab_protocol::inventory::{DiskInfo, IpAddress, IpSource, NicInfo, VmInfo};
    VmInfo {
        vmid,
        name: format!("vm{vmid}"),
        node: "pve1".into(),
        status,
        template: false,
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
            mac: "BC:24:11:00:00:01".into(),
            bridge: Some("vmbr0".into()),
            vlan: None,
        }],
        tags: vec!["lab".into(), "week1".into()],
        lock: None,
        uptime_secs: 0,
        cpu: 0.0,
        mem_bytes: 0,
        ips: vec![IpAddress {
            address: "10.0.0.5".into(),
            mac: "BC:24:11:00:00:01".into(),
            source: IpSource::Neighbor,
        }],
        identity: None,
        pending: Vec::new(),
    }
}

#[tokio::test]
async fn inventory_snapshots_deltas_and_metrics_are_stored() {
    use proxlab_protocol::inventory::{
        Inventory, InventoryDelta, NodeMetrics, PowerState, StorageInfo, VmLoad,
    };
    for test_db in databases().await {
        let db = test_db.db.clone();
        db.insert_join_token(&hash_secret("t"), None, 0, 1_000)
            .await
            .unwrap();
        db.enroll_node(&hash_secret("t"), "pve1", "fp", 1)
            .await
            .unwrap();
        let storage = StorageInfo {
            id: "local".into(),
            kind: "dir".into(),
            shared: false,
            active: true,
            content: vec!["images".into()],
            total_bytes: 100,
            used_bytes: 40,
            avail_bytes: 60,
        };
        let inventory = Inventory {
            vms: vec![vm(100, PowerState::Stopped), vm(101, PowerState::Stopped)],
            storages: vec![storage],
            isos: vec![],
        };
        db.replace_inventory("pve1", &inventory, 10).await.unwrap();
        let stored = db.list_vms().await.unwrap();
        assert_eq!(stored.len(), 2, "{:?}", db.backend());
        assert_eq!(stored[0].node, "pve1");
        assert_eq!(stored[0].tags, ["lab", "week1"]);
        assert_eq!(stored[0].ips[0].address, "10.0.0.5");
        assert_eq!(stored[0].disks[0].size_bytes, 8 << 30);
        assert_eq!(
            db.node_storages("pve1").await.unwrap(),
            [("local".to_owned(), "dir".to_owned(), false, 60)]
        );

        // A delta: 100 starts, 101 goes. The status change time moves only on a change.
        let delta = InventoryDelta {
            upserted: vec![vm(100, PowerState::Running)],
            removed: vec![101],
            ..InventoryDelta::default()
        };
        db.apply_delta("pve1", &delta, 20).await.unwrap();
        let running = db
            .vm(common::key_of(&db, 100).await)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (running.status, running.status_changed_at),
            (PowerState::Running, 20)
        );
        assert!(
            db.vm(common::key_of(&db, 101).await)
                .await
                .unwrap()
                .is_none()
        );
        db.apply_delta("pve1", &delta, 30).await.unwrap();
        assert_eq!(
            db.vm(common::key_of(&db, 100).await)
                .await
                .unwrap()
                .unwrap()
                .status_changed_at,
            20
        );

        let metrics = NodeMetrics {
            cpu: 0.25,
            cpu_count: 8,
            memory_total_bytes: 64,
            memory_used_bytes: 32,
            load_average: [0.5, 0.4, 0.3],
            uptime_secs: 1000,
            storages: vec![],
            vms: vec![VmLoad {
                vmid: 100,
                cpu: 0.5,
                mem_bytes: 1 << 30,
                uptime_secs: 42,
            }],
        };
        db.record_metrics("pve1", &metrics, 40).await.unwrap();
        let loaded = db
            .vm(common::key_of(&db, 100).await)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (loaded.cpu, loaded.mem_bytes, loaded.uptime_secs),
            (0.5, 1 << 30, 42)
        );

        // A new snapshot replaces everything the node had.
        db.replace_inventory(
            "pve1",
            &Inventory {
                vms: vec![vm(102, PowerState::Stopped)],
                ..Inventory::default()
            },
            50,
        )
        .await
        .unwrap();
        let vmids: Vec<u32> = db
            .list_vms()
            .await
            .unwrap()
            .iter()
            .map(|v| v.vmid)
            .collect();
        assert_eq!(vmids, [102]);
        assert!(matches!(
            db.replace_inventory("ghost", &Inventory::default(), 1)
                .await,
            Err(proxlab_hub::db::DbError::NotFound)
        ));
        test_db.finish().await;
    }
}

#[tokio::test]
async fn accounts_and_the_first_admin() {
    use proxlab_hub::db::users::Role;
    use proxlab_hub::domain::accounts::{create_user, ensure_admin, verify_password};
    for test_db in databases().await {
        let db = test_db.db.clone();
        let first = ensure_admin(&db)
            .await
            .unwrap()
            .expect("an admin is created on an empty hub");
        let (name, password) = first.split_once(" / ").unwrap();
        assert_eq!(name, "admin");
        let admin = db.user_by_name("admin").await.unwrap().unwrap();
        assert_eq!(admin.role, Role::Admin);
        assert!(verify_password(password, &admin.password_hash));
        assert!(ensure_admin(&db).await.unwrap().is_none(), "only once");

        assert!(
            create_user(&db, "alice", Role::Student, Some("a-long-password"))
                .await
                .unwrap()
                .is_none()
        );
        let generated = create_user(&db, "bob", Role::Teacher, None)
            .await
            .unwrap()
            .unwrap();
        assert!(verify_password(
            &generated,
            &db.user_by_name("bob").await.unwrap().unwrap().password_hash
        ));
        assert!(matches!(
            create_user(&db, "alice", Role::Student, Some("another-password")).await,
            Err(proxlab_hub::domain::accounts::AccountError::Db(
                proxlab_hub::db::DbError::Conflict(_)
            ))
        ));
        assert!(
            create_user(&db, "Bad Name", Role::Student, None)
                .await
                .is_err()
        );
        assert!(
            create_user(&db, "carol", Role::Student, Some("short"))
                .await
                .is_err()
        );
        let names: Vec<String> = db
            .list_users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.username)
            .collect();
        assert_eq!(names, ["admin", "alice", "bob"]);
        test_db.finish().await;
    }
}

/// `n` new students, `s0`, `s1`, ...
async fn students(db: &Db, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for n in 0..n {
        ids.push(
            db.insert_user(
                &format!("s{n}"),
                proxlab_hub::db::users::Role::Student,
                "x",
                0,
            )
            .await
            .unwrap(),
        );
    }
    ids
}

/// A class "c" of `seats` seats, owned by a new teacher, and its node pve1.
async fn class_with_seats(db: &Db, seats: u32) -> i64 {
    use proxlab_hub::db::classes::NewClass;
    use proxlab_hub::db::users::Role;
    db.insert_join_token(&hash_secret("class node"), None, 0, 1_000)
        .await
        .unwrap();
    db.enroll_node(&hash_secret("class node"), "pve1", "fp", 1)
        .await
        .unwrap();
    let teacher = db
        .insert_user("teacher", Role::Teacher, "x", 0)
        .await
        .unwrap();
    db.insert_class(
        &NewClass {
            name: "c".into(),
            seats,
            ..NewClass::default()
        },
        teacher,
        0,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn concurrent_joins_never_share_a_vm_and_the_rest_wait() {
    use proxlab_hub::db::classes::JoinOutcome;
    for test_db in databases().await {
        let db = &test_db.db;
        let class = class_with_seats(db, 50).await;
        let plan: Vec<(ClassVmKind, String)> = (0..50)
            .map(|_| (ClassVmKind::Student, "pve1".to_owned()))
            .collect();
        let vmids = db
            .reserve_vmids(class, &plan, 10_000..=10_999, 0)
            .await
            .unwrap();
        assert_eq!(vmids.len(), 50);
        let students = students(db, 100).await;
        let joins = students
            .iter()
            .map(|student| db.join_class(class, *student, 1));
        let outcomes: Vec<JoinOutcome> = futures_util::future::join_all(joins)
            .await
            .into_iter()
            .map(|joined| joined.unwrap().expect("no seat limit"))
            .collect();
        let assigned: std::collections::HashSet<_> = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                JoinOutcome::Assigned(vmid) => Some(*vmid),
                JoinOutcome::Waitlisted => None,
            })
            .collect();
        let assignments = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, JoinOutcome::Assigned(_)))
            .count();
        assert_eq!(assignments, 50, "{:?}", db.backend());
        assert_eq!(assigned.len(), 50, "no VM twice");
        assert_eq!(db.waitlist(class).await.unwrap().len(), 50);
        // Joining again changes nothing; capacity later serves the waitlist in join order.
        let again = db.join_class(class, students[0], 2).await.unwrap();
        assert!(Some(outcomes[0]) == again);
        let more: Vec<(ClassVmKind, String)> = (0..10)
            .map(|_| (ClassVmKind::Student, "pve1".to_owned()))
            .collect();
        let extra = db
            .reserve_vmids(class, &more, 10_000..=10_999, 3)
            .await
            .unwrap();
        assert!(
            extra.iter().all(|vmid| !vmids.contains(vmid)),
            "fresh VM ids"
        );
        for (user, _) in db.waitlist(class).await.unwrap() {
            db.assign_free_vm(class, user, 4).await.unwrap();
        }
        assert_eq!(db.waitlist(class).await.unwrap().len(), 40);
        test_db.finish().await;
    }
}

#[tokio::test]
async fn an_invite_seat_limit_holds_under_thirty_concurrent_joins() {
    for test_db in databases().await {
        let db = &test_db.db;
        let class = class_with_seats(db, 30).await;
        let invite = proxlab_hub::db::classes::NewInvite {
            hash: "hash",
            seat_limit: Some(5),
            ..Default::default()
        };
        db.set_invite(class, &invite).await.unwrap();
        let plan = vec![(ClassVmKind::Student, "pve1".to_owned()); 30];
        db.reserve_vmids(class, &plan, 10_000..=10_999, 0)
            .await
            .unwrap();
        let students = students(db, 30).await;
        let joins = students
            .iter()
            .map(|student| db.join_class(class, *student, 1));
        let joined = futures_util::future::join_all(joins)
            .await
            .into_iter()
            .map(Result::unwrap)
            .filter(Option::is_some)
            .count();
        assert_eq!(joined, 5, "{:?}", db.backend());
        assert_eq!(db.roster(class).await.unwrap().len(), 5);
        // Someone already in is not turned away by the limit they count towards.
        let inside = db.roster(class).await.unwrap()[0].0;
        assert!(db.join_class(class, inside, 2).await.unwrap().is_some());
        test_db.finish().await;
    }
}

#[tokio::test]
async fn concurrent_seat_changes_add_up_and_stop_at_the_cap() {
    for test_db in databases().await {
        let db = &test_db.db;
        let class = class_with_seats(db, 1).await;
        // 1 + 40 × 20 asked, with room for 500: 24 changes fit, and none is lost.
        let changes = (0..40).map(|_| db.change_class_seats(class, 20, 500));
        let taken = futures_util::future::join_all(changes)
            .await
            .into_iter()
            .filter(|done| *done.as_ref().unwrap())
            .count();
        assert_eq!(taken, 24, "{:?}", db.backend());
        assert_eq!(db.class(class).await.unwrap().unwrap().seats, 481);
        assert!(!db.change_class_seats(class, -482, 500).await.unwrap());
        assert!(db.change_class_seats(class, -481, 500).await.unwrap());
        test_db.finish().await;
    }
}

#[tokio::test]
async fn each_schedule_occurrence_is_claimed_by_one_hub_process() {
    use proxlab_hub::db::schedules::{FiringKey, ScheduleRow};
    const LEASE: i64 = 300;
    for test_db in databases().await {
        let db = &test_db.db;
        // A second hub process: its own connection pool to the same database.
        let other = Db::connect(&test_db.url).await.unwrap();
        let class = class_with_seats(db, 1).await;
        let rule = ScheduleRow {
            id: 0,
            class_id: class,
            repeat: "weekly".into(),
            start_date: "2026-12-07".into(),
            end_date: None,
            weekdays: 1,
            start_time: Some("08:00".into()),
            stop_time: None,
            time_zone: "UTC".into(),
            note: String::new(),
            created_by: "tina".into(),
            created_at: 0,
        };
        let key = FiringKey {
            schedule_id: db.insert_schedule(&rule).await.unwrap(),
            due_at: 1_000,
            action: "start",
        };
        let pools = [db, &other];
        let claims_at = |now: i64| {
            (0..16).map(move |n: usize| {
                let pool = pools[n % 2];
                async move {
                    let claimer = format!("hub{n}");
                    pool.claim_firing(key, &claimer, now, now - LEASE).await
                }
            })
        };
        let winners = |results: Vec<Result<bool, _>>| {
            results
                .into_iter()
                .map(Result::unwrap)
                .filter(|won| *won)
                .count()
        };
        let first = futures_util::future::join_all(claims_at(2_000)).await;
        assert_eq!(winners(first), 1, "{:?}", db.backend());
        // Within the lease nobody else gets it; an unfinished claim past it (its process
        // died) is taken over, by one.
        let within = futures_util::future::join_all(claims_at(2_000 + LEASE - 1)).await;
        assert_eq!(winners(within), 0, "{:?}", db.backend());
        let after = futures_util::future::join_all(claims_at(2_000 + LEASE + 1)).await;
        assert_eq!(winners(after), 1, "{:?}", db.backend());
        // Done is done, however late.
        db.finish_firing(key, "done", "2 VMs", None, 2_400)
            .await
            .unwrap();
        let later = futures_util::future::join_all(claims_at(100_000)).await;
        assert_eq!(winners(later), 0, "{:?}", db.backend());
        let firings = other.firings_since(0).await.unwrap();
        assert_eq!(firings.len(), 1);
        assert_eq!(
            (firings[0].outcome.as_str(), firings[0].done_at),
            ("done", Some(2_400))
        );
        other.close().await;
        test_db.finish().await;
    }
}

#[tokio::test]
async fn external_identities_rosters_and_assistants_on_both_databases() {
    use proxlab_hub::db::rosters::{RosterAccount, RosterRow};
    use proxlab_hub::db::users::Role;
    use proxlab_hub::domain::sign_in::accounts::account_for;
    use proxlab_hub::domain::sign_in::{ExternalIdentity, SignInError};
    for test_db in databases().await {
        let db = test_db.db.clone();
        let identity = |subject: &str, username: &str, role: Role| ExternalIdentity {
            source: "oidc:school".into(),
            subject: subject.into(),
            username: username.into(),
            display_name: "Sam Student".into(),
            email: format!("{username}@school.test"),
            role,
            groups: vec!["cn=year-2,ou=groups".into(), "year-2".into()],
            link_existing: false,
        };
        // Made at the first sign-in, found by subject afterwards (even renamed), the role
        // following the source unless pinned.
        let sam = account_for(&db, &identity("sub-1", "sam", Role::Student))
            .await
            .unwrap();
        assert_eq!(
            (sam.auth_source.as_str(), sam.role),
            ("oidc:school", Role::Student)
        );
        assert_eq!(
            db.sign_in_groups(sam.id).await.unwrap(),
            ["cn=year-2,ou=groups", "year-2"]
        );
        let again = account_for(&db, &identity("sub-1", "sam-renamed", Role::Teacher))
            .await
            .unwrap();
        assert_eq!((again.id, again.role), (sam.id, Role::Teacher));
        db.set_role_pinned(sam.id, true).await.unwrap();
        db.set_role(sam.id, Role::Student).await.unwrap();
        let pinned = account_for(&db, &identity("sub-1", "sam", Role::Teacher))
            .await
            .unwrap();
        assert_eq!(pinned.role, Role::Student);
        // A local account of the same name is not taken over.
        db.insert_user("kim", Role::Student, "x", 0).await.unwrap();
        assert!(matches!(
            account_for(&db, &identity("sub-2", "kim", Role::Student)).await,
            Err(SignInError::Refused(_))
        ));

        // A roster in one transaction: an existing account, a new local one, one waiting
        // for single sign-on; matched by email; on the roster and enrolled once.
        let class_id = class_with_seats(&db, 2).await;
        let row = |username: &str, account: RosterAccount| RosterRow {
            username: username.into(),
            email: format!("{username}@school.test"),
            display_name: String::new(),
            account,
        };
        let rows = [
            row("sam", RosterAccount::Existing(sam.id)),
            row(
                "lee",
                RosterAccount::NewLocal {
                    password_hash: "$argon2id$x".into(),
                },
            ),
            row(
                "ada",
                RosterAccount::Preregistered {
                    source: "ldap".into(),
                },
            ),
        ];
        assert_eq!(db.import_roster(class_id, &rows, 5).await.unwrap(), 3);
        assert_eq!(db.import_roster(class_id, &rows[..1], 6).await.unwrap(), 0);
        let roster = db.class_roster(class_id).await.unwrap();
        let names: Vec<&str> = roster.iter().map(|p| p.username.as_str()).collect();
        assert_eq!(names, ["ada", "lee", "sam"]);
        assert!(roster.iter().all(|person| !person.signed_in));
        db.record_login(sam.id, 8).await.unwrap();
        let signed_in: Vec<bool> = db
            .class_roster(class_id)
            .await
            .unwrap()
            .iter()
            .map(|person| person.signed_in)
            .collect();
        assert_eq!(signed_in, [false, false, true]);
        let ada = db.user_by_email("ada@school.test").await.unwrap().unwrap();
        assert_eq!(ada.auth_source, "ldap");
        assert!(db.on_roster(class_id, ada.id).await.unwrap());
        // A name taken meanwhile undoes the whole import.
        let clash = [
            row(
                "new1",
                RosterAccount::Preregistered {
                    source: "ldap".into(),
                },
            ),
            row(
                "kim",
                RosterAccount::Preregistered {
                    source: "ldap".into(),
                },
            ),
        ];
        assert!(db.import_roster(class_id, &clash, 7).await.is_err());
        assert!(db.user_by_name("new1").await.unwrap().is_none());

        // Assistants see the class in their list; removing them is reported.
        db.add_class_assistant(class_id, ada.id).await.unwrap();
        assert!(db.is_class_assistant(class_id, ada.id).await.unwrap());
        assert_eq!(db.assisted_class_ids(ada.id).await.unwrap(), [class_id]);
        assert_eq!(db.list_classes(Some(ada.id)).await.unwrap().len(), 1);
        assert_eq!(db.class_assistants(class_id).await.unwrap(), ["ada"]);
        assert!(db.remove_class_assistant(class_id, ada.id).await.unwrap());
        assert!(!db.remove_class_assistant(class_id, ada.id).await.unwrap());
        test_db.finish().await;
    }
}

#[tokio::test]
async fn plugin_settings_and_notes_on_both_databases() {
    use std::collections::BTreeMap;

    use proxlab_hub::db::plugin_settings::{NewNote, SITE};
    use proxlab_protocol::plugin_manifest::SettingValue;
    for test_db in databases().await {
        let db = test_db.db.clone();
        let class_id = class_with_seats(&db, 1).await;
        // The site's values and a class's are kept apart, and replaced whole.
        let site = BTreeMap::from([
            ("contact".to_owned(), SettingValue::Text("Room 12".into())),
            ("cores".to_owned(), SettingValue::Integer(4)),
            ("motd".to_owned(), SettingValue::Boolean(false)),
        ]);
        db.set_plugin_settings("p", SITE, &site).await.unwrap();
        let class = BTreeMap::from([("cores".to_owned(), SettingValue::Integer(2))]);
        db.set_plugin_settings("p", class_id, &class).await.unwrap();
        assert_eq!(db.plugin_settings("p", SITE).await.unwrap(), site);
        assert_eq!(db.plugin_settings("p", class_id).await.unwrap(), class);
        db.set_plugin_settings("p", SITE, &BTreeMap::new())
            .await
            .unwrap();
        assert!(db.plugin_settings("p", SITE).await.unwrap().is_empty());
        assert_eq!(db.plugin_settings("p", class_id).await.unwrap(), class);

        // Notes per VM and hook; a secret is handed out once.
        let plan = [(ClassVmKind::Student, "pve1".to_owned())];
        db.reserve_vmids(class_id, &plan, 10_000..=10_999, 0)
            .await
            .unwrap();
        let key = db.class_vms(class_id).await.unwrap()[0].key;
        let note = |severity: &'static str, secret: Option<&'static str>| NewNote {
            plugin: "p",
            severity,
            message: "m",
            secret,
        };
        db.replace_plugin_notes(key, "validate", &[note("warning", None)])
            .await
            .unwrap();
        db.replace_plugin_notes(key, "after-start", &[note("notice", Some("s3cret"))])
            .await
            .unwrap();
        let notes = db.vm_plugin_notes(key).await.unwrap();
        assert_eq!(notes.len(), 2);
        assert!(notes.iter().any(|note| note.has_secret));
        assert_eq!(db.class_plugin_notes(class_id).await.unwrap().len(), 2);
        assert_eq!(
            db.take_plugin_secrets(key).await.unwrap(),
            [("p".to_owned(), "s3cret".to_owned())]
        );
        assert!(db.take_plugin_secrets(key).await.unwrap().is_empty());
        assert!(!db.vm_plugin_notes(key).await.unwrap()[1].has_secret);
        // A hook's notes are replaced by its next run.
        db.replace_plugin_notes(key, "validate", &[]).await.unwrap();
        assert_eq!(db.vm_plugin_notes(key).await.unwrap().len(), 1);
        // A deleted class takes its settings and its VMs' notes along.
        db.delete_class(class_id).await.unwrap();
        assert!(db.plugin_settings("p", class_id).await.unwrap().is_empty());
        assert!(db.vm_plugin_notes(key).await.unwrap().is_empty());
        test_db.finish().await;
    }
}
