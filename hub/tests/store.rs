//! The link's tables, on SQLite always and on PostgreSQL when `PROXLAB_TEST_PG` holds a
//! server URL (each run gets a fresh database there).

use proxlab_hub::db::nodes::EnrollOutcome;
use proxlab_hub::db::tokens::SpendRefusal;
use proxlab_hub::db::{Backend, Db};
use proxlab_hub::tokens::hash_token;

/// One database under test; PostgreSQL ones are dropped by [`TestDb::finish`].
struct TestDb {
    db: Db,
    _sqlite_dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDb {
    async fn finish(self) {
        self.db.close().await;
        if let Some((server_url, name)) = self.postgres {
            let mut admin = admin_connection(&server_url).await;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                .execute(&mut admin)
                .await
                .unwrap();
        }
    }
}

/// The databases to run against: SQLite, and PostgreSQL if configured.
async fn databases() -> Vec<TestDb> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Db::connect(&Db::sqlite_url(dir.path())).await.unwrap();
    let mut dbs = vec![TestDb {
        db: sqlite,
        _sqlite_dir: Some(dir),
        postgres: None,
    }];
    match std::env::var("PROXLAB_TEST_PG") {
        Ok(url) if !url.is_empty() => dbs.push(fresh_postgres(&url).await),
        _ => eprintln!("NOTICE: PROXLAB_TEST_PG is not set; PostgreSQL store tests skipped"),
    }
    dbs
}

async fn admin_connection(server_url: &str) -> sqlx::AnyConnection {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(server_url)
        .await
        .expect("PostgreSQL reachable at PROXLAB_TEST_PG")
}

async fn fresh_postgres(server_url: &str) -> TestDb {
    let name = format!("proxlab_test_{}", hex::encode(rand::random::<[u8; 6]>()));
    let mut admin = admin_connection(server_url).await;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = server_url.rsplit_once('/').expect("URL names a database");
    let db = Db::connect(&format!("{base}/{name}")).await.unwrap();
    assert_eq!(db.backend(), Backend::Postgres);
    TestDb {
        db,
        _sqlite_dir: None,
        postgres: Some((server_url.to_owned(), name)),
    }
}

#[tokio::test]
async fn a_token_is_spent_exactly_once_with_the_enrollment() {
    for test_db in databases().await {
        let db = test_db.db.clone();
        let hash = hash_token("plj_one");
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
        db.insert_join_token(&hash_token("old"), None, 0, 50)
            .await
            .unwrap();
        let revoked = db
            .insert_join_token(&hash_token("rev"), None, 0, 1_000)
            .await
            .unwrap();
        assert!(db.revoke_join_token(revoked, 10).await.unwrap());
        db.insert_join_token(&hash_token("bound"), Some("pve9"), 0, 1_000)
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
                .enroll_node(&hash_token(token), "pve1", "fp", 100)
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
        let hash = hash_token("plj_race");
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
        db.insert_join_token(&hash_token("a"), None, 0, 1_000)
            .await
            .unwrap();
        db.insert_join_token(&hash_token("b"), None, 0, 1_000)
            .await
            .unwrap();
        assert_eq!(
            db.enroll_node(&hash_token("a"), "pve1", "fp-old", 1)
                .await
                .unwrap(),
            EnrollOutcome::Enrolled
        );
        // An active name cannot be taken, and the token survives the refusal.
        assert_eq!(
            db.enroll_node(&hash_token("b"), "pve1", "fp-new", 2)
                .await
                .unwrap(),
            EnrollOutcome::NameTaken
        );
        assert!(db.revoke_node("pve1", 3).await.unwrap());
        assert!(!db.revoke_node("pve1", 4).await.unwrap(), "revoking twice");
        assert_eq!(
            db.enroll_node(&hash_token("b"), "pve1", "fp-new", 5)
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
        db.insert_join_token(&hash_token("t"), None, 0, 1_000)
            .await
            .unwrap();
        db.enroll_node(&hash_token("t"), "pve1", "fp", 1)
            .await
            .unwrap();
        db.set_node_online(
            "pve1",
            true,
            10,
            "connected",
            Some("0.1.0"),
            Some("127.0.0.1:5"),
        )
        .await
        .unwrap();
        db.touch_node("pve1", 15).await.unwrap();
        db.mark_all_nodes_offline(20).await.unwrap();
        let node = db.node_by_name("pve1").await.unwrap().unwrap();
        assert!(!node.online);
        assert_eq!(node.state_changed_at, Some(20));
        assert_eq!(node.agent_version.as_deref(), Some("0.1.0"));
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
            db.set_node_online("ghost", true, 1, "x", None, None).await,
            Err(proxlab_hub::db::DbError::NotFound)
        ));
        test_db.finish().await;
    }
}
