//! Live updates over Server-Sent Events (`GET /api/v1/events`). Each connection gets its own
//! feed task, which passes on what of each change (read and rendered once for every stream,
//! see [`crate::web::live`]) this viewer may see:
//!
//! - `vm`: a VM's current view (the same object as `GET /api/v1/vms/{id}`);
//! - `vm-removed`: `{"id": "CLUSTER-VMID", "vmid": N}` for a VM that no longer exists or is
//!   no longer visible;
//! - `node` (admins): a node's current view, on state changes and new metrics;
//! - `class` (the class's owners and admins): a class's deployment progress;
//! - `assigned`: `{"id": "CLUSTER-VMID", "vmid": N}`, a VM given to the viewer (a
//!   waitlisted student's, say);
//! - `resync`: updates were lost, or the viewer's role changed; reload the data.
//!
//! A feed checks every few seconds that what it was opened with still holds: a logout, an
//! expired or idle session, a revoked token or a disabled account ends it, and a changed role
//! changes what it sends from then on. At the same check it reads again which VMs the viewer
//! holds (sending `assigned` for new ones) and which classes they own.
//!
//! A page is drawn before its stream connects, and a stream can drop and reconnect: what
//! changed in between reaches no stream. So once a page's stream is connected, it asks
//! `GET /api/v1/events/catch-up` for the current state of what it shows (the same events, as
//! a list); from then on the stream keeps it current.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::HubState;
use crate::db::DbError;
use crate::db::inventory::VmFilter;
use crate::domain::access;
use crate::domain::auth::Credential;
use crate::domain::viewer::Viewer;
use crate::vm_key::VmKey;
use crate::web::error::{ApiError, AppError};
use crate::web::identity::CurrentUser;
use crate::web::live::LiveUpdate;
use crate::web::views::{NodeView, VmView};

/// Events waiting for a slow browser; past this the feed drops the connection's backlog and
/// asks for a resync.
const BACKLOG: usize = 256;

/// How often a feed checks that its session or token still holds.
const RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(3);

pub(in crate::web) async fn events(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (sender, receiver) = mpsc::channel(BACKLOG);
    tokio::spawn(feed(state, user.viewer, user.credential, sender));
    // Counted while the stream lives: it ends when the browser goes.
    let counted = crate::metrics::metrics().live_stream();
    let stream =
        futures_util::stream::unfold((receiver, counted), |(mut receiver, counted)| async move {
            receiver
                .recv()
                .await
                .map(|event| (Ok(event), (receiver, counted)))
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// What a page shows: `vms=1,2,3`, `classes=4`, `nodes=pve1,pve2` (each optional).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::web) struct Shown {
    #[serde(default)]
    vms: String,
    #[serde(default)]
    classes: String,
    #[serde(default)]
    nodes: String,
}

/// The most of each kind of object one catch-up covers (a page shows at most 1,000 VMs).
const CATCH_UP_LIMIT: usize = 1000;

/// One event of a catch-up, as the stream would have sent it.
#[derive(Debug, Serialize)]
struct Missed {
    #[serde(rename = "type")]
    kind: &'static str,
    data: serde_json::Value,
}

/// The answer of a catch-up: the events, and the VMs assigned to the viewer now (a page that
/// lists VMs and lacks one of them was drawn before it was given).
#[derive(Debug, Serialize)]
pub(in crate::web) struct CatchUp {
    events: Vec<Missed>,
    assigned: Vec<VmKey>,
}

fn list<T: std::str::FromStr>(text: &str, what: &str) -> Result<Vec<T>, AppError> {
    let items: Vec<T> = text
        .split(',')
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse()
                .map_err(|_| AppError::BadRequest(format!("{item:?} is not one of the {what}")))
        })
        .collect::<Result<_, _>>()?;
    if items.len() > CATCH_UP_LIMIT {
        return Err(AppError::BadRequest(format!(
            "at most {CATCH_UP_LIMIT} {what} at once"
        )));
    }
    Ok(items)
}

/// `GET /api/v1/events/catch-up`: the current state of what a page shows, as events.
pub(in crate::web) async fn catch_up(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Query(shown): Query<Shown>,
) -> Result<Json<CatchUp>, ApiError> {
    let viewer = &user.viewer;
    let keys: Vec<VmKey> = list(&shown.vms, "VM ids")?;
    let classes: Vec<i64> = list(&shown.classes, "class ids")?;
    let nodes: Vec<String> = list(&shown.nodes, "node names")?;
    let mut events = Vec::new();
    if !keys.is_empty() {
        let (visible, assigned) = changed_vms(&state, viewer, &keys).await?;
        let present: HashSet<VmKey> = visible.iter().map(|vm| vm.id).collect();
        for vm in &visible {
            events.push(Missed {
                kind: "vm",
                data: as_json(vm),
            });
        }
        for key in keys.iter().filter(|key| !present.contains(key)) {
            // A VM still being made for its user is not gone: it is not there yet.
            let pending = !viewer.is_admin() && assigned.contains(key);
            if !pending {
                events.push(Missed {
                    kind: "vm-removed",
                    data: as_json(&VmRef::from(*key)),
                });
            }
        }
    }
    for notice in state.notices.for_user(viewer.id, crate::db::now_unix()) {
        events.push(Missed {
            kind: "notice",
            data: as_json(&*notice),
        });
    }
    for class_id in classes {
        if crate::domain::classes::class_in_view(&state, viewer, class_id)
            .await
            .is_ok()
            && let Ok(progress) = crate::domain::classes::progress(&state, class_id).await
        {
            events.push(Missed {
                kind: "class",
                data: as_json(&progress),
            });
        }
    }
    if viewer.is_admin() && !nodes.is_empty() {
        for overview in state.db.node_overviews().await? {
            if nodes.contains(&overview.node.name) {
                let mut view = NodeView::from(&overview);
                view.online = state.registry.is_online(&overview.node.name);
                events.push(Missed {
                    kind: "node",
                    data: as_json(&view),
                });
            }
        }
    }
    let assigned = state.db.assigned_vms(viewer.id).await?;
    Ok(Json(CatchUp { events, assigned }))
}

fn as_json<T: Serialize>(data: &T) -> serde_json::Value {
    serde_json::to_value(data).unwrap_or_default()
}

fn event<T: Serialize>(name: &str, data: &T) -> Option<Event> {
    Event::default().event(name).json_data(data).ok()
}

/// A VM named in an event: its key, and its VMID for display.
#[derive(Serialize)]
struct VmRef {
    id: VmKey,
    vmid: u32,
}

impl From<VmKey> for VmRef {
    fn from(id: VmKey) -> Self {
        Self { id, vmid: id.vmid }
    }
}

/// The connection went away.
struct Gone;

async fn send(sender: &mpsc::Sender<Event>, event: Option<Event>) -> Result<(), Gone> {
    match event {
        Some(event) => sender.send(event).await.map_err(|_| Gone),
        None => Ok(()),
    }
}

async fn feed(
    state: Arc<HubState>,
    mut viewer: Viewer,
    credential: Credential,
    sender: mpsc::Sender<Event>,
) {
    let mut live = state.live.subscribe();
    let mut stopping = state.stopping.clone();
    let mut class_changes = state.jobs.subscribe();
    let mut notices = state.notices.subscribe();
    let mut recheck = tokio::time::interval(RECHECK_EVERY);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // What the viewer holds (to tell them of a VM given to them) and the classes they own
    // (whose VMs they see); both read again at every recheck.
    let mut held: HashSet<VmKey> = HashSet::new();
    let mut owned_classes = Vec::new();
    if refresh_scope(&state, &viewer, &mut held, &mut owned_classes, None)
        .await
        .is_err()
    {
        return;
    }
    loop {
        let result = tokio::select! {
            () = sender.closed() => return,
            // Ending the feed ends the response, so the server can shut down.
            () = hub_stopping(&mut stopping) => return,
            _ = recheck.tick() => match state.auth.recheck(&credential).await {
                Ok(Some(now)) if now == viewer => {
                    refresh_scope(&state, &viewer, &mut held, &mut owned_classes, Some(&sender)).await
                }
                Ok(Some(now)) => {
                    viewer = now;
                    match refresh_scope(&state, &viewer, &mut held, &mut owned_classes, None).await {
                        Ok(()) => send(&sender, event("resync", &())).await,
                        gone => gone,
                    }
                }
                Ok(None) => return,
                Err(err) => {
                    tracing::warn!(%err, "live update cannot check its session");
                    Ok(())
                }
            },
            update = live.recv() => match update {
                Ok(update) => send_update(&viewer, &owned_classes, &held, &update, &sender).await,
                Err(broadcast::error::RecvError::Lagged(_)) => send(&sender, event("resync", &())).await,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            change = class_changes.recv() => match change {
                Ok(class_id) => match send_class(&state, &viewer, class_id, &sender).await {
                    Ok(()) => {
                        refresh_scope(&state, &viewer, &mut held, &mut owned_classes, Some(&sender)).await
                    }
                    gone => gone,
                },
                Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            notice = notices.recv() => match notice {
                Ok(notice) if notice.user_ids.contains(&viewer.id) => {
                    send(&sender, event("notice", &*notice)).await
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if result.is_err() {
            return;
        }
    }
}

async fn hub_stopping(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    // A dropped sender also means the hub is gone.
    let _ = stopping.wait_for(|stop| *stop).await.map(|_| ());
}

/// Reads again what the viewer holds and which classes they own. With `announce`, VMs they
/// hold now and did not before are sent as `assigned`.
async fn refresh_scope(
    state: &HubState,
    viewer: &Viewer,
    held: &mut HashSet<VmKey>,
    owned_classes: &mut Vec<i64>,
    announce: Option<&mpsc::Sender<Event>>,
) -> Result<(), Gone> {
    let (now_held, now_owned) = match (
        state.db.assigned_vms(viewer.id).await,
        owned_class_ids(state, viewer).await,
    ) {
        (Ok(held), Ok(owned)) => (held, owned),
        (Err(err), _) | (_, Err(err)) => {
            tracing::warn!(%err, "live update cannot read the database");
            return Ok(());
        }
    };
    if let Some(sender) = announce {
        for key in now_held.iter().filter(|key| !held.contains(key)) {
            send(sender, event("assigned", &VmRef::from(*key))).await?;
        }
    }
    *held = now_held.into_iter().collect();
    *owned_classes = now_owned;
    Ok(())
}

/// The classes whose VMs someone sees for being their staff: a teacher's own ones and any
/// they assist in (an admin sees everything anyway).
async fn owned_class_ids(state: &HubState, viewer: &Viewer) -> Result<Vec<i64>, DbError> {
    if viewer.is_admin() {
        return Ok(Vec::new());
    }
    let mut classes = state.db.assisted_class_ids(viewer.id).await?;
    if viewer.is_staff() {
        classes.extend(state.db.owned_class_ids(viewer.id).await?);
    }
    Ok(classes)
}

/// Sends what of a change the viewer may see. A VM they could see before and cannot now,
/// or one that is gone, is sent as `vm-removed`.
async fn send_update(
    viewer: &Viewer,
    owned_classes: &[i64],
    held: &HashSet<VmKey>,
    update: &LiveUpdate,
    sender: &mpsc::Sender<Event>,
) -> Result<(), Gone> {
    let knew = |key: VmKey| viewer.is_admin() || held.contains(&key);
    match update {
        LiveUpdate::Vms { present, gone } => {
            for vm in present {
                if vm.visible_to(viewer, owned_classes) {
                    send(sender, Some(Event::default().event("vm").data(&vm.json))).await?;
                } else if knew(vm.key()) {
                    send(sender, event("vm-removed", &VmRef::from(vm.key()))).await?;
                }
            }
            for key in gone.iter().copied().filter(|key| knew(*key)) {
                send(sender, event("vm-removed", &VmRef::from(key))).await?;
            }
            Ok(())
        }
        LiveUpdate::Node { json } if viewer.is_admin() => {
            send(sender, Some(Event::default().event("node").data(json))).await
        }
        LiveUpdate::Node { .. } => Ok(()),
        LiveUpdate::Lost => send(sender, event("resync", &())).await,
    }
}

/// The changed VMs this viewer may see, and which of the VMIDs are assigned to them.
async fn changed_vms(
    state: &HubState,
    viewer: &Viewer,
    keys: &[VmKey],
) -> Result<(Vec<VmView>, HashSet<VmKey>), DbError> {
    let filter = access::restrict_to_viewer(
        viewer,
        VmFilter {
            keys: Some(keys.to_vec()),
            ..VmFilter::default()
        },
    );
    let vms = state.db.find_vms(&filter).await?;
    let assigned = if viewer.is_admin() {
        HashSet::new()
    } else {
        state
            .db
            .assigned_vms(viewer.id)
            .await?
            .into_iter()
            .collect()
    };
    Ok((vms.iter().map(VmView::new).collect(), assigned))
}

async fn send_class(
    state: &HubState,
    viewer: &Viewer,
    class_id: i64,
    sender: &mpsc::Sender<Event>,
) -> Result<(), Gone> {
    if crate::domain::classes::class_in_view(state, viewer, class_id)
        .await
        .is_err()
    {
        return Ok(());
    }
    match crate::domain::classes::progress(state, class_id).await {
        Ok(progress) => send(sender, event("class", &progress)).await,
        Err(_) => Ok(()),
    }
}
