//! Writing the audit log: every state-changing action, with who, what, target and result.

use crate::auth::Viewer;
use crate::db::audit::NewAudit;
use crate::db::{Db, now_unix};

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
    let actor = actor.into();
    let entry = NewAudit {
        actor_id: match actor {
            Actor::User(viewer) => Some(viewer.id),
            Actor::Anonymous | Actor::Operator => None,
        },
        actor: match actor {
            Actor::User(viewer) => viewer.username.as_str(),
            Actor::Anonymous => "anonymous",
            Actor::Operator => "operator (command line)",
        },
        action,
        target,
        result: outcome.as_str(),
        detail,
    };
    if let Err(err) = db.insert_audit(&entry, now_unix()).await {
        tracing::error!(%err, action, target, "cannot write the audit log");
    }
}
