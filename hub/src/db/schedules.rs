//! Class schedules and the record of their occurrences (which is also the claim that makes
//! each occurrence act once, whatever the number of hub processes).

use sqlx::Row;

use super::{Db, DbError};

/// A schedule rule as stored; `domain::schedules` gives it meaning.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScheduleRow {
    pub id: i64,
    pub class_id: i64,
    /// `once` or `weekly`.
    pub repeat: String,
    pub start_date: String,
    pub end_date: Option<String>,
    /// Bit 0 Monday … bit 6 Sunday.
    pub weekdays: i64,
    pub start_time: Option<String>,
    pub stop_time: Option<String>,
    pub time_zone: String,
    pub note: String,
    pub created_by: String,
    pub created_at: i64,
}

/// What a schedule did at one of its occurrences.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FiringRow {
    pub schedule_id: i64,
    pub due_at: i64,
    /// `start`, `stop` or `warn`.
    pub action: String,
    pub claimed_by: String,
    pub done_at: Option<i64>,
    /// `done`, `skipped`, `failed`, or empty while it runs.
    pub outcome: String,
    pub detail: String,
    pub task_id: Option<i64>,
}

/// An occurrence by its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiringKey<'a> {
    pub schedule_id: i64,
    pub due_at: i64,
    pub action: &'a str,
}

const SCHEDULE_COLUMNS: &str = "id, class_id, repeat, start_date, end_date, weekdays, \
     start_time, stop_time, time_zone, note, created_by, created_at";

const FIRING_COLUMNS: &str =
    "schedule_id, due_at, action, claimed_by, done_at, outcome, detail, task_id";

fn schedule_from_row(row: &sqlx::any::AnyRow) -> Result<ScheduleRow, sqlx::Error> {
    Ok(ScheduleRow {
        id: row.try_get("id")?,
        class_id: row.try_get("class_id")?,
        repeat: row.try_get("repeat")?,
        start_date: row.try_get("start_date")?,
        end_date: row.try_get("end_date")?,
        weekdays: row.try_get("weekdays")?,
        start_time: row.try_get("start_time")?,
        stop_time: row.try_get("stop_time")?,
        time_zone: row.try_get("time_zone")?,
        note: row.try_get("note")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
    })
}

fn firing_from_row(row: &sqlx::any::AnyRow) -> Result<FiringRow, sqlx::Error> {
    Ok(FiringRow {
        schedule_id: row.try_get("schedule_id")?,
        due_at: row.try_get("due_at")?,
        action: row.try_get("action")?,
        claimed_by: row.try_get("claimed_by")?,
        done_at: row.try_get("done_at")?,
        outcome: row.try_get("outcome")?,
        detail: row.try_get("detail")?,
        task_id: row.try_get("task_id")?,
    })
}

impl Db {
    /// Stores a new rule (its `id` is ignored); returns its id.
    pub async fn insert_schedule(&self, rule: &ScheduleRow) -> Result<i64, DbError> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO class_schedules (class_id, repeat, start_date, end_date, weekdays, \
             start_time, stop_time, time_zone, note, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(rule.class_id)
        .bind(&rule.repeat)
        .bind(&rule.start_date)
        .bind(&rule.end_date)
        .bind(rule.weekdays)
        .bind(&rule.start_time)
        .bind(&rule.stop_time)
        .bind(&rule.time_zone)
        .bind(&rule.note)
        .bind(&rule.created_by)
        .bind(rule.created_at)
        .fetch_one(self.pool())
        .await?;
        Ok(id)
    }

    /// A class's rules, oldest first.
    pub async fn class_schedules(&self, class_id: i64) -> Result<Vec<ScheduleRow>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM class_schedules WHERE class_id = $1 ORDER BY id"
        ))
        .bind(class_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(schedule_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Every rule of every class.
    pub async fn all_schedules(&self) -> Result<Vec<ScheduleRow>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM class_schedules ORDER BY id"
        ))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(schedule_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Removes a class's rule; `false` when the class has no such rule.
    pub async fn delete_schedule(&self, class_id: i64, id: i64) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM class_schedules WHERE class_id = $1 AND id = $2")
            .bind(class_id)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The occurrences due at or after `since` that a hub has claimed (done or not).
    pub async fn firings_since(&self, since: i64) -> Result<Vec<FiringRow>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {FIRING_COLUMNS} FROM schedule_firings WHERE due_at >= $1"
        ))
        .bind(since)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(firing_from_row).collect::<Result<_, _>>()?)
    }

    /// A class's newest occurrences, newest first.
    pub async fn class_firings(
        &self,
        class_id: i64,
        limit: i64,
    ) -> Result<Vec<FiringRow>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {FIRING_COLUMNS} FROM schedule_firings WHERE schedule_id IN \
             (SELECT id FROM class_schedules WHERE class_id = $1) \
             ORDER BY due_at DESC, action LIMIT $2"
        ))
        .bind(class_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(firing_from_row).collect::<Result<_, _>>()?)
    }

    /// Claims an occurrence for `claimer`: `true` for exactly one caller, whichever process
    /// it runs in; a claim left undone since before `lease_before` (its process died) is
    /// taken over.
    pub async fn claim_firing(
        &self,
        key: FiringKey<'_>,
        claimer: &str,
        now: i64,
        lease_before: i64,
    ) -> Result<bool, DbError> {
        let inserted = sqlx::query(
            "INSERT INTO schedule_firings (schedule_id, due_at, action, claimed_by, claimed_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(key.schedule_id)
        .bind(key.due_at)
        .bind(key.action)
        .bind(claimer)
        .bind(now)
        .execute(self.pool())
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(true);
        }
        let taken_over = sqlx::query(
            "UPDATE schedule_firings SET claimed_by = $4, claimed_at = $5 \
             WHERE schedule_id = $1 AND due_at = $2 AND action = $3 \
             AND done_at IS NULL AND claimed_at < $6",
        )
        .bind(key.schedule_id)
        .bind(key.due_at)
        .bind(key.action)
        .bind(claimer)
        .bind(now)
        .bind(lease_before)
        .execute(self.pool())
        .await?;
        Ok(taken_over.rows_affected() == 1)
    }

    /// Records an attempt that failed but may work later (a node was offline): the claim is
    /// left unfinished and dated so that a pass at `retry_at` or later takes it over.
    pub async fn retry_firing_later(
        &self,
        key: FiringKey<'_>,
        detail: &str,
        task_id: Option<i64>,
        retry_at: i64,
        lease_secs: i64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE schedule_firings SET claimed_at = $4, outcome = 'failed', detail = $5, \
             task_id = $6 WHERE schedule_id = $1 AND due_at = $2 AND action = $3",
        )
        .bind(key.schedule_id)
        .bind(key.due_at)
        .bind(key.action)
        .bind(retry_at - lease_secs)
        .bind(detail)
        .bind(task_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records how a claimed occurrence ended.
    pub async fn finish_firing(
        &self,
        key: FiringKey<'_>,
        outcome: &str,
        detail: &str,
        task_id: Option<i64>,
        now: i64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE schedule_firings SET done_at = $4, outcome = $5, detail = $6, task_id = $7 \
             WHERE schedule_id = $1 AND due_at = $2 AND action = $3",
        )
        .bind(key.schedule_id)
        .bind(key.due_at)
        .bind(key.action)
        .bind(now)
        .bind(outcome)
        .bind(detail)
        .bind(task_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
