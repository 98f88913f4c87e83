//! The audit log: who did what to which target, when, and how it ended.

use sqlx::Row;

use super::{Db, DbError};

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub result: String,
    pub detail: String,
    /// The class task the entry was part of.
    pub task_id: Option<i64>,
}

/// An entry to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit<'a> {
    pub actor_id: Option<i64>,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub result: &'a str,
    pub detail: &'a str,
    pub task_id: Option<i64>,
}

/// Which entries to read; every field narrows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// An action, or an action prefix ending in `.` (`vm.` matches `vm.start`).
    pub action: Option<String>,
    pub target: Option<String>,
    pub before_id: Option<i64>,
    pub limit: u32,
}

impl Db {
    pub async fn insert_audit(&self, entry: &NewAudit<'_>, now: i64) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor_id, actor, action, target, result, detail, \
             task_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(now)
        .bind(entry.actor_id)
        .bind(entry.actor)
        .bind(entry.action)
        .bind(entry.target)
        .bind(entry.result)
        .bind(entry.detail)
        .bind(entry.task_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The newest entries first.
    pub async fn find_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, DbError> {
        let mut conditions = vec!["1 = 1".to_owned()];
        let mut binds: Vec<String> = Vec::new();
        if let Some(actor) = &filter.actor {
            binds.push(actor.clone());
            conditions.push(format!("actor = ${}", binds.len()));
        }
        if let Some(action) = &filter.action {
            if let Some(prefix) = action.strip_suffix('.') {
                binds.push(format!("{prefix}.%"));
                conditions.push(format!("action LIKE ${}", binds.len()));
            } else {
                binds.push(action.clone());
                conditions.push(format!("action = ${}", binds.len()));
            }
        }
        if let Some(target) = &filter.target {
            binds.push(target.clone());
            conditions.push(format!("target = ${}", binds.len()));
        }
        if filter.before_id.is_some() {
            conditions.push(format!("id < ${}", binds.len() + 1));
        }
        let sql = format!(
            "SELECT id, at, actor, action, target, result, detail, task_id FROM audit_log WHERE {} \
             ORDER BY id DESC LIMIT {}",
            conditions.join(" AND "),
            filter.limit.clamp(1, 1000)
        );
        let mut query = sqlx::query(&sql);
        for bind in &binds {
            query = query.bind(bind.clone());
        }
        if let Some(id) = filter.before_id {
            query = query.bind(id);
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                Ok(AuditRow {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    result: row.try_get("result")?,
                    detail: row.try_get("detail")?,
                    task_id: row.try_get("task_id")?,
                })
            })
            .collect()
    }
}
