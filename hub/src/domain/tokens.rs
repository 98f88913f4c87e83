//! Join tokens: what an admin hands a node operator to enroll an agent. A token is a
//! [secret](crate::secrets), shown once and stored only as its hash.

use std::time::Duration;

use serde::Serialize;

use crate::db::{Db, DbError, now_unix};
use crate::secrets::{hash_secret, new_secret};

/// The prefix that marks a proxlab join token, so a leaked one is easy to recognise.
const TOKEN_PREFIX: &str = "plj_";

/// A freshly created join token, with everything the operator needs.
#[derive(Clone, Serialize)]
pub struct IssuedToken {
    pub token: String,
    pub ca_pin: String,
    pub expires_at: String,
    pub command: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("ca_pin", &self.ca_pin)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Formats a Unix time for people and JSON.
pub fn format_time(unix: i64) -> String {
    // RFC 3339 ends with the year 9999; later times (a token that "never" expires) show as that.
    const LAST_RFC3339_SECOND: i64 = 253_402_300_799;
    let time =
        std::time::UNIX_EPOCH + Duration::from_secs(unix.clamp(0, LAST_RFC3339_SECOND) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Creates a join token valid for `ttl`, optionally bound to one node name.
pub async fn create_join_token(
    db: &Db,
    ca_pin: &str,
    hub_address: &str,
    ttl: Duration,
    node_name: Option<&str>,
) -> Result<IssuedToken, DbError> {
    let token = new_secret(TOKEN_PREFIX);
    let now = now_unix();
    let expires_at = now + ttl.as_secs() as i64;
    db.insert_join_token(&hash_secret(&token), node_name, now, expires_at)
        .await?;
    let mut command =
        format!("proxlab-agent enroll --hub {hub_address} --token {token} --ca-pin {ca_pin}");
    if let Some(name) = node_name {
        command.push_str(&format!(" --node-name {name}"));
    }
    Ok(IssuedToken {
        token,
        ca_pin: ca_pin.to_owned(),
        expires_at: format_time(expires_at),
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_as_rfc3339() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(format_time(-5), "1970-01-01T00:00:00Z");
    }
}
