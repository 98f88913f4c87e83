//! The admin pages: nodes, join tokens, users and the audit log.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::{Deserialize, Serialize};

use crate::HubState;
use crate::db::audit::{AuditFilter, AuditRow};
use crate::db::users::Role;
use crate::domain::admin::{self, AdminError, JoinTokenRequest, UserChange};
use crate::domain::audit::Actor;
use crate::domain::tokens::{IssuedToken, format_time};
use crate::web::cookies::percent_encode;
use crate::web::error::{AppError, PageError};
use crate::web::identity::RequireAdmin;
use crate::web::render::{Layout, Page, redirect_with_flash};
use crate::web::views::NodeView;

const AUDIT_PAGE: u32 = 100;

#[derive(Debug, Serialize)]
struct NodesView {
    nodes: Vec<NodeView>,
}

async fn nodes(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    headers: HeaderMap,
) -> Result<Page, PageError> {
    let nodes = state.db.node_overviews().await?;
    let view = NodesView {
        nodes: nodes.iter().map(NodeView::from).collect(),
    };
    Ok(Page::render(
        "pages/admin/nodes.html",
        &Layout::new(Some(&user), &headers, "nodes", "Nodes"),
        &view,
    )?)
}

async fn revoke_node(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    let actor = Actor::User(&user.viewer);
    let revoked = admin::revoke_node(&state.db, Some(&state.registry), actor, &name).await?;
    Ok(if revoked {
        redirect_with_flash("/admin/nodes", "ok", &format!("Node {name} is revoked."))
    } else {
        redirect_with_flash(
            "/admin/nodes",
            "error",
            &format!("No active node named {name}."),
        )
    })
}

#[derive(Debug, Serialize)]
struct JoinTokenView {
    id: i64,
    node: Option<String>,
    created_at: String,
    expires_at: String,
    state: &'static str,
}

#[derive(Debug, Serialize)]
struct JoinTokensView {
    tokens: Vec<JoinTokenView>,
    issued: Option<IssuedToken>,
}

async fn render_join_tokens(
    state: &HubState,
    user: &crate::web::identity::CurrentUser,
    headers: &HeaderMap,
    issued: Option<IssuedToken>,
) -> Result<Page, PageError> {
    let now = crate::db::now_unix();
    let tokens = state
        .db
        .list_join_tokens()
        .await?
        .into_iter()
        .rev()
        .map(|token| JoinTokenView {
            id: token.id,
            node: token.node_name.clone(),
            created_at: format_time(token.created_at),
            expires_at: format_time(token.expires_at),
            state: token.state(now),
        })
        .collect();
    Ok(Page::render(
        "pages/admin/join_tokens.html",
        &Layout::new(Some(user), headers, "join-tokens", "Join tokens"),
        &JoinTokensView { tokens, issued },
    )?)
}

async fn join_tokens(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    headers: HeaderMap,
) -> Result<Page, PageError> {
    render_join_tokens(&state, &user, &headers, None).await
}

#[derive(Debug, Deserialize)]
struct JoinTokenForm {
    ttl: String,
    #[serde(default)]
    node: String,
}

async fn create_token(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    headers: HeaderMap,
    Form(form): Form<JoinTokenForm>,
) -> Result<Response, PageError> {
    let ttl = humantime::parse_duration(form.ttl.trim())
        .ok()
        .filter(|ttl| *ttl >= Duration::from_secs(60) && *ttl <= Duration::from_secs(30 * 86_400))
        .ok_or_else(|| {
            AppError::BadRequest("choose a validity between 1 minute and 30 days".into())
        })?;
    let node = Some(form.node.trim()).filter(|node| !node.is_empty());
    let request = JoinTokenRequest {
        node,
        ttl,
        ca_pin: &state.ca_pin.to_string(),
        hub_address: &state.config.agent_facing_address(),
    };
    let issued = admin::issue_join_token(&state.db, Actor::User(&user.viewer), request).await?;
    Ok(render_join_tokens(&state, &user, &headers, Some(issued))
        .await?
        .into_response())
}

async fn revoke_token(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    let revoked = admin::revoke_join_token(&state.db, Actor::User(&user.viewer), id).await?;
    Ok(if revoked {
        redirect_with_flash(
            "/admin/join-tokens",
            "ok",
            &format!("Join token {id} is revoked."),
        )
    } else {
        redirect_with_flash(
            "/admin/join-tokens",
            "error",
            &format!("Join token {id} is not usable any more."),
        )
    })
}

#[derive(Debug, Serialize)]
struct UserView {
    id: i64,
    username: String,
    display_name: String,
    email: String,
    role: &'static str,
    /// How the account signs in: `local`, `oidc:<id>` or `ldap`.
    source: String,
    /// An admin set the role: the source's group mapping no longer changes it.
    role_pinned: bool,
    disabled: bool,
    last_login_at: Option<String>,
}

#[derive(Debug, Serialize)]
struct ShownPassword {
    username: String,
    password: String,
}

#[derive(Debug, Serialize)]
struct UsersView {
    users: Vec<UserView>,
    password: Option<ShownPassword>,
    self_registration: bool,
}

async fn render_users(
    state: &HubState,
    user: &crate::web::identity::CurrentUser,
    headers: &HeaderMap,
    password: Option<ShownPassword>,
) -> Result<Page, PageError> {
    let users = state
        .db
        .list_users()
        .await?
        .into_iter()
        .map(|row| UserView {
            id: row.id,
            username: row.username,
            display_name: row.display_name,
            email: row.email,
            role: row.role.as_str(),
            source: row.auth_source,
            role_pinned: row.role_pinned,
            disabled: row.disabled,
            last_login_at: row.last_login_at.map(format_time),
        })
        .collect();
    Ok(Page::render(
        "pages/admin/users.html",
        &Layout::new(Some(user), headers, "users", "Users"),
        &UsersView {
            users,
            password,
            self_registration: state
                .db
                .flag(crate::db::settings::SELF_REGISTRATION)
                .await?,
        },
    )?)
}

async fn users(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    headers: HeaderMap,
) -> Result<Page, PageError> {
    render_users(&state, &user, &headers, None).await
}

#[derive(Debug, Deserialize)]
struct NewUserForm {
    username: String,
    role: String,
}

fn parse_role(text: &str) -> Result<Role, AppError> {
    text.parse().map_err(AppError::BadRequest)
}

async fn create_user(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    headers: HeaderMap,
    Form(form): Form<NewUserForm>,
) -> Result<Response, PageError> {
    let role = parse_role(&form.role)?;
    let username = form.username.trim();
    match admin::add_user(&state.db, Actor::User(&user.viewer), username, role, None).await {
        Ok(password) => {
            let shown = password.map(|password| ShownPassword {
                username: username.to_owned(),
                password,
            });
            Ok(render_users(&state, &user, &headers, shown)
                .await?
                .into_response())
        }
        Err(AdminError::Invalid(message)) => {
            Ok(redirect_with_flash("/admin/users", "error", &message))
        }
        Err(err) => Err(AppError::from(err).into()),
    }
}

#[derive(Debug, Deserialize)]
struct ChangeUserForm {
    role: Option<String>,
}

async fn change_user(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    headers: HeaderMap,
    Path((id, change)): Path<(i64, String)>,
    Form(form): Form<ChangeUserForm>,
) -> Result<Response, PageError> {
    let change = UserChange::parse(&change)
        .ok_or_else(|| AppError::NotFound(format!("no user action {change:?}")))?;
    let target_user = state
        .db
        .user_by_id(id)
        .await?
        .ok_or_else(|| AppError::NotFound("no such user".into()))?;
    let actor = Actor::User(&user.viewer);
    let result = admin::change_user(&state.db, actor, id, change, form.role.as_deref()).await;
    match result {
        Ok(Some(password)) => Ok(render_users(
            &state,
            &user,
            &headers,
            Some(ShownPassword {
                username: target_user.username,
                password,
            }),
        )
        .await?
        .into_response()),
        Ok(None) => Ok(redirect_with_flash(
            "/admin/users",
            "ok",
            &format!("{} is updated.", target_user.username),
        )),
        Err(err) => Ok(redirect_with_flash(
            "/admin/users",
            "error",
            &AppError::from(err).to_string(),
        )),
    }
}

#[derive(Debug, Deserialize)]
struct RegistrationForm {
    /// `on` or `off`.
    value: String,
}

async fn set_self_registration(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    Form(form): Form<RegistrationForm>,
) -> Result<Response, PageError> {
    let on = form.value == "on";
    admin::set_self_registration(&state.db, Actor::User(&user.viewer), on).await?;
    Ok(redirect_with_flash(
        "/admin/users",
        "ok",
        if on {
            "Students can now create their own accounts through class invite links."
        } else {
            "Only admins create accounts now."
        },
    ))
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
    before: Option<i64>,
}

#[derive(Debug, Serialize)]
struct AuditEntryView {
    at: String,
    actor: String,
    action: String,
    target: String,
    result: String,
    detail: String,
    /// The other entries of the same class task (a bulk action), shown folded under this one.
    grouped: Vec<AuditEntryView>,
}

impl From<AuditRow> for AuditEntryView {
    fn from(row: AuditRow) -> Self {
        Self {
            at: format_time(row.at),
            actor: row.actor,
            action: row.action,
            target: row.target,
            result: row.result,
            detail: row.detail,
            grouped: Vec::new(),
        }
    }
}

/// The entries as the log shows them: the per-VM entries of one class task, next to each
/// other, become one line saying how many VMs and how many failed, with the VMs folded in.
fn group_by_task(rows: Vec<AuditRow>) -> Vec<AuditEntryView> {
    let mut entries: Vec<(Option<i64>, Vec<AuditRow>)> = Vec::new();
    for row in rows {
        match entries.last_mut() {
            Some((Some(task), group)) if row.task_id == Some(*task) => group.push(row),
            _ => entries.push((row.task_id, vec![row])),
        }
    }
    entries
        .into_iter()
        .map(|(task, group)| match task {
            Some(task) if group.len() > 1 => {
                let failed = group.iter().filter(|row| row.result != "ok").count();
                let first = &group[0];
                AuditEntryView {
                    at: format_time(first.at),
                    actor: first.actor.clone(),
                    action: first.action.clone(),
                    target: format!("{} VMs (task {task})", group.len()),
                    result: if failed == 0 { "ok" } else { "failed" }.into(),
                    detail: if failed == 0 {
                        "all done".into()
                    } else {
                        format!("{failed} of {} failed", group.len())
                    },
                    grouped: group.into_iter().map(AuditEntryView::from).collect(),
                }
            }
            _ => group
                .into_iter()
                .next()
                .map(AuditEntryView::from)
                .expect("a group has an entry"),
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct AuditView {
    entries: Vec<AuditEntryView>,
    filter: AuditQuery,
    filtered: bool,
    older: Option<String>,
}

async fn audit_log(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Result<Page, PageError> {
    let non_empty = |text: &str| Some(text.trim().to_owned()).filter(|text| !text.is_empty());
    let filter = AuditFilter {
        actor: non_empty(&query.actor),
        action: non_empty(&query.action),
        target: non_empty(&query.target),
        before_id: query.before,
        limit: AUDIT_PAGE,
    };
    let rows = state.db.find_audit(&filter).await?;
    let older = (rows.len() == AUDIT_PAGE as usize)
        .then(|| rows.last().map(|row| row.id))
        .flatten()
        .map(|last| {
            format!(
                "/admin/audit?actor={}&action={}&target={}&before={last}",
                percent_encode(&query.actor),
                percent_encode(&query.action),
                percent_encode(&query.target)
            )
        });
    let view = AuditView {
        entries: group_by_task(rows),
        filtered: filter.actor.is_some() || filter.action.is_some() || filter.target.is_some(),
        filter: query,
        older,
    };
    Ok(Page::render(
        "pages/admin/audit.html",
        &Layout::new(Some(&user), &headers, "audit", "Audit log"),
        &view,
    )?)
}

pub(in crate::web) fn router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/admin/nodes", get(nodes))
        .route("/admin/nodes/{name}/revoke", post(revoke_node))
        .route("/admin/join-tokens", get(join_tokens).post(create_token))
        .route("/admin/join-tokens/{id}/revoke", post(revoke_token))
        .route("/admin/users", get(users).post(create_user))
        .route("/admin/users/{id}/{change}", post(change_user))
        .route("/admin/audit", get(audit_log))
        .route(
            "/admin/settings/self-registration",
            post(set_self_registration),
        )
}
