//! The pages everyone signed in uses: My VMs, one VM, Templates.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::{Deserialize, Serialize};

use proxlab_protocol::inventory::PowerState;

use crate::HubState;
use crate::db::inventory::{PageRange, VmFilter};
use crate::domain::access::{self, VmAction};
use crate::domain::viewer::Viewer;
use crate::domain::vms;
use crate::vm_key::VmKey;
use crate::web::error::{AppError, PageError};
use crate::web::identity::{CurrentUser, RequireStaff};
use crate::web::render::{Layout, Page, redirect_with_flash};
use crate::web::views::{TemplateView, VmView};
use crate::web::{local_path, vm_key};

/// The filters of the VM list, as typed in the query string.
#[derive(Debug, Default, Deserialize, Serialize)]
pub(in crate::web) struct VmQuery {
    #[serde(default)]
    pub(in crate::web) name: String,
    #[serde(default)]
    pub(in crate::web) node: String,
    /// A Proxmox cluster's name: only the VMs of its nodes.
    #[serde(default)]
    pub(in crate::web) cluster: String,
    #[serde(default)]
    pub(in crate::web) status: String,
    /// `none` for VMs outside every class, or a class's id.
    #[serde(default)]
    pub(in crate::web) class: String,
    /// How many VMs per page (default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]).
    pub(in crate::web) limit: Option<u32>,
    #[serde(default)]
    pub(in crate::web) offset: u32,
}

/// VMs per page unless the request says otherwise.
pub(in crate::web) const DEFAULT_PAGE: u32 = 100;
/// The most VMs one request returns.
pub(in crate::web) const MAX_PAGE: u32 = 1000;

/// The power states a listing can be filtered by.
const STATUSES: &[&str] = &["running", "stopped", "paused", "unknown"];

impl VmQuery {
    /// Refuses what the API would otherwise quietly reinterpret: an unknown status, or a page
    /// size outside 1..=[`MAX_PAGE`]. (The portal's own pages clamp instead.)
    pub(in crate::web) fn check(&self) -> Result<(), AppError> {
        let status = self.status.trim();
        if !status.is_empty() && !STATUSES.contains(&status) {
            return Err(AppError::BadRequest(format!(
                "status must be one of {}, not {status:?}",
                STATUSES.join(", ")
            )));
        }
        if self.class_choice().is_err() {
            return Err(AppError::BadRequest(format!(
                "class must be \"none\" or a class id, not {:?}",
                self.class
            )));
        }
        if let Some(limit) = self.limit
            && !(1..=MAX_PAGE).contains(&limit)
        {
            return Err(AppError::BadRequest(format!(
                "limit must be 1 to {MAX_PAGE}, not {limit}"
            )));
        }
        Ok(())
    }

    pub(in crate::web) fn page(&self) -> PageRange {
        PageRange {
            limit: self.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE),
            offset: self.offset,
        }
    }

    /// The class narrowing: `(in_class, class_id)` for the filter (an unreadable choice
    /// narrows to nothing on pages, and is refused by [`Self::check`] in the API).
    fn class_choice(&self) -> Result<(Option<bool>, Option<i64>), ()> {
        match self.class.trim() {
            "" => Ok((None, None)),
            "none" => Ok((Some(false), None)),
            id => id
                .parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .map(|id| (Some(true), Some(id)))
                .ok_or(()),
        }
    }

    pub(in crate::web) fn to_filter(&self) -> VmFilter {
        let non_empty = |text: &str| Some(text.trim().to_owned()).filter(|text| !text.is_empty());
        let (in_class, class_id) = self.class_choice().unwrap_or((Some(true), Some(0)));
        VmFilter {
            node: non_empty(&self.node),
            cluster: non_empty(&self.cluster),
            status: non_empty(&self.status),
            name_contains: non_empty(&self.name),
            template: Some(false),
            in_class,
            class_id,
            page: Some(self.page()),
            ..VmFilter::default()
        }
    }

    /// This listing's URL at another offset.
    fn at_offset(&self, offset: u32) -> String {
        use crate::web::cookies::percent_encode;
        format!(
            "/vms?name={}&node={}&cluster={}&status={}&class={}&limit={}&offset={offset}",
            percent_encode(&self.name),
            percent_encode(&self.node),
            percent_encode(&self.cluster),
            percent_encode(&self.status),
            percent_encode(&self.class),
            self.page().limit
        )
    }
}

/// Where a page sits in the whole listing.
#[derive(Debug, Serialize)]
struct Paging {
    first: u64,
    last: u64,
    total: u64,
    previous: Option<String>,
    next: Option<String>,
}

impl Paging {
    fn new(query: &VmQuery, shown: usize, total: u64) -> Self {
        let page = query.page();
        let end = u64::from(page.offset) + shown as u64;
        Self {
            first: if shown == 0 {
                0
            } else {
                u64::from(page.offset) + 1
            },
            last: end,
            total,
            previous: (page.offset > 0)
                .then(|| query.at_offset(page.offset.saturating_sub(page.limit))),
            next: (end < total).then(|| query.at_offset(page.offset + page.limit)),
        }
    }
}

#[derive(Debug, Serialize)]
struct VmsView {
    /// Classes the viewer waits in for a VM.
    waiting_in: Vec<String>,
    /// The VMs shown, by class: VMs outside every class first, then each class by name.
    groups: Vec<VmGroup>,
    shown: usize,
    /// The classes the viewer's VMs are in, for the filter: `(id, name)`.
    classes: Vec<(i64, String)>,
    paging: Paging,
    filter: VmQuery,
    nodes: Vec<String>,
    /// The clusters to filter by, when the hub has nodes of more than one.
    clusters: Vec<String>,
    back: String,
    /// The VMs assigned to the viewer as the page is drawn (`1,2,3`): the live updates
    /// redraw the list when the viewer is given another.
    held: String,
}

/// VMs of one class (or outside every class) on the VM list.
#[derive(Debug, Serialize)]
struct VmGroup {
    /// The class's name; `None` for VMs outside every class.
    class_name: Option<String>,
    vms: Vec<VmView>,
}

impl VmGroup {
    fn by_class(vms: Vec<VmView>) -> Vec<Self> {
        let mut groups: std::collections::BTreeMap<Option<String>, Vec<VmView>> =
            std::collections::BTreeMap::new();
        for vm in vms {
            groups.entry(vm.class_name.clone()).or_default().push(vm);
        }
        // `None` sorts first: personal VMs lead.
        groups
            .into_iter()
            .map(|(class_name, vms)| Self { class_name, vms })
            .collect()
    }
}

/// The classes whose VMs the viewer sees, by name: all for admins, owned and joined ones
/// for others.
async fn visible_classes(
    state: &HubState,
    viewer: &Viewer,
) -> Result<Vec<(i64, String)>, PageError> {
    let mut classes = if viewer.is_admin() {
        state.db.list_classes(None).await?
    } else {
        let mut classes = state.db.list_classes(Some(viewer.id)).await?;
        classes.extend(state.db.enrolled_classes(viewer.id).await?);
        classes
    };
    classes.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
    classes.dedup_by_key(|class| class.id);
    Ok(classes
        .into_iter()
        .map(|class| (class.id, class.name))
        .collect())
}

/// Fills in what limits each class VM's running time: when the class schedule stops a
/// running one next, and on the viewer's own VMs the quota hours they have left.
async fn with_time_limits(
    state: &HubState,
    viewer: &Viewer,
    views: &mut [VmView],
) -> Result<(), AppError> {
    for view in views.iter_mut() {
        if view.assignee.as_deref() == Some(viewer.username.as_str()) {
            view.hours_left = crate::domain::quota::hours_left(state, view.class_id, view.id)
                .await?
                .map(Into::into);
        }
    }
    let mut classes: Vec<i64> = views
        .iter()
        .filter(|view| view.status == PowerState::Running)
        .filter_map(|view| view.class_id)
        .collect();
    classes.sort_unstable();
    classes.dedup();
    let stops = crate::domain::schedules::next_stops(
        state,
        &classes,
        crate::domain::schedules::scheduler::now(state),
    )
    .await?;
    for view in views {
        if view.status == PowerState::Running {
            view.scheduled_stop = view.class_id.and_then(|class| stops.get(&class).cloned());
        }
    }
    Ok(())
}

/// How long the viewer's own class VM may run on their quota hours, in words.
async fn run_limit(
    state: &HubState,
    viewer: &Viewer,
    vmid: VmKey,
) -> Result<Option<String>, AppError> {
    let Some(vm) = state.db.vm(vmid).await? else {
        return Ok(None);
    };
    if vm.assignee.as_deref() != Some(viewer.username.as_str()) {
        return Ok(None);
    }
    let left = crate::domain::quota::hours_left(state, vm.class_id, vmid).await?;
    Ok(left.map(|left| left.left_text()))
}

async fn home() -> Redirect {
    Redirect::to("/vms")
}

async fn list_vms(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    headers: HeaderMap,
    Query(query): Query<VmQuery>,
) -> Result<Page, PageError> {
    let viewer = &user.viewer;
    let filter = access::restrict_to_viewer(viewer, query.to_filter());
    // VMs given to the viewer that the inventory does not hold yet are read first: one that
    // arrives meanwhile is then in the listing, or still among these, never in neither.
    let pending = if !viewer.is_admin() && query.offset == 0 {
        state.db.pending_assignments(viewer.id).await?
    } else {
        Vec::new()
    };
    let vms = state.db.find_vms(&filter).await?;
    let total = state.db.count_vms(&filter).await?;
    let nodes = if viewer.is_admin() {
        state
            .db
            .list_nodes()
            .await?
            .into_iter()
            .filter(|node| node.revoked_at.is_none())
            .map(|node| node.name)
            .collect()
    } else {
        Vec::new()
    };
    let clusters: Vec<String> = if viewer.is_admin() {
        let names = state.db.clusters().await?.into_iter().map(|c| c.name);
        let mut names: Vec<String> = names.collect();
        names.dedup();
        if names.len() > 1 { names } else { Vec::new() }
    } else {
        Vec::new()
    };
    let mut views: Vec<VmView> = vms.iter().map(VmView::new).collect();
    with_time_limits(&state, viewer, &mut views).await?;
    for (vmid, class) in pending {
        if !vms.iter().any(|vm| vm.key == vmid) {
            views.push(VmView::being_prepared(vmid, class.as_deref()));
        }
    }
    let classes = visible_classes(&state, viewer).await?;
    let view = VmsView {
        shown: views.len(),
        groups: VmGroup::by_class(views),
        classes,
        waiting_in: state.db.waiting_in(viewer.id).await?,
        paging: Paging::new(&query, vms.len(), total),
        filter: query,
        nodes,
        clusters,
        back: "/vms".into(),
        held: state
            .db
            .assigned_vms(viewer.id)
            .await?
            .iter()
            .map(VmKey::to_string)
            .collect::<Vec<_>>()
            .join(","),
    };
    let title = if viewer.is_admin() {
        "All VMs"
    } else {
        "My VMs"
    };
    Ok(Page::render(
        "pages/portal/vms.html",
        &Layout::new(Some(&user), &headers, "vms", title),
        &view,
    )?)
}

#[derive(Debug, Serialize)]
struct VmPageView {
    vm: VmView,
    back: String,
    /// What the VM's plugins found and said.
    plugin_notes: Vec<crate::db::plugin_settings::PluginNote>,
    /// Secrets the VM's plugins left for its user, shown this once: (plugin, secret).
    plugin_secrets: Vec<(String, String)>,
}

async fn show_vm(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    headers: HeaderMap,
    Path(vmid): Path<String>,
) -> Result<Page, PageError> {
    let vmid = vm_key(&state, &user.viewer, &vmid).await?;
    let view = match vms::visible_vm(&state, &user.viewer, vmid).await {
        Ok(vm) => VmView::new(&vm),
        Err(vms::VmOpError::NotFound) => {
            // Assigned, but still being made: show it as such; it updates live. (It may
            // have reached the inventory since the first look: then it is shown as it is.)
            let pending = state.db.pending_assignments(user.viewer.id).await?;
            match pending.into_iter().find(|(pending, _)| *pending == vmid) {
                Some((_, class)) => VmView::being_prepared(vmid, class.as_deref()),
                None => VmView::new(
                    &vms::visible_vm(&state, &user.viewer, vmid)
                        .await
                        .map_err(AppError::from)?,
                ),
            }
        }
        Err(err) => return Err(AppError::from(err).into()),
    };
    let mut views = [view];
    with_time_limits(&state, &user.viewer, &mut views).await?;
    let [view] = views;
    let title = view.name.clone();
    // Secrets go to the VM's own user, once; nobody else sees them, not even its teacher.
    let plugin_secrets = if view.assignee.as_deref() == Some(user.viewer.username.as_str()) {
        state.db.take_plugin_secrets(vmid).await?
    } else {
        Vec::new()
    };
    let view = VmPageView {
        vm: view,
        back: format!("/vms/{vmid}"),
        plugin_notes: state.db.vm_plugin_notes(vmid).await?,
        plugin_secrets,
    };
    Ok(Page::render(
        "pages/portal/vm.html",
        &Layout::new(Some(&user), &headers, "vms", &title),
        &view,
    )?)
}

#[derive(Debug, Deserialize)]
struct ActionForm {
    back: Option<String>,
}

async fn vm_action(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path((vmid, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Result<Response, PageError> {
    let vmid = vm_key(&state, &user.viewer, &vmid).await?;
    let action = VmAction::parse(&action)
        .ok_or_else(|| AppError::NotFound(format!("there is no VM action {action:?}")))?;
    let back = local_path(form.back.as_deref(), "/vms");
    match vms::power(&state, &user.viewer, vmid, action).await {
        Ok(status) => {
            let mut said = format!(
                "VM {}: {} done; it is now {}.",
                vmid.vmid,
                action.as_str(),
                crate::web::power_state_text(status)
            );
            if action == VmAction::Start
                && let Some(limit) = run_limit(&state, &user.viewer, vmid).await?
            {
                said.push_str(&format!(
                    " It can run for {limit} before your hours run out."
                ));
            }
            Ok(redirect_with_flash(back, "ok", &said))
        }
        Err(vms::VmOpError::NotFound) => {
            Err(AppError::NotFound("there is no such VM".into()).into())
        }
        Err(err) => {
            let error = AppError::from(err);
            if matches!(error, AppError::Internal(_)) {
                return Err(error.into());
            }
            Ok(redirect_with_flash(
                back,
                "error",
                &error.message_for(user.viewer.is_staff()),
            ))
        }
    }
}

#[derive(Debug, Serialize)]
struct TemplatesView {
    templates: Vec<TemplateView>,
    /// Templates being built from an ISO: the viewer's, or every one for an admin.
    builds: Vec<crate::domain::builds::BuildView>,
}

async fn templates(
    State(state): State<Arc<HubState>>,
    RequireStaff(user): RequireStaff,
    headers: HeaderMap,
) -> Result<Page, PageError> {
    let filter = VmFilter::templates();
    let templates = state.db.find_vms(&filter).await?;
    let view = TemplatesView {
        templates: templates.iter().map(TemplateView::from).collect(),
        builds: crate::domain::builds::builds(&state, &user.viewer)
            .await
            .map_err(AppError::from)?,
    };
    Ok(Page::render(
        "pages/portal/templates.html",
        &Layout::new(Some(&user), &headers, "templates", "Templates"),
        &view,
    )?)
}

pub(in crate::web) fn router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/", get(home))
        .route("/vms", get(list_vms))
        .route("/vms/{vmid}", get(show_vm))
        .route("/vms/{vmid}/{action}", post(vm_action))
        .route("/templates", get(templates))
}
