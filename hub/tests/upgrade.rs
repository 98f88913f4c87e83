//! A database made by an earlier release (the schema before template versions, with a class
//! and enrolled nodes in it) is migrated by this one without loss: on SQLite always, and on
//! PostgreSQL when `PROXLAB_TEST_PG` holds a server URL. Its nodes belong to no cluster
//! until their agents report one.

mod common;

use std::borrow::Cow;

use common::pg::{self, PgDatabase};
use proxlab_hub::db::Db;
use proxlab_hub::db::states::{ClassVmKind, JobKind, Rollout, VersionState};
use proxlab_hub::db::versions::NewRollout;
use proxlab_protocol::ClusterIdentity;

/// The last migration of the release before template versions.
const PREVIOUS_RELEASE: i64 = 15;

/// Lays out the previous release's schema in `url` with a deployed class of one base, a
/// teacher VM and two students, and a finished deploy job. Returns the class id.
async fn previous_release_with_a_class(url: &str, postgres: bool) -> i64 {
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
            .filter(|migration| migration.version <= PREVIOUS_RELEASE)
            .cloned()
            .collect(),
    );
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    migrator.run(&pool).await.unwrap();
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
