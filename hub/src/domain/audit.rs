//! Writing the audit log: every state-changing action, with who, what, target and result.

use crate::db::audit::NewAudit;
use crate::db::{Db, now_unix};
use crate::domain::viewer::Viewer;

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Denied,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

/// Who acted.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    User(&'a Viewer),
    /// Someone not signed in (a failed login).
    Anonymous,
    /// An operator at the hub's command line.
    Operator,
    /// The hub itself, by a rule someone set (a class's schedule, say), named here.
    Automatic(&'static str),
}

impl<'a> From<&'a Viewer> for Actor<'a> {
    fn from(viewer: &'a Viewer) -> Self {
        Actor::User(viewer)
    }
}

impl<'a> From<Option<&'a Viewer>> for Actor<'a> {
    fn from(viewer: Option<&'a Viewer>) -> Self {
        viewer.map_or(Actor::Anonymous, Actor::User)
    }
}

/// An entry to record: what was done to which target, how it ended, and the class task it
/// was part of (a bulk action records one entry per VM, grouped by the task).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub action: &'a str,
    pub target: &'a str,
    pub outcome: Outcome,
    pub detail: &'a str,
    pub task_id: Option<i64>,
}

impl<'a> Entry<'a> {
    pub fn new(action: &'a str, target: &'a str, outcome: Outcome, detail: &'a str) -> Self {
        Self {
            action,
            target,
            outcome,
            detail,
            task_id: None,
        }
    }

    pub fn in_task(self, task_id: Option<i64>) -> Self {
        Self { task_id, ..self }
    }
}

/// Records an action. A failure to write is logged, not returned: the action itself has
/// already happened (or failed) and its caller must learn that, not an audit error.
pub async fn record(
    db: &Db,
    actor: impl Into<Actor<'_>>,
    action: &str,
    target: &str,
    outcome: Outcome,
    detail: &str,
) {
    record_entry(db, actor, Entry::new(action, target, outcome, detail)).await;
}

/// Records an [`Entry`], like [`record`].
pub async fn record_entry(db: &Db, actor: impl Into<Actor<'_>>, entry: Entry<'_>) {
    let actor = actor.into();
    let row = NewAudit {
        actor_id: match actor {
            Actor::User(viewer) => Some(viewer.id),
            Actor::Anonymous | Actor::Operator | Actor::Automatic(_) => None,
        },
        actor: match actor {
            Actor::User(viewer) => viewer.username.as_str(),
            Actor::Anonymous => "anonymous",
            Actor::Operator => "operator (command line)",
            Actor::Automatic(rule) => rule,
        },
        action: entry.action,
        target: entry.target,
        result: entry.outcome.as_str(),
        detail: entry.detail,
        task_id: entry.task_id,
    };
    if let Err(err) = db.insert_audit(&row, now_unix()).await {
        tracing::error!(%err, action = entry.action, target = entry.target, "cannot write the audit log");
    }
}
