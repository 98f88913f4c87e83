//! Console tickets: stored by hash, spent once, short-lived.

use sqlx::Row;

use super::{Db, DbError};
use crate::vm_key::VmKey;

/// A spent ticket: whom and what it was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpentTicket {
    pub user_id: i64,
    pub vm: VmKey,
    pub kind: String,
}

/// Why a ticket could not be spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketRefusal {
    Unknown,
    Expired,
    Spent,
}

/// How long spent and expired tickets are kept (for nothing but a clear refusal).
const KEEP_SECS: i64 = 3600;

impl Db {
    pub async fn insert_console_ticket(
        &self,
        ticket_hash: &str,
        user_id: i64,
        vm: VmKey,
        kind: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), DbError> {
        sqlx::query("DELETE FROM console_tickets WHERE expires_at < $1")
            .bind(now - KEEP_SECS)
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO console_tickets (ticket_hash, user_id, vmid, kind, created_at, expires_at, \
             cluster_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(ticket_hash)
        .bind(user_id)
        .bind(i64::from(vm.vmid))
        .bind(kind)
        .bind(now)
        .bind(expires_at)
        .bind(vm.cluster)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Spends a ticket: of two concurrent attempts, exactly one succeeds.
    pub async fn spend_console_ticket(
        &self,
        ticket_hash: &str,
        now: i64,
    ) -> Result<Result<SpentTicket, TicketRefusal>, DbError> {
        let spent = sqlx::query(
            "UPDATE console_tickets SET used_at = $2 \
             WHERE ticket_hash = $1 AND used_at IS NULL AND expires_at > $2 \
             RETURNING user_id, cluster_id, vmid, kind",
        )
        .bind(ticket_hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        if let Some(row) = spent {
            return Ok(Ok(SpentTicket {
                user_id: row.try_get("user_id")?,
                vm: VmKey::new(
                    row.try_get("cluster_id")?,
                    row.try_get::<i64, _>("vmid")? as u32,
                ),
                kind: row.try_get("kind")?,
            }));
        }
        let row = sqlx::query("SELECT used_at FROM console_tickets WHERE ticket_hash = $1")
            .bind(ticket_hash)
            .fetch_optional(self.pool())
            .await?;
        Ok(Err(match row {
            None => TicketRefusal::Unknown,
            Some(row) => match row.try_get::<Option<i64>, _>("used_at")? {
                Some(_) => TicketRefusal::Spent,
                None => TicketRefusal::Expired,
            },
        }))
    }
}
