//! The class pages: the list and the create form, the teacher's class page (progress, VMs,
//! students, invite, capacity, bulk actions, deletion), and the student's join page.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::{Deserialize, Serialize};

use crate::HubState;
use crate::db::classes::{ClassRow, JoinOutcome};
use crate::db::inventory::VmFilter;
use crate::db::remote_access::ClassAccess;
use crate::db::states::{ClassState, ClassVmKind, ClassVmState};
use crate::db::tasks::{TaskResultRow, TaskRow};
use crate::domain::access::VmAction;
use crate::domain::classes::tasks::{self, Selection};
use crate::domain::classes::{self, ClassError, ClassRequest, ClassStanding};
use crate::domain::remote;
use crate::domain::tokens::format_time;
use crate::domain::vms;
use crate::vm_key::{VmKey, VmRef};
use crate::web::error::{AppError, PageError};
use crate::web::identity::{ClientAddr, CurrentUser, MaybeUser, RequireStaff};
use crate::web::render::{Layout, Page, redirect_with_flash};
use crate::web::views::{TemplateView, VmView};

#[derive(Debug, Serialize)]
struct ClassSummary {
    id: i64,
    name: String,
    description: String,
    seats: u32,
    state: ClassState,
}

impl From<&ClassRow> for ClassSummary {
    fn from(class: &ClassRow) -> Self {
        Self {
            id: class.id,
            name: class.name.clone(),
            description: class.description.clone(),
            seats: class.seats,
            state: class.state,
        }
    }
}

#[derive(Debug, Serialize)]
struct ClassesView {
    classes: Vec<ClassSummary>,
    /// The ids of the classes the viewer assists in (their pages open to them).
    assisting: Vec<i64>,
    templates: Vec<TemplateView>,
    nodes: Vec<String>,
}

async fn list(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    headers: HeaderMap,
) -> Result<Page, PageError> {
    let viewer = &user.viewer;
    let rows = classes::listed_classes(&state, viewer).await?;
    let assisting = state.db.assisted_class_ids(viewer.id).await?;
    let (templates, nodes) = if viewer.is_staff() {
        let filter = VmFilter::templates();
        let templates = state.db.find_vms(&filter).await?;
        (
            templates
                .iter()
                // Class bases are templates too, but not something to build a class from.
                .filter(|vm| vm.class_id.is_none())
                .map(TemplateView::from)
                .collect(),
            state.registry.online_nodes(),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let view = ClassesView {
        classes: rows.iter().map(ClassSummary::from).collect(),
        assisting,
        templates,
        nodes,
    };
    Ok(Page::render(
        "pages/classes/list.html",
        &Layout::new(Some(&user), &headers, "classes", "Classes"),
        &view,
    )?)
}

#[derive(Debug, Deserialize)]
struct CreateForm {
    name: String,
    #[serde(default)]
    description: String,
    template_vmid: String,
    seats: String,
    #[serde(default)]
    node: String,
    #[serde(default)]
    cores: String,
    #[serde(default)]
    memory_mib: String,
    /// Plugin ids, separated by commas or spaces.
    #[serde(default)]
    plugins: String,
    #[serde(default)]
    disk_gib: String,
    #[serde(default)]
    storage: String,
    #[serde(default)]
    bridge: String,
}

/// An optional number from a form field (empty: not given).
fn optional_number<T: std::str::FromStr>(text: &str, what: &str) -> Result<Option<T>, AppError> {
    match text.trim() {
        "" => Ok(None),
        text => number(text, what).map(Some),
    }
}

fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, AppError> {
    text.trim()
        .parse()
        .map_err(|_| AppError::BadRequest(format!("{what} must be a number")))
}

async fn create(
    State(state): State<Arc<HubState>>,
    RequireStaff(user): RequireStaff,
    Form(form): Form<CreateForm>,
) -> Result<Response, PageError> {
    let request = ClassRequest {
        name: form.name,
        description: form.description,
        template: match form.template_vmid.trim() {
            "" => None,
            template => Some(crate::web::vm_key(&state, &user.viewer, template).await?),
        },
        seats: number(&form.seats, "the number of student VMs")?,
        node: Some(form.node.trim().to_owned()).filter(|node| !node.is_empty()),
        cores: optional_number(&form.cores, "the cores")?,
        memory_mib: optional_number(&form.memory_mib, "the memory")?,
        empty: super::classes_api::empty_spec(
            optional_number(&form.disk_gib, "the disk size")?,
            Some(form.storage),
            Some(form.bridge),
        ),
        plugins: form
            .plugins
            .split([',', ' '])
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    match classes::create_class(&state, &user.viewer, &request).await {
        Ok((class_id, _)) => Ok(Redirect::to(&format!("/classes/{class_id}")).into_response()),
        Err(err) => Ok(redirect_with_flash(
            "/classes",
            "error",
            &AppError::from(err).to_string(),
        )),
    }
}

#[derive(Debug, Serialize)]
struct ClassVmLine {
    /// `CLUSTER-VMID`, for its links and live updates.
    id: VmKey,
    vmid: u32,
    kind: ClassVmKind,
    node: String,
    deploy_state: ClassVmState,
    error: String,
    assignee: Option<String>,
    /// The class version its disks were made from.
    version: Option<i64>,
    /// How an adopted VM relates to the template (`linked`, `plain`).
    adopted: Option<crate::db::states::Adoption>,
    /// The VM as the inventory shows it, once it exists.
    vm: Option<VmView>,
}

#[derive(Debug, Serialize)]
struct ClassPageView {
    class: ClassSummary,
    /// Whether the viewer owns the class or assists in it: assistants see no controls that
    /// change the class.
    standing: ClassStanding,
    template_vmid: Option<u32>,
    owners: Vec<String>,
    assistants: Vec<String>,
    vms: Vec<ClassVmLine>,
    students: Vec<(String, Option<u32>)>,
    /// The people a roster listed, and whether they have signed in yet.
    roster: Vec<crate::db::rosters::RosterPerson>,
    progress: classes::ClassProgress,
    /// The task log: the newest bulk actions first.
    tasks: Vec<TaskLine>,
    /// The task the page was asked to show (`?task=`), with its result per VM.
    task: Option<TaskView>,
    current_version: Option<i64>,
    /// What the class's plugins said about its VMs.
    plugin_notes: Vec<crate::db::plugin_settings::PluginNote>,
    /// What only owners see and change.
    #[serde(flatten)]
    management: Option<ClassManagement>,
}

/// A plugin of the class whose teachers may set some of its settings.
#[derive(Debug, Serialize)]
struct ClassPluginSettings {
    plugin: String,
    fields: Vec<crate::domain::plugin_settings::SettingField>,
}

/// The parts of the class page for its owners.
#[derive(Debug, Serialize)]
struct ClassManagement {
    invite_active: bool,
    invite_expires_at: Option<String>,
    /// The same moment as Unix seconds, for the browser to show in local time.
    invite_expires_unix: Option<i64>,
    invite_seat_limit: Option<u32>,
    /// Only accounts of this email domain may use the invite (empty: any).
    invite_domain: String,
    invite_roster_only: bool,
    /// The directory group the roster follows (empty: none), and whether the hub has a
    /// directory to read groups from.
    roster_group: String,
    directory: bool,
    /// The current invite link, when the hub can show it again.
    invite_link: Option<String>,
    /// The link as a QR code (an SVG `data:` URL).
    invite_qr: Option<String>,
    /// How students may reach their VMs.
    access: ClassAccess,
    /// Whether the hub forwards ports (RDP needs it).
    forwarding: bool,
    /// The class's schedule rules, what comes next and what happened.
    schedule: crate::domain::schedules::ClassSchedule,
    /// Weekday names for the rule form.
    weekdays: [&'static str; 7],
    /// The class's idle-shutdown settings and latest idle shutdowns.
    idle: crate::domain::idle::ClassIdle,
    /// The class's quota and its students' hours.
    quota: crate::domain::quota::ClassQuota,
    /// Its template versions, newest first, and how many it keeps.
    versions: Vec<classes::versions::VersionView>,
    keep_versions: u32,
    /// What the class's VMs have, for the hardware form.
    hardware: classes::hardware::HardwareView,
    /// The class's own settings of its plugins.
    plugin_settings: Vec<ClassPluginSettings>,
}

/// A line of the task log.
#[derive(Debug, Serialize)]
struct TaskLine {
    id: i64,
    action: String,
    started_by: String,
    started_at: String,
    started_unix: i64,
    total: i64,
    failed: i64,
    running: bool,
}

impl From<&TaskRow> for TaskLine {
    fn from(task: &TaskRow) -> Self {
        Self {
            id: task.id,
            action: task.action.clone(),
            started_by: task.started_by.clone(),
            started_at: format_time(task.started_at),
            started_unix: task.started_at,
            total: task.total,
            failed: task.failed,
            running: task.finished_at.is_none(),
        }
    }
}

/// One task with what it did to each VM.
#[derive(Debug, Serialize)]
struct TaskView {
    task: TaskLine,
    results: Vec<TaskResultRow>,
}

/// How many tasks the class page lists.
const TASK_LOG_LINES: u32 = 15;

#[derive(Debug, Deserialize)]
struct ClassPageQuery {
    task: Option<i64>,
}

/// A class's invite link: from the portal's configured address, or a path when there is none
/// (the page then says to set `public_url`).
fn invite_link(state: &HubState, token: &str) -> String {
    let base = state.config.site_url().unwrap_or_default();
    format!("{base}/join/{token}")
}

/// What the class page shows its owners: the invite, access, schedule, idle, quota,
/// versions and hardware settings.
async fn management(
    state: &HubState,
    user: &CurrentUser,
    class: &ClassRow,
) -> Result<ClassManagement, PageError> {
    let class_id = class.id;
    let invite = classes::current_invite(state, class).map(|token| invite_link(state, &token));
    Ok(ClassManagement {
        invite_active: class.has_invite,
        invite_expires_at: class.invite_expires_at.map(format_time),
        invite_expires_unix: class.invite_expires_at,
        invite_seat_limit: class.invite_seat_limit,
        invite_domain: class.invite_domain.clone(),
        invite_roster_only: class.invite_roster_only,
        roster_group: class.roster_group.clone(),
        directory: state.sign_in.directory.is_some(),
        invite_qr: invite.as_deref().and_then(classes::invites::qr_data_url),
        invite_link: invite,
        access: state.db.class_access(class_id).await?,
        forwarding: state.forwards.enabled(),
        schedule: crate::domain::schedules::class_schedule(state, &user.viewer, class_id).await?,
        weekdays: crate::domain::schedules::calendar::Weekdays::NAMES,
        idle: crate::domain::idle::class_idle(state, &user.viewer, class_id).await?,
        quota: crate::domain::quota::class_quota(state, &user.viewer, class_id).await?,
        versions: classes::versions::versions(state, &user.viewer, class_id).await?,
        keep_versions: class.keep_versions,
        hardware: classes::hardware::hardware(state, &user.viewer, class_id).await?,
        plugin_settings: class_plugin_settings(state, class_id).await?,
    })
}

/// The class's plugins that let teachers set something, with their fields.
async fn class_plugin_settings(
    state: &HubState,
    class_id: i64,
) -> Result<Vec<ClassPluginSettings>, PageError> {
    let mut out = Vec::new();
    for plugin in state.db.class_plugins(class_id).await? {
        let fields = crate::domain::plugin_settings::fields(state, &plugin, Some(class_id))
            .await
            .unwrap_or_default();
        if !fields.is_empty() {
            out.push(ClassPluginSettings { plugin, fields });
        }
    }
    Ok(out)
}

async fn render_class(
    state: &HubState,
    user: &CurrentUser,
    headers: &HeaderMap,
    class_id: i64,
    task_id: Option<i64>,
) -> Result<Page, PageError> {
    let (class, standing) = classes::class_in_view(state, &user.viewer, class_id).await?;
    let task = match task_id {
        Some(task_id) => {
            let report = tasks::report(state, &user.viewer, class_id, task_id).await?;
            Some(TaskView {
                task: TaskLine::from(&report.task),
                results: report.results,
            })
        }
        None => None,
    };
    let tasks = tasks::recent(state, &user.viewer, class_id, TASK_LOG_LINES)
        .await?
        .iter()
        .map(TaskLine::from)
        .collect();
    let rows = state.db.class_vms(class_id).await?;
    let inventory = state
        .db
        .find_vms(&VmFilter {
            keys: Some(rows.iter().map(|vm| vm.key).collect()),
            ..VmFilter::default()
        })
        .await?;
    let progress = classes::progress(state, class_id).await?;
    let vms = rows
        .iter()
        .map(|row| ClassVmLine {
            id: row.key,
            vmid: row.vmid,
            kind: row.kind,
            node: row.node.clone(),
            deploy_state: row.state,
            error: row.error.clone(),
            assignee: row.assignee.clone(),
            version: row.version,
            adopted: row.adopted,
            vm: inventory
                .iter()
                .find(|vm| vm.key == row.key)
                .map(VmView::new),
        })
        .collect();
    let management = match standing {
        ClassStanding::Owner => Some(management(state, user, &class).await?),
        ClassStanding::Assistant => None,
    };
    let view = ClassPageView {
        class: ClassSummary::from(&class),
        standing,
        template_vmid: class.template.map(|template| template.vmid),
        owners: state.db.class_owners(class_id).await?,
        assistants: state.db.class_assistants(class_id).await?,
        vms,
        students: state
            .db
            .roster(class_id)
            .await?
            .into_iter()
            .map(|(_, name, vm)| (name, vm.map(|vm| vm.vmid)))
            .collect(),
        roster: state.db.class_roster(class_id).await?,
        progress,
        tasks,
        task,
        current_version: class.current_version,
        plugin_notes: state.db.class_plugin_notes(class_id).await?,
        management,
    };
    Ok(Page::render(
        "pages/classes/class.html",
        &Layout::new(Some(user), headers, "classes", &class.name),
        &view,
    )?)
}

async fn show(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(query): Query<ClassPageQuery>,
) -> Result<Page, PageError> {
    render_class(&state, &user, &headers, id, query.task).await
}

#[derive(Debug, Deserialize)]
struct InviteForm {
    /// Days; 0 for never.
    expires_in_days: String,
    #[serde(default)]
    seat_limit: String,
    /// Only accounts of this email domain.
    #[serde(default)]
    email_domain: String,
    /// A checkbox: only the people on the roster.
    #[serde(default)]
    roster_only: Option<String>,
}

async fn invite(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    Form(form): Form<InviteForm>,
) -> Result<Response, PageError> {
    let days: u32 = number(&form.expires_in_days, "the expiry")?;
    let ttl = (days > 0).then(|| Duration::from_secs(u64::from(days.min(366)) * 86_400));
    let seat_limit = match form.seat_limit.trim() {
        "" => None,
        text => Some(number(text, "the seat limit")?),
    };
    let rules = classes::InviteRules {
        ttl,
        seat_limit,
        domain: Some(form.email_domain),
        roster_only: form.roster_only.is_some(),
    };
    classes::rotate_invite(&state, &user.viewer, id, &rules).await?;
    // Back to the class page (a reload there shows the link; it never makes another one).
    Ok(redirect_with_flash(
        &format!("/classes/{id}#invite"),
        "ok",
        "A new invite link is ready; the old one no longer works.",
    ))
}

#[derive(Debug, Deserialize)]
struct CapacityForm {
    add: String,
}

async fn capacity(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    Form(form): Form<CapacityForm>,
) -> Result<Response, PageError> {
    let back = format!("/classes/{id}");
    let more: u32 = number(&form.add, "the number of VMs")?;
    Ok(
        match classes::add_capacity(&state, &user.viewer, id, more).await {
            Ok(_) => redirect_with_flash(&back, "ok", &format!("{more} more VMs are deploying.")),
            Err(err) => redirect_with_flash(&back, "error", &AppError::from(err).to_string()),
        },
    )
}

/// The class's access form: checkboxes send `on` when ticked and nothing otherwise.
#[derive(Debug, Deserialize)]
struct AccessForm {
    #[serde(default)]
    console: Option<String>,
    #[serde(default)]
    ssh: Option<String>,
    #[serde(default)]
    rdp: Option<String>,
    #[serde(default)]
    ssh_port: String,
    #[serde(default)]
    rdp_port: String,
}

async fn set_access(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    Form(form): Form<AccessForm>,
) -> Result<Response, PageError> {
    classes::owned_class(&state, &user.viewer, id).await?;
    let back = format!("/classes/{id}#access");
    let access = ClassAccess {
        console: form.console.is_some(),
        ssh: form.ssh.is_some(),
        rdp: form.rdp.is_some(),
        ssh_port: number(&form.ssh_port, "the SSH port")?,
        rdp_port: number(&form.rdp_port, "the RDP port")?,
    };
    Ok(
        match remote::access::set_for_class(&state, &user.viewer, id, &access).await {
            Ok(()) => redirect_with_flash(&back, "ok", "The ways into the class's VMs were saved."),
            Err(err) => redirect_with_flash(&back, "error", &AppError::from(err).to_string()),
        },
    )
}

#[derive(Debug, Deserialize)]
struct DeleteForm {
    /// The class's name, typed again: deleting destroys every VM and disk of it.
    #[serde(default)]
    confirm_name: String,
}

async fn delete(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    Form(form): Form<DeleteForm>,
) -> Result<Response, PageError> {
    let class = classes::owned_class(&state, &user.viewer, id).await?;
    if form.confirm_name.trim() != class.name.trim() {
        return Ok(redirect_with_flash(
            &format!("/classes/{id}#delete"),
            "error",
            "The class was not deleted: type its name exactly to confirm.",
        ));
    }
    classes::delete_class(&state, &user.viewer, id).await?;
    Ok(redirect_with_flash(
        "/classes",
        "ok",
        "The class is being deleted with all its VMs.",
    ))
}

/// A bulk action: the form lists `vmid` once per selected VM, or says `all`. Nothing selected
/// is a question back, never "all" by default. The class page then shows the task's result
/// for every VM, where the VM table is.
async fn bulk(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((id, action)): Path<(i64, String)>,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    let back = format!("/classes/{id}#vms");
    let action = VmAction::parse(&action)
        .ok_or_else(|| AppError::NotFound(format!("there is no VM action {action:?}")))?;
    // Who may act comes first: the form's contents say nothing to those who may not.
    classes::class_in_view(&state, &user.viewer, id).await?;
    let chosen = chosen_vms(&body)?;
    let all = form_urlencoded::parse(&body).any(|(key, value)| key == "all" && value == "1");
    let selection = match (all, chosen.is_empty()) {
        (true, _) => Selection::All,
        (false, false) => Selection::Vms(chosen),
        (false, true) => {
            return Ok(redirect_with_flash(
                &back,
                "error",
                "No VM was selected: select VMs in the table, or tick All VMs.",
            ));
        }
    };
    Ok(
        match tasks::run_bulk(&state, &user.viewer, id, action, &selection).await {
            Ok(task_id) => {
                Redirect::to(&format!("/classes/{id}?task={task_id}#task")).into_response()
            }
            Err(ClassError::Invalid(message)) => {
                redirect_with_flash(&back, "error", &crate::text::sentence(&message))
            }
            Err(err) => return Err(AppError::from(err).into()),
        },
    )
}

/// Where a class form returns, with a message saying how it went.
fn back_with<E: Into<AppError>>(class_id: i64, done: &str, result: Result<(), E>) -> Response {
    let back = format!("/classes/{class_id}");
    match result {
        Ok(()) => redirect_with_flash(&back, "ok", done),
        Err(err) => redirect_with_flash(&back, "error", &err.into().to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct UsernameForm {
    username: String,
}

async fn add_owner(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    Form(form): Form<UsernameForm>,
) -> Response {
    let username = form.username.trim();
    let result = classes::add_owner(&state, &user.viewer, id, username).await;
    back_with(id, &format!("{username} now co-owns the class."), result)
}

async fn remove_owner(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((id, username)): Path<(i64, String)>,
) -> Response {
    let result = classes::remove_owner(&state, &user.viewer, id, &username).await;
    back_with(id, &format!("{username} no longer owns the class."), result)
}

async fn add_assistant(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    Form(form): Form<UsernameForm>,
) -> Response {
    let username = form.username.trim();
    let result = classes::add_assistant(&state, &user.viewer, id, username).await;
    back_with(id, &format!("{username} now assists in the class."), result)
}

async fn remove_assistant(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((id, username)): Path<(i64, String)>,
) -> Response {
    let result = classes::remove_assistant(&state, &user.viewer, id, &username).await;
    back_with(
        id,
        &format!("{username} no longer assists in the class."),
        result,
    )
}

async fn remove_student(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((id, username)): Path<(i64, String)>,
) -> Response {
    let result = classes::remove_student(&state, &user.viewer, id, &username)
        .await
        .map(drop);
    back_with(
        id,
        &format!(
            "{username} left the class; their VM is reset to the template, then goes to the \
             next student waiting."
        ),
        result,
    )
}

/// The VMs a class form selected: its `vmid` fields, each `CLUSTER-VMID` or a VMID.
fn chosen_vms(body: &[u8]) -> Result<Vec<VmRef>, AppError> {
    form_urlencoded::parse(body)
        .filter(|(key, _)| key == "vmid")
        .map(|(_, value)| {
            value
                .parse::<VmRef>()
                .map_err(|err| AppError::BadRequest(err.to_string()))
        })
        .collect()
}

async fn remove_vms(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Response {
    // Who may act comes first: the form's contents say nothing to those who may not.
    if let Err(err) = classes::owned_class(&state, &user.viewer, id).await {
        return back_with(id, "", Err(err));
    }
    let selected = match chosen_vms(&body) {
        Ok(selected) => selected,
        Err(err) => return back_with(id, "", Err(err)),
    };
    if selected.is_empty() {
        return back_with(
            id,
            "",
            Err(AppError::BadRequest("select the VMs to remove".into())),
        );
    }
    let result = classes::remove_vms(&state, &user.viewer, id, &selected)
        .await
        .map(drop);
    back_with(
        id,
        &format!("Removing {} VMs with their disks.", selected.len()),
        result,
    )
}

#[derive(Debug, Deserialize)]
struct AssignForm {
    #[serde(default)]
    username: String,
    back: Option<String>,
    /// A checkbox: hand the disk on as it is.
    keep_disk: Option<String>,
}

impl AssignForm {
    fn handover(&self) -> vms::Handover {
        if self.keep_disk.is_some() {
            vms::Handover::KeepDisk
        } else {
            vms::Handover::Fresh
        }
    }
}

async fn assign_vm(
    state: State<Arc<HubState>>,
    user: CurrentUser,
    Path(vmid): Path<String>,
    Form(form): Form<AssignForm>,
) -> Result<Response, PageError> {
    let username = form.username.trim().to_owned();
    if username.is_empty() {
        // Whether the VM is theirs to assign is checked before the form is.
        let number = crate::web::vm_key(&state, &user.viewer, &vmid).await?;
        if !user.viewer.is_staff() {
            return Err(AppError::NotFound("there is no such VM".into()).into());
        }
        vms::visible_vm(&state, &user.viewer, number).await?;
        let back = crate::web::local_path(form.back.as_deref(), "/vms");
        return Ok(redirect_with_flash(
            back,
            "error",
            "Name the user to assign the VM to.",
        ));
    }
    let handover = form.handover();
    change_assignee(
        state,
        user,
        &vmid,
        Some(&username),
        handover,
        form.back.as_deref(),
    )
    .await
}

async fn unassign_vm(
    state: State<Arc<HubState>>,
    user: CurrentUser,
    Path(vmid): Path<String>,
    Form(form): Form<AssignForm>,
) -> Result<Response, PageError> {
    change_assignee(
        state,
        user,
        &vmid,
        None,
        vms::Handover::Fresh,
        form.back.as_deref(),
    )
    .await
}

async fn change_assignee(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    vmid: &str,
    to: Option<&str>,
    handover: vms::Handover,
    back: Option<&str>,
) -> Result<Response, PageError> {
    let key = crate::web::vm_key(&state, &user.viewer, vmid).await?;
    let vmid = key.vmid;
    let back = crate::web::local_path(back, "/vms");
    Ok(
        match vms::assign(&state, &user.viewer, key, to, handover).await {
            Ok(()) => redirect_with_flash(
                back,
                "ok",
                &match to {
                    Some(name) => format!("VM {vmid} is now {name}'s."),
                    None => format!("VM {vmid} is unassigned."),
                },
            ),
            Err(vms::VmOpError::NotFound) => {
                return Err(AppError::NotFound("there is no such VM".into()).into());
            }
            Err(err) => redirect_with_flash(back, "error", &AppError::from(err).to_string()),
        },
    )
}

#[derive(Debug, Serialize)]
struct JoinView {
    class: ClassSummary,
    token: String,
    /// For visitors not signed in: whether they may create an account here.
    registration: bool,
    /// For visitors not signed in: the "Sign in with ..." buttons, back to this page.
    providers: Vec<super::auth::ProviderButton>,
    error: Option<String>,
    username: String,
}

async fn join_page(
    State(state): State<Arc<HubState>>,
    MaybeUser(user): MaybeUser,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response, PageError> {
    let Some(user) = user else {
        let class = classes::class_for_invite(&state, &token).await?;
        // A limited invite is for accounts the school knows: signing in, never registering.
        let limited = !class.invite_domain.is_empty() || class.invite_roster_only;
        let registration = !limited
            && state
                .db
                .flag(crate::db::settings::SELF_REGISTRATION)
                .await?;
        if !registration {
            // Signing in comes first; the page says what for.
            let next = format!("/join/{token}");
            let view = super::auth::LoginView {
                next: &next,
                username: "",
                error: None,
                heading: Some(format!("Sign in to join {}", class.name)),
            };
            return Ok(super::auth::login_page(&state, &headers, &view)?.into_response());
        }
        let view = JoinView {
            class: ClassSummary::from(&class),
            providers: super::auth::provider_buttons(&state, &format!("/join/{token}")),
            token,
            registration,
            error: None,
            username: String::new(),
        };
        let title = format!("Join {}", class.name);
        return Ok(super::auth::anonymous_page(
            &state,
            &headers,
            "pages/classes/join.html",
            &title,
            &view,
        )?
        .into_response());
    };
    let class = classes::class_for_invite(&state, &token).await?;
    let view = JoinView {
        class: ClassSummary::from(&class),
        token,
        registration: false,
        providers: Vec::new(),
        error: None,
        username: String::new(),
    };
    Ok(Page::render(
        "pages/classes/join.html",
        &Layout::new(
            Some(&user),
            &headers,
            "classes",
            &format!("Join {}", class.name),
        ),
        &view,
    )?
    .into_response())
}

async fn join(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(token): Path<String>,
) -> Result<Response, PageError> {
    let (class, outcome) = classes::join(&state, &user.viewer, &token).await?;
    Ok(match outcome {
        JoinOutcome::Assigned(vmid) => redirect_with_flash(
            &format!("/vms/{vmid}"),
            "ok",
            &format!("You joined {}. This is your VM.", class.name),
        ),
        JoinOutcome::Waitlisted => redirect_with_flash(
            "/vms",
            "ok",
            &format!(
                "You joined {}. All its VMs are taken; you get one as soon as your teacher adds more.",
                class.name
            ),
        ),
    })
}

#[derive(Debug, Deserialize)]
struct RegisterForm {
    username: String,
    password: String,
    confirm: String,
}

/// A visitor without an account creates one through the invite and joins.
async fn register(
    State(state): State<Arc<HubState>>,
    headers: HeaderMap,
    ClientAddr(address): ClientAddr,
    Path(token): Path<String>,
    Form(form): Form<RegisterForm>,
) -> Result<Response, PageError> {
    let result = if form.password == form.confirm {
        classes::register_and_join(&state, &token, &form.username, &form.password, address)
            .await
            .map_err(AppError::from)
    } else {
        Err(AppError::BadRequest("the two passwords differ".into()))
    };
    match result {
        Ok((viewer, class, outcome)) => {
            let secret = state.auth.session_for_new_account(&viewer).await?;
            let to = match outcome {
                JoinOutcome::Assigned(vmid) => format!("/vms/{vmid}"),
                JoinOutcome::Waitlisted => "/vms".to_owned(),
            };
            let welcome = redirect_with_flash(
                &to,
                "ok",
                &format!("Welcome, {}. You joined {}.", viewer.username, class.name),
            );
            Ok(super::auth::with_session_cookie(&state, welcome, &secret))
        }
        Err(AppError::Internal(err)) => Err(AppError::Internal(err).into()),
        Err(error) => {
            let class = classes::class_for_invite(&state, &token).await?;
            let status = error.status();
            let view = JoinView {
                class: ClassSummary::from(&class),
                providers: super::auth::provider_buttons(&state, &format!("/join/{token}")),
                token,
                registration: true,
                error: Some(error.to_string()),
                username: form.username.trim().to_owned(),
            };
            let title = format!("Join {}", class.name);
            let page = super::auth::anonymous_page(
                &state,
                &headers,
                "pages/classes/join.html",
                &title,
                &view,
            )?;
            Ok((status, page).into_response())
        }
    }
}

pub(in crate::web) fn router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/classes", get(list).post(create))
        .route("/classes/{id}", get(show))
        .route("/classes/{id}/invite", post(invite))
        .route("/classes/{id}/capacity", post(capacity))
        .route("/classes/{id}/access", post(set_access))
        .route("/classes/{id}/delete", post(delete))
        .route("/classes/{id}/bulk/{action}", post(bulk))
        .route("/classes/{id}/owners", post(add_owner))
        .route("/classes/{id}/owners/{username}/remove", post(remove_owner))
        .route("/classes/{id}/assistants", post(add_assistant))
        .route(
            "/classes/{id}/assistants/{username}/remove",
            post(remove_assistant),
        )
        .route(
            "/classes/{id}/students/{username}/remove",
            post(remove_student),
        )
        .route("/classes/{id}/remove-vms", post(remove_vms))
        .route("/vms/{vmid}/assign", post(assign_vm))
        .route("/vms/{vmid}/unassign", post(unassign_vm))
        .route("/join/{token}", get(join_page).post(join))
        .route("/join/{token}/register", post(register))
}
