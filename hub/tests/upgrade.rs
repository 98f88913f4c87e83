//! A database made by an earlier release (the schema before template versions, with a class
//! and enrolled nodes in it) is migrated by this one without loss: on SQLite always, and on
//! PostgreSQL when `PROXLAB_TEST_PG` holds a server URL. Its nodes belong to no cluster
//! until their agents report one.

mod common;

use std::borrow::Cow;

use common::pg::{self, PgDatabase};
use proxlab_hub::db::Db;
use proxlab_hub::db::audit::AuditFilter;
use proxlab_hub::db::states::{ClassVmKind, JobKind, Rollout, VersionState};
use proxlab_hub::db::versions::NewRollout;
use proxlab_hub::vm_key::VmKey;
use proxlab_protocol::ClusterIdentity;

/// The last migration of the release before template versions.
const PREVIOUS_RELEASE: i64 = 15;

/// Lays out the previous release's schema in `url` with a deployed class of one base, a
/// teacher VM and two students, and a finished deploy job. Returns the class id.
/// A database at `url` with the schema of the release whose last migration is `last`.
async fn schema_of_release(url: &str, postgres: bool, last: i64) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let mut migrator = if postgres {
        sqlx::migrate!("migrations/postgres")
    } else {
        sqlx::migrate!("migrations/sqlite")
    };
    migrator.migrations = Cow::Owned(
        migrator
            .migrations
            .iter()
            .filter(|migration| migration.version <= last)
            .cloned()
            .collect(),
    );
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    migrator.run(&pool).await.unwrap();
    pool
}

async fn previous_release_with_a_class(url: &str, postgres: bool) -> i64 {
    let pool = schema_of_release(url, postgres, PREVIOUS_RELEASE).await;
    let statements = [
        "INSERT INTO nodes (name, cert_fingerprint, enrolled_at, online) \
         VALUES ('pve1', 'sha256:aa', 1, 0), ('pve2', 'sha256:bb', 1, 0)",
        "INSERT INTO users (username, role, password_hash, created_at) \
         VALUES ('tina', 'teacher', 'x', 1)",
        "INSERT INTO classes (name, template_vmid, seats, state, created_by, created_at) \
         VALUES ('Old class', 9000, 2, 'active', 1, 1)",
        "INSERT INTO class_vms (vmid, class_id, kind, node, state, updated_at) VALUES \
         (10000, 1, 'base', 'pve1', 'ready', 1), (10001, 1, 'teacher', 'pve1', 'ready', 1), \
         (10002, 1, 'student', 'pve1', 'ready', 1), (10003, 1, 'student', 'pve2', 'ready', 1)",
        "INSERT INTO jobs (kind, class_id, state, created_by, created_at, updated_at, message) \
         VALUES ('deploy', 1, 'done', 1, 1, 2, '3 VMs ready')",
        "INSERT INTO classes (name, seats, state, created_by, created_at) \
         VALUES ('Empty VMs', 1, 'active', 1, 1)",
    ];
    for statement in statements {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;
    1
}

async fn check_migrated(db: &Db, class_id: i64) {
    let nodes = db.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 2, "every node kept");
    assert!(nodes.iter().all(|node| node.cluster.is_none()), "{nodes:?}");
    let lab = ClusterIdentity {
        name: "lab".into(),
        ca_fingerprint: "sha256:cc".into(),
    };
    let first = db.note_node_cluster("pve1", &lab, 5).await.unwrap();
    let second = db.note_node_cluster("pve2", &lab, 6).await.unwrap();
    assert_eq!(first.id, second.id, "one cluster, two nodes");
    let pve2 = db.node_by_name("pve2").await.unwrap().unwrap();
    assert_eq!(pve2.cluster, Some(first));
    assert_eq!(pve2.cert_fingerprint, "sha256:bb");

    let class = db.class(class_id).await.unwrap().unwrap();
    assert_eq!(class.current_version, Some(1));
    assert_eq!(class.keep_versions, 3);
    let versions = db.class_versions(class_id).await.unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].number, 1);
    assert_eq!(versions[0].state, VersionState::Ready);
    let vms = db.class_vms(class_id).await.unwrap();
    assert_eq!(vms.len(), 4, "every VM kept");
    assert!(vms.iter().all(|vm| vm.version == Some(1)), "{vms:?}");
    let jobs = db.class_jobs(class_id).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].kind, jobs[0].message.as_str(), jobs[0].version),
        (JobKind::Deploy, "3 VMs ready", None)
    );
    // A class of empty VMs has no versions.
    let empty = db.class(class_id + 1).await.unwrap().unwrap();
    assert_eq!(empty.current_version, None);
    assert!(db.class_versions(class_id + 1).await.unwrap().is_empty());
    // The migrated class publishes as a new one would.
    let publish = NewRollout {
        class_id,
        rollout: Rollout::NextReset,
        warn_minutes: 0,
        user_id: 1,
        username: "tina",
        now: 10,
    };
    let (number, _) = db
        .start_publish(
            &publish,
            "after the upgrade",
            &["pve1".into()],
            20_000..=20_010,
        )
        .await
        .unwrap();
    assert_eq!(number, 2);
    let bases: Vec<_> = db
        .class_vms(class_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|vm| vm.kind == ClassVmKind::Base && vm.version == Some(2))
        .collect();
    assert_eq!(bases.len(), 1);
    assert_eq!(bases[0].vmid, 20_000);
    let refused = db
        .start_publish(&publish, "again", &["pve1".into()], 20_000..=20_010)
        .await;
    assert!(refused.is_err(), "one publish at a time");
}

#[tokio::test]
async fn a_previous_release_database_migrates_to_versions_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = Db::sqlite_url(dir.path());
    let class_id = previous_release_with_a_class(&url, false).await;
    let db = Db::connect(&url).await.unwrap();
    check_migrated(&db, class_id).await;
    db.close().await;
}

#[tokio::test]
async fn a_previous_release_database_migrates_to_versions_on_postgres() {
    let Some(server) = pg::server_url("upgrade test") else {
        return;
    };
    let database = PgDatabase::create(&server).await;
    let class_id = previous_release_with_a_class(&database.url, true).await;
    let db = Db::connect(&database.url).await.unwrap();
    check_migrated(&db, class_id).await;
    db.close().await;
    database.drop_database().await;
}

/// The last migration of the release before VMs were keyed by cluster.
const BEFORE_VM_KEYS: i64 = 20;

/// Lays out that release's schema in `url`: cluster `lab` with pve1 (reported) and pve2 (not
/// reconnected since), their VMs, a class on both nodes, assignments (one to a VM that is
/// gone), a build, a host key, a stop reason, a metered run, an idle stop, a task result, a
/// listed VMID clash and audit entries naming VMs.
async fn before_vm_keys(url: &str, postgres: bool) {
    let pool = schema_of_release(url, postgres, BEFORE_VM_KEYS).await;
    let vm = |vmid: u32, node: u32, name: &str, template: u32| {
        format!(
            "INSERT INTO vms (vmid, node_id, name, status, template, cores, sockets, memory_mib, \
             status_changed_at, updated_at) VALUES ({vmid}, {node}, '{name}', 'stopped', \
             {template}, 1, 1, 512, 1, 1)"
        )
    };
    let statements = [
        "INSERT INTO clusters (name, ca_fingerprint, first_seen_at) VALUES ('lab', 'sha256:cc', 1)"
            .to_owned(),
        "INSERT INTO nodes (name, cert_fingerprint, enrolled_at, online, cluster_id) \
         VALUES ('pve1', 'sha256:aa', 1, 0, 1), ('pve2', 'sha256:bb', 1, 0, NULL)"
            .to_owned(),
        "INSERT INTO users (username, role, password_hash, created_at) \
         VALUES ('tina', 'teacher', 'x', 1), ('sam', 'student', 'x', 1)"
            .to_owned(),
        vm(9000, 1, "tpl", 1),
        vm(100, 1, "web", 0),
        vm(101, 2, "db", 0),
        vm(10001, 1, "c-teacher", 0),
        "INSERT INTO classes (name, template_vmid, seats, state, created_by, created_at, \
         current_version) VALUES ('Keyed', 9000, 1, 'active', 1, 1, 1)"
            .to_owned(),
        "INSERT INTO class_vms (vmid, class_id, kind, node, state, updated_at, version) VALUES \
         (10000, 1, 'base', 'pve1', 'ready', 1, 1), (10001, 1, 'teacher', 'pve1', 'ready', 1, 1), \
         (10002, 1, 'student', 'pve2', 'planned', 1, 1)"
            .to_owned(),
        "INSERT INTO vm_assignments (vmid, user_id, assigned_at) \
         VALUES (101, 2, 1), (10002, 2, 1), (555, 2, 1)"
            .to_owned(),
        "INSERT INTO template_builds (vmid, node, name, iso, os, built_by, created_at, state) \
         VALUES (20000, 'pve2', 'new-tpl', 'local:iso/x.iso', 'linux', 1, 1, 'installing')"
            .to_owned(),
        "INSERT INTO ssh_host_keys (vmid, algorithm, fingerprint, first_seen, accepted_by) \
         VALUES (100, 'ssh-ed25519', 'SHA256:k', 1, 'tina')"
            .to_owned(),
        "INSERT INTO vm_stop_reasons (vmid, reason, at) VALUES (100, 'Stopped after 30 min idle', 1)"
            .to_owned(),
        "INSERT INTO vm_runs (vmid, boot_at, node, class_id, user_id, last_seen, ended_at) \
         VALUES (10001, 100, 'pve1', 1, 1, 200, 200)"
            .to_owned(),
        "INSERT INTO idle_stops (id, vmid, node, class_id, reason, idle_secs, at, outcome) \
         VALUES ('stop-1', 10002, 'pve2', 1, 'no-connection', 1800, 300, 'shut-down')"
            .to_owned(),
        "INSERT INTO class_tasks (class_id, action, started_by, started_at, total) \
         VALUES (1, 'start', 'tina', 1, 1)"
            .to_owned(),
        "INSERT INTO class_task_results (task_id, vmid, outcome, message) \
         VALUES (1, 10001, 'ok', 'Done.')"
            .to_owned(),
        "INSERT INTO vmid_clashes (node_id, vmid, name, seen_at) VALUES (2, 100, 'other', 1)"
            .to_owned(),
        "INSERT INTO console_tickets (ticket_hash, user_id, vmid, kind, created_at, expires_at) \
         VALUES ('h', 2, 100, 'vnc', 1, 2)"
            .to_owned(),
        "INSERT INTO audit_log (at, actor, action, target, result) VALUES \
         (1, 'tina', 'vm.start', 'vm:100', 'ok'), (2, 'sam', 'vm.start', 'vm:101', 'ok'), \
         (3, 'tina', 'class.create', 'class:1', 'ok')"
            .to_owned(),
    ];
    for statement in &statements {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;
}

async fn check_keyed(db: &Db) {
    let lab = db
        .node_by_name("pve1")
        .await
        .unwrap()
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(lab.name, "lab");
    let in_lab = |vmid| VmKey::new(lab.id, vmid);
    // pve2 never said which cluster it is in: it waits in the placeholder, VMs and all.
    assert_eq!(
        db.node_by_name("pve2").await.unwrap().unwrap().cluster,
        None
    );
    let waiting = db.node_cluster_id("pve2").await.unwrap().unwrap();
    assert_ne!(waiting, lab.id);
    let waiting_key = |vmid| VmKey::new(waiting, vmid);

    assert_eq!(db.vm(in_lab(100)).await.unwrap().unwrap().name, "web");
    assert_eq!(
        db.vm(in_lab(100))
            .await
            .unwrap()
            .unwrap()
            .stop_reason
            .as_deref(),
        Some("Stopped after 30 min idle")
    );
    assert_eq!(db.vm(waiting_key(101)).await.unwrap().unwrap().name, "db");
    assert_eq!(db.vm_user(waiting_key(101)).await.unwrap(), Some(2));
    // The gone VM's assignment went to the hub's only cluster.
    assert_eq!(db.vm_user(in_lab(555)).await.unwrap(), Some(2));
    let class = db.class(1).await.unwrap().unwrap();
    assert_eq!(class.template, Some(in_lab(9000)));
    let keys: Vec<VmKey> = db
        .class_vms(1)
        .await
        .unwrap()
        .iter()
        .map(|vm| vm.key)
        .collect();
    assert_eq!(keys, [in_lab(10000), in_lab(10001), waiting_key(10002)]);
    assert_eq!(
        db.build(waiting_key(20000)).await.unwrap().unwrap().name,
        "new-tpl"
    );
    assert!(db.ssh_host_key(in_lab(100)).await.unwrap().is_some());
    let results = db.task_results(1).await.unwrap();
    assert_eq!(results[0].key, in_lab(10001));
    let runs = db.class_runs(1).await.unwrap();
    assert_eq!(runs[0].run.vm, in_lab(10001));
    let audit = db
        .find_audit(&AuditFilter {
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let targets: Vec<&str> = audit.iter().map(|entry| entry.target.as_str()).collect();
    let (web, database) = (format!("vm:{}-100", lab.id), format!("vm:{waiting}-101"));
    assert!(targets.contains(&web.as_str()), "{targets:?}");
    assert!(targets.contains(&database.as_str()), "{targets:?}");
    assert!(targets.contains(&"class:1"), "{targets:?}");

    // Once pve2 reports its cluster, its VMs and everything about them follow it.
    let identity = ClusterIdentity {
        name: "lab".into(),
        ca_fingerprint: "sha256:cc".into(),
    };
    db.note_node_cluster("pve2", &identity, 5).await.unwrap();
    assert_eq!(db.vm(in_lab(101)).await.unwrap().unwrap().name, "db");
    assert_eq!(db.vm_user(in_lab(101)).await.unwrap(), Some(2));
    assert_eq!(db.vm_user(in_lab(10002)).await.unwrap(), Some(2));
    assert_eq!(
        db.build(in_lab(20000)).await.unwrap().unwrap().name,
        "new-tpl"
    );
    let keys: Vec<VmKey> = db
        .class_vms(1)
        .await
        .unwrap()
        .iter()
        .map(|vm| vm.key)
        .collect();
    assert_eq!(keys, [in_lab(10000), in_lab(10001), in_lab(10002)]);
    assert!(db.vm(waiting_key(101)).await.unwrap().is_none());

    // And a second cluster's VM 100 is a VM of its own.
    let other = db
        .ensure_cluster(
            &ClusterIdentity {
                name: "other".into(),
                ca_fingerprint: "sha256:dd".into(),
            },
            6,
        )
        .await
        .unwrap();
    assert_ne!(other, lab.id);
    assert!(db.vm(VmKey::new(other, 100)).await.unwrap().is_none());
}

#[tokio::test]
async fn vms_are_keyed_by_cluster_after_the_upgrade_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = Db::sqlite_url(dir.path());
    before_vm_keys(&url, false).await;
    let db = Db::connect(&url).await.unwrap();
    check_keyed(&db).await;
    db.close().await;
}

#[tokio::test]
async fn vms_are_keyed_by_cluster_after_the_upgrade_on_postgres() {
    let Some(server) = pg::server_url("upgrade test") else {
        return;
    };
    let database = PgDatabase::create(&server).await;
    before_vm_keys(&database.url, true).await;
    let db = Db::connect(&database.url).await.unwrap();
    check_keyed(&db).await;
    db.close().await;
    database.drop_database().await;
}
