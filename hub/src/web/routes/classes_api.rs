//! Classes in the JSON API: create, look at, invite, join, add capacity, delete, and jobs.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::HubState;
use crate::db::classes::{ClassRow, JobRow, JoinOutcome};
use crate::db::states::{ClassState, ClassVmKind, ClassVmState, JobKind, JobState};
use crate::db::tasks::TaskResultRow;
use crate::domain::access::VmAction;
use crate::domain::classes::tasks::{self, Selection, TaskReport};
use crate::domain::classes::{self, ClassError, ClassRequest, ClassStanding};
use crate::domain::tokens::format_time;
use crate::vm_key::{VmKey, VmRef};
use crate::web::error::{ApiError, ApiJson, AppError};
use crate::web::identity::{CurrentUser, RequireStaff};

type ApiResult<T> = Result<Json<T>, ApiError>;

impl From<ClassError> for AppError {
    fn from(err: ClassError) -> Self {
        match err {
            ClassError::NotFound => AppError::NotFound("no such class".into()),
            ClassError::Invalid(message) => AppError::BadRequest(message),
            ClassError::Conflict(message) => AppError::Conflict(message),
            ClassError::Forbidden(_) => AppError::Forbidden,
            ClassError::Db(err) => err.into(),
        }
    }
}

/// A class as the API shows it.
#[derive(Debug, Serialize)]
pub(in crate::web) struct ClassView {
    id: i64,
    name: String,
    description: String,
    /// The template's key (`CLUSTER-VMID`) and its VMID.
    template: Option<VmKey>,
    template_vmid: Option<u32>,
    seats: u32,
    pinned_node: Option<String>,
    cores: Option<u32>,
    memory_mib: Option<u64>,
    state: ClassState,
    invite_active: bool,
    invite_expires_at: Option<String>,
    invite_seat_limit: Option<u32>,
    created_at: String,
    /// The template version new VMs are made from; `None` for a class of empty VMs.
    current_version: Option<i64>,
    /// How many versions are kept to roll back to.
    keep_versions: u32,
}

impl From<&ClassRow> for ClassView {
    fn from(class: &ClassRow) -> Self {
        Self {
            id: class.id,
            name: class.name.clone(),
            description: class.description.clone(),
            template: class.template,
            template_vmid: class.template.map(|template| template.vmid),
            seats: class.seats,
            pinned_node: class.pinned_node.clone(),
            cores: class.cores,
            memory_mib: class.memory_mib,
            state: class.state,
            invite_active: class.has_invite,
            invite_expires_at: class.invite_expires_at.map(format_time),
            invite_seat_limit: class.invite_seat_limit,
            created_at: format_time(class.created_at),
            current_version: class.current_version,
            keep_versions: class.keep_versions,
        }
    }
}

#[derive(Debug, Serialize)]
struct JobView {
    id: i64,
    kind: JobKind,
    state: JobState,
    message: String,
    created_at: String,
    updated_at: String,
}

impl From<&JobRow> for JobView {
    fn from(job: &JobRow) -> Self {
        Self {
            id: job.id,
            kind: job.kind,
            state: job.state,
            message: job.message.clone(),
            created_at: format_time(job.created_at),
            updated_at: format_time(job.updated_at),
        }
    }
}

#[derive(Debug, Serialize)]
struct ClassVmView {
    /// `CLUSTER-VMID`.
    id: VmKey,
    vmid: u32,
    kind: ClassVmKind,
    node: String,
    /// Deployment: `planned`, `ready`, `failed`, `removing` or `recycling`.
    state: ClassVmState,
    attempts: u32,
    error: String,
    assignee: Option<String>,
    /// The template version its disks were made from (a base: the version it holds).
    version: Option<i64>,
    /// For a VM adopted into the class: `template`, `linked` (can be reset) or `plain`
    /// (started and stopped only). Absent for VMs proxlab made.
    #[serde(skip_serializing_if = "Option::is_none")]
    adopted: Option<crate::db::states::Adoption>,
}

#[derive(Debug, Serialize)]
struct StudentView {
    username: String,
    /// Their VM's key (`CLUSTER-VMID`) and VMID, once they have one.
    vm: Option<VmKey>,
    vmid: Option<u32>,
}

#[derive(Debug, Serialize)]
struct ClassDetail {
    class: ClassView,
    /// The current invite link's path (`/join/<token>`), for the class's owners, when the hub
    /// can show it again.
    invite_path: Option<String>,
    /// `owner` or `assistant`: how the asker stands in the class.
    standing: ClassStanding,
    owners: Vec<String>,
    assistants: Vec<String>,
    vms: Vec<ClassVmView>,
    students: Vec<StudentView>,
    jobs: Vec<JobView>,
}

#[derive(Debug, Serialize)]
struct ClassList {
    classes: Vec<ClassView>,
}

async fn list(State(state): State<Arc<HubState>>, user: CurrentUser) -> ApiResult<ClassList> {
    let viewer = &user.viewer;
    let rows = classes::listed_classes(&state, viewer).await?;
    Ok(Json(ClassList {
        classes: rows.iter().map(ClassView::from).collect(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateClass {
    name: String,
    #[serde(default)]
    description: String,
    /// Leave out for a class of empty VMs. `"CLUSTER-VMID"`, or a VMID while only one
    /// cluster has it.
    #[serde(default)]
    template_vmid: Option<VmRef>,
    seats: u32,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    cores: Option<u32>,
    #[serde(default)]
    memory_mib: Option<u64>,
    #[serde(default)]
    disk_gib: Option<u32>,
    #[serde(default)]
    storage: Option<String>,
    #[serde(default)]
    bridge: Option<String>,
    /// Plugin ids in the order their steps run.
    #[serde(default)]
    plugins: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Created {
    class: ClassView,
    job: i64,
}

/// The empty-VM spec from optional fields, with defaults for what is left out.
pub(in crate::web) fn empty_spec(
    disk_gib: Option<u32>,
    storage: Option<String>,
    bridge: Option<String>,
) -> classes::EmptyVmSpec {
    let defaults = classes::EmptyVmSpec::default();
    let given = |text: Option<String>| text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    classes::EmptyVmSpec {
        disk_gib: disk_gib.unwrap_or(defaults.disk_gib),
        storage: given(storage).unwrap_or(defaults.storage),
        bridge: given(bridge).unwrap_or(defaults.bridge),
    }
}

async fn create(
    State(state): State<Arc<HubState>>,
    RequireStaff(user): RequireStaff,
    ApiJson(body): ApiJson<CreateClass>,
) -> ApiResult<Created> {
    let request = ClassRequest {
        name: body.name,
        description: body.description,
        template: match body.template_vmid {
            Some(template) => Some(crate::web::vm_ref_key(&state, &user.viewer, template).await?),
            None => None,
        },
        seats: body.seats,
        node: body.node.filter(|node| !node.is_empty()),
        cores: body.cores,
        memory_mib: body.memory_mib,
        empty: empty_spec(body.disk_gib, body.storage, body.bridge),
        plugins: body.plugins,
    };
    let (class_id, job) = classes::create_class(&state, &user.viewer, &request).await?;
    let class = state
        .db
        .class(class_id)
        .await?
        .ok_or_else(|| AppError::NotFound("no such class".into()))?;
    Ok(Json(Created {
        class: ClassView::from(&class),
        job,
    }))
}

async fn detail(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
) -> ApiResult<ClassDetail> {
    let (class, standing) = classes::class_in_view(&state, &user.viewer, id).await?;
    let vms = state.db.class_vms(id).await?;
    let invite_path = match standing {
        ClassStanding::Owner => {
            classes::current_invite(&state, &class).map(|token| format!("/join/{token}"))
        }
        ClassStanding::Assistant => None,
    };
    Ok(Json(ClassDetail {
        class: ClassView::from(&class),
        invite_path,
        standing,
        owners: state.db.class_owners(id).await?,
        assistants: state.db.class_assistants(id).await?,
        vms: vms
            .into_iter()
            .map(|vm| ClassVmView {
                id: vm.key,
                vmid: vm.vmid,
                kind: vm.kind,
                node: vm.node,
                state: vm.state,
                attempts: vm.attempts,
                error: vm.error,
                assignee: vm.assignee,
                version: vm.version,
                adopted: vm.adopted,
            })
            .collect(),
        students: state
            .db
            .roster(id)
            .await?
            .into_iter()
            .map(|(_, username, vm)| StudentView {
                username,
                vm,
                vmid: vm.map(|vm| vm.vmid),
            })
            .collect(),
        jobs: state
            .db
            .class_jobs(id)
            .await?
            .iter()
            .map(JobView::from)
            .collect(),
    }))
}

#[derive(Debug, Serialize)]
struct JobStarted {
    job: i64,
}

async fn delete(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
) -> ApiResult<JobStarted> {
    let job = classes::delete_class(&state, &user.viewer, id).await?;
    Ok(Json(JobStarted { job }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Capacity {
    add: u32,
}

async fn capacity(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<Capacity>,
) -> ApiResult<JobStarted> {
    let job = classes::add_capacity(&state, &user.viewer, id, body.add).await?;
    Ok(Json(JobStarted { job }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteRequest {
    /// Days until the link expires; 0 for never. Default: 7.
    #[serde(default)]
    expires_in_days: Option<u32>,
    #[serde(default)]
    seat_limit: Option<u32>,
    /// Only accounts whose email is in this domain may join.
    #[serde(default)]
    email_domain: Option<String>,
    /// Only the people on the class's roster may join.
    #[serde(default)]
    roster_only: bool,
}

#[derive(Debug, Serialize)]
struct Invite {
    token: String,
    path: String,
    expires_at: Option<String>,
}

async fn invite(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    body: Option<ApiJson<InviteRequest>>,
) -> ApiResult<Invite> {
    let body = body.map(|ApiJson(body)| body).unwrap_or_default();
    let ttl = match body.expires_in_days {
        None => Some(classes::DEFAULT_INVITE_TTL),
        Some(0) => None,
        Some(days) if days <= 366 => Some(Duration::from_secs(u64::from(days) * 86_400)),
        Some(_) => {
            return Err(AppError::BadRequest("an invite lasts at most 366 days".into()).into());
        }
    };
    let rules = classes::InviteRules {
        ttl,
        seat_limit: body.seat_limit,
        domain: body.email_domain,
        roster_only: body.roster_only,
    };
    let token = classes::rotate_invite(&state, &user.viewer, id, &rules).await?;
    let class = classes::owned_class(&state, &user.viewer, id).await?;
    Ok(Json(Invite {
        path: format!("/join/{token}"),
        token,
        expires_at: class.invite_expires_at.map(format_time),
    }))
}

#[derive(Debug, Serialize)]
struct Joined {
    class: ClassView,
    /// The VM given to the student (its key, and its VMID), or `None` while waitlisted.
    vm: Option<VmKey>,
    vmid: Option<u32>,
    waitlisted: bool,
}

async fn join(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(token): Path<String>,
) -> ApiResult<Joined> {
    let (class, outcome) = classes::join(&state, &user.viewer, &token).await?;
    let vm = match outcome {
        JoinOutcome::Assigned(vm) => Some(vm),
        JoinOutcome::Waitlisted => None,
    };
    Ok(Json(Joined {
        class: ClassView::from(&class),
        vm,
        vmid: vm.map(|vm| vm.vmid),
        waitlisted: vm.is_none(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Username {
    username: String,
}

#[derive(Debug, Serialize)]
struct Done {
    ok: bool,
}

async fn add_owner(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<Username>,
) -> ApiResult<Done> {
    classes::add_owner(&state, &user.viewer, id, &body.username).await?;
    Ok(Json(Done { ok: true }))
}

async fn remove_owner(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((id, username)): Path<(i64, String)>,
) -> ApiResult<Done> {
    classes::remove_owner(&state, &user.viewer, id, &username).await?;
    Ok(Json(Done { ok: true }))
}

async fn add_assistant(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<Username>,
) -> ApiResult<Done> {
    classes::add_assistant(&state, &user.viewer, id, &body.username).await?;
    Ok(Json(Done { ok: true }))
}

async fn remove_assistant(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((id, username)): Path<(i64, String)>,
) -> ApiResult<Done> {
    classes::remove_assistant(&state, &user.viewer, id, &username).await?;
    Ok(Json(Done { ok: true }))
}

#[derive(Debug, Serialize)]
struct StudentRemoved {
    ok: bool,
    /// The job that makes their VM fresh for the next student.
    job: Option<i64>,
}

async fn remove_student(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((id, username)): Path<(i64, String)>,
) -> ApiResult<StudentRemoved> {
    let job = classes::remove_student(&state, &user.viewer, id, &username).await?;
    Ok(Json(StudentRemoved { ok: true, job }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VmIds {
    /// `"CLUSTER-VMID"` or VMIDs.
    vmids: Vec<VmRef>,
}

async fn remove_vms(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<VmIds>,
) -> ApiResult<JobStarted> {
    let job = classes::remove_vms(&state, &user.viewer, id, &body.vmids).await?;
    Ok(Json(JobStarted { job }))
}

async fn job(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
) -> ApiResult<JobView> {
    let job = state
        .db
        .job(id)
        .await?
        .ok_or_else(|| AppError::NotFound("no such job".into()))?;
    // Its creator and admins may always look (the class may be gone, or going, after a
    // delete); the class's other owners and its assistants while it exists.
    let allowed = user.viewer.is_admin()
        || job.created_by == Some(user.viewer.id)
        || match job.class_id {
            Some(class_id) => classes::class_in_view(&state, &user.viewer, class_id)
                .await
                .is_ok(),
            None => false,
        };
    if !allowed {
        return Err(AppError::NotFound("no such job".into()).into());
    }
    Ok(Json(JobView::from(&job)))
}

/// The VMs a bulk action is for: `{"all": true}` or `{"vmids": [...]}`, never neither.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkRequest {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    vmids: Vec<VmRef>,
}

/// A task with the result for every VM.
#[derive(Debug, Serialize)]
struct TaskView {
    id: i64,
    action: String,
    started_by: String,
    started_at: String,
    finished_at: Option<String>,
    total: i64,
    failed: i64,
    results: Vec<TaskResultRow>,
}

impl From<TaskReport> for TaskView {
    fn from(report: TaskReport) -> Self {
        let task = report.task;
        Self {
            id: task.id,
            action: task.action,
            started_by: task.started_by,
            started_at: format_time(task.started_at),
            finished_at: task.finished_at.map(format_time),
            total: task.total,
            failed: task.failed,
            results: report.results,
        }
    }
}

async fn bulk(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((id, action)): Path<(i64, String)>,
    ApiJson(body): ApiJson<BulkRequest>,
) -> ApiResult<TaskView> {
    let action = VmAction::parse(&action)
        .ok_or_else(|| AppError::NotFound(format!("there is no VM action {action:?}")))?;
    // Who may act comes first: the request's contents say nothing to those who may not.
    classes::class_in_view(&state, &user.viewer, id).await?;
    let selection = match (body.all, body.vmids.is_empty()) {
        (true, true) => Selection::All,
        (false, false) => Selection::Vms(body.vmids),
        (true, false) => {
            return Err(AppError::BadRequest("give either all or vmids, not both".into()).into());
        }
        (false, true) => {
            return Err(AppError::BadRequest(
                "choose the VMs: {\"all\": true} or {\"vmids\": [...]}".into(),
            )
            .into());
        }
    };
    let task_id = tasks::run_bulk(&state, &user.viewer, id, action, &selection).await?;
    let report = tasks::report(&state, &user.viewer, id, task_id).await?;
    Ok(Json(TaskView::from(report)))
}

async fn task(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((id, task_id)): Path<(i64, i64)>,
) -> ApiResult<TaskView> {
    let report = tasks::report(&state, &user.viewer, id, task_id)
        .await
        .map_err(|err| match err {
            ClassError::NotFound => AppError::NotFound("no such task".into()),
            other => other.into(),
        })?;
    Ok(Json(TaskView::from(report)))
}

pub(in crate::web) fn router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/classes", get(list).post(create))
        .route("/classes/{id}", get(detail).delete(delete))
        .route("/classes/{id}/capacity", post(capacity))
        .route("/classes/{id}/invite", post(invite))
        .route("/join/{token}", post(join))
        .route("/classes/{id}/owners", post(add_owner))
        .route(
            "/classes/{id}/owners/{username}",
            axum::routing::delete(remove_owner),
        )
        .route("/classes/{id}/assistants", post(add_assistant))
        .route(
            "/classes/{id}/assistants/{username}",
            axum::routing::delete(remove_assistant),
        )
        .route(
            "/classes/{id}/students/{username}",
            axum::routing::delete(remove_student),
        )
        .route("/classes/{id}/remove-vms", post(remove_vms))
        .route("/jobs/{id}", get(job))
        .route("/classes/{id}/bulk/{action}", post(bulk))
        .route("/classes/{id}/tasks/{task}", get(task))
}
