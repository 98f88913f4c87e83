//! Fresh PostgreSQL databases for tests, when `PROXLAB_TEST_PG` names a server.

/// A database created for one test; [`PgDatabase::drop_database`] removes it.
pub struct PgDatabase {
    pub url: String,
    server_url: String,
    name: String,
}

/// The server URL from `PROXLAB_TEST_PG`, or a visible notice that PostgreSQL is skipped.
pub fn server_url(what: &str) -> Option<String> {
    match std::env::var("PROXLAB_TEST_PG") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("NOTICE: PROXLAB_TEST_PG is not set; PostgreSQL {what} skipped");
            None
        }
    }
}

async fn admin_connection(server_url: &str) -> sqlx::AnyConnection {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(server_url)
        .await
        .expect("PostgreSQL reachable at PROXLAB_TEST_PG")
}

impl PgDatabase {
    pub async fn create(server_url: &str) -> Self {
        let name = format!("proxlab_test_{}", hex::encode(rand::random::<[u8; 6]>()));
        let mut admin = admin_connection(server_url).await;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let (base, _) = server_url.rsplit_once('/').expect("URL names a database");
        Self {
            url: format!("{base}/{name}"),
            server_url: server_url.to_owned(),
            name,
        }
    }

    pub async fn drop_database(self) {
        let mut admin = admin_connection(&self.server_url).await;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}
