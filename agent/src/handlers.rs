//! Answers to hub requests: one stream each, served concurrently, with progress frames for
//! long operations and an operation-id cache so a retried request never runs twice.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use proxlab_link::{FrameIoError, read_frame, write_frame};
use proxlab_protocol::base_copy::{
    BaseExport, BaseExportReply, BaseImport, BaseRead, BaseReceive, BaseSend, BaseWrite,
    BaseWritten, Chunk,
};
use proxlab_protocol::clones::{CloneMany, CloneManyReply, MakeBase, MakeBaseReply};
use proxlab_protocol::console::ConsoleOpen;
use proxlab_protocol::idle::{IdlePolicies, IdleStillHere, IdleStillHereReply};
use proxlab_protocol::inventory::PowerState;
use proxlab_protocol::limits::{FRAME_READ_TIMEOUT, MAX_FRAME_LEN};
use proxlab_protocol::plugins::{
    PluginInstall, PluginInstalled, PluginRemove, PluginStudent, VmAssigned, VmAssignedReply,
    VmUnassigned,
};
use proxlab_protocol::requests::{MAX_PING_DELAY_MS, NodeInfo, NodeInfoReply, Ping, Pong};
use proxlab_protocol::tunnel::TunnelOpen;
use proxlab_protocol::vm_ops::{
    Done, HardwareReply, PowerAction, PowerReply, Resync, VmCreate, VmDestroy, VmHardware,
    VmInstall, VmMakeTemplate, VmPower, VmReimage, VmReset, VmSnapshot,
};
use proxlab_protocol::{ErrorKind, NoProgress, RemoteError, Request, RequestFrame, ResponseFrame};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::context::Context;
use crate::node_info;
use crate::plugins::clone_steps::CloneSteps;
use crate::plugins::{Hook, first_start, plugin_ops};
use crate::pve::{base_copy, clones, hardware, install, ops, reimage, remote_error, reset};

/// Stream error code for a request stream the agent could not read.
const STREAM_BAD_FRAME: u32 = 1;

/// Sends progress of a request's type.
pub struct ProgressSink<P> {
    tx: mpsc::UnboundedSender<serde_json::Value>,
    _kind: PhantomData<P>,
}

impl<P: Serialize> ProgressSink<P> {
    pub fn send(&self, progress: P) {
        if let Ok(body) = serde_json::to_value(progress) {
            let _ = self.tx.send(body);
        }
    }
}

/// Serves one request stream.
pub async fn serve_stream(
    context: Arc<Context>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let frame: RequestFrame = match read_frame(&mut recv, MAX_FRAME_LEN, FRAME_READ_TIMEOUT).await {
        Ok(frame) => frame,
        Err(err) => return refuse(send, recv, &err).await,
    };
    let span = tracing::info_span!("request", kind = %frame.kind, op_id = %frame.op_id);
    if frame.kind == ConsoleOpen::KIND {
        return crate::console::serve(&context, frame.body, send, recv)
            .instrument(span)
            .await;
    }
    if frame.kind == TunnelOpen::KIND {
        return crate::tunnel::serve(&context, frame.body, send, recv)
            .instrument(span)
            .await;
    }
    if frame.kind == BaseSend::KIND {
        return crate::base_stream::serve_send(&context, frame.body, send, recv)
            .instrument(span)
            .await;
    }
    if frame.kind == BaseReceive::KIND {
        return crate::base_stream::serve_receive(&context, frame.body, send, recv)
            .instrument(span)
            .await;
    }
    async {
        let (tx, mut progress) = mpsc::unbounded_channel();
        let work = dispatch(&context, frame, tx);
        tokio::pin!(work);
        let answer = loop {
            tokio::select! {
                answer = &mut work => break answer,
                Some(body) = progress.recv() => {
                    if write_frame(&mut send, &ResponseFrame::Progress { body }, MAX_FRAME_LEN).await.is_err() {
                        tracing::info!("the hub left; finishing the operation anyway");
                    }
                }
            }
        };
        while let Ok(body) = progress.try_recv() {
            let _ = write_frame(&mut send, &ResponseFrame::Progress { body }, MAX_FRAME_LEN).await;
        }
        if let ResponseFrame::Err { error } = &answer {
            tracing::info!(kind = ?error.kind, message = %error.message, "request failed");
        }
        if let Err(err) = write_frame(&mut send, &answer, MAX_FRAME_LEN).await {
            tracing::info!(%err, "cannot send the answer");
            return;
        }
        let _ = send.finish();
    }
    .instrument(span)
    .await;
}

/// Answers an unreadable request with an error and closes that stream only.
async fn refuse(mut send: quinn::SendStream, mut recv: quinn::RecvStream, err: &FrameIoError) {
    tracing::warn!(%err, "refusing an unreadable request");
    if err.is_bad_frame() {
        let error = RemoteError::new(ErrorKind::BadFrame, err.to_string());
        let _ = write_frame(&mut send, &ResponseFrame::Err { error }, MAX_FRAME_LEN).await;
        let _ = send.finish();
    } else {
        let _ = send.reset(STREAM_BAD_FRAME.into());
    }
    let _ = recv.stop(STREAM_BAD_FRAME.into());
}

/// Decodes a request body, runs `handler`, and wraps its outcome.
async fn handle<R, F, Fut>(
    body: serde_json::Value,
    tx: mpsc::UnboundedSender<serde_json::Value>,
    handler: F,
) -> ResponseFrame
where
    R: Request,
    F: FnOnce(R, ProgressSink<R::Progress>) -> Fut,
    Fut: Future<Output = Result<R::Response, RemoteError>>,
{
    match serde_json::from_value::<R>(body) {
        Ok(request) => {
            let sink = ProgressSink {
                tx,
                _kind: PhantomData,
            };
            ResponseFrame::from_result(handler(request, sink).await)
        }
        Err(err) => ResponseFrame::Err {
            error: RemoteError::new(
                ErrorKind::BadRequest,
                format!("invalid {} request: {err}", R::KIND),
            ),
        },
    }
}

/// The messages a handler sends while it works.
type Progress = mpsc::UnboundedSender<serde_json::Value>;

/// A handler's work in progress.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs one request kind: decodes the body, calls the handler, wraps its outcome.
type Serve = for<'a> fn(&'a Context, serde_json::Value, Progress) -> BoxFuture<'a, ResponseFrame>;

/// One request kind the agent serves.
struct Route {
    kind: &'static str,
    /// Whether it changes the node: such requests run once per operation id, so a request the
    /// hub retries after a lost answer is never done twice.
    changes_node: bool,
    serve: Serve,
}

/// A [`Route`] for request type `$request`, answered by `$handler(context, request, progress)`.
macro_rules! route {
    ($request:ty, changes_node: $changes:expr, $handler:path) => {
        Route {
            kind: <$request as Request>::KIND,
            changes_node: $changes,
            serve: |context, body, progress| {
                Box::pin(handle(body, progress, move |request: $request, sink| {
                    $handler(context, request, sink)
                }))
            },
        }
    };
}

/// Every request kind this agent serves: the one list from which dispatch and the capabilities
/// advertised in the hello are both made.
const ROUTES: &[Route] = &[
    route!(Ping, changes_node: false, ping),
    route!(NodeInfo, changes_node: false, node_info),
    route!(Resync, changes_node: false, resync),
    route!(BaseExport, changes_node: false, base_export),
    route!(BaseRead, changes_node: false, base_read),
    route!(VmPower, changes_node: true, vm_power),
    route!(VmDestroy, changes_node: true, vm_destroy),
    route!(VmCreate, changes_node: true, vm_create),
    route!(VmSnapshot, changes_node: true, vm_snapshot),
    route!(VmReset, changes_node: true, vm_reset),
    route!(VmReimage, changes_node: true, vm_reimage),
    route!(VmHardware, changes_node: true, vm_hardware),
    route!(VmInstall, changes_node: true, vm_install),
    route!(VmMakeTemplate, changes_node: true, vm_make_template),
    route!(MakeBase, changes_node: true, make_base),
    route!(CloneMany, changes_node: true, clone_many),
    route!(BaseWrite, changes_node: true, base_write),
    route!(BaseImport, changes_node: true, base_import),
    route!(PluginInstall, changes_node: true, plugin_install),
    route!(PluginRemove, changes_node: true, plugin_remove),
    route!(VmAssigned, changes_node: true, vm_assigned),
    route!(VmUnassigned, changes_node: true, vm_unassigned),
    route!(IdlePolicies, changes_node: false, idle_policies),
    route!(IdleStillHere, changes_node: false, idle_still_here),
];

/// Request kinds whose stream goes on as raw bytes after the answer (see [`crate::relay`]).
const STREAM_KINDS: &[&str] = &[
    ConsoleOpen::KIND,
    TunnelOpen::KIND,
    BaseSend::KIND,
    BaseReceive::KIND,
];

/// What the agent can do beyond serving requests, advertised with them.
const FEATURES: &[&str] = &[proxlab_protocol::base_copy::LANE_CAPABILITY];

/// The request kinds this agent serves.
pub fn served_kinds() -> impl Iterator<Item = &'static str> {
    ROUTES
        .iter()
        .map(|route| route.kind)
        .chain(STREAM_KINDS.iter().copied())
}

/// What the agent advertises in its hello: the kinds it serves, and its features.
pub fn capabilities() -> impl Iterator<Item = &'static str> {
    served_kinds().chain(FEATURES.iter().copied())
}

/// Routes a request to its handler by kind. Operations that change the node run once per
/// operation id.
pub async fn dispatch(context: &Context, frame: RequestFrame, progress: Progress) -> ResponseFrame {
    let RequestFrame { op_id, kind, body } = frame;
    let Some(route) = ROUTES.iter().find(|route| route.kind == kind) else {
        return ResponseFrame::Err {
            error: RemoteError::new(
                ErrorKind::Unsupported,
                format!("this agent does not serve {kind:?} requests"),
            ),
        };
    };
    let started = std::time::Instant::now();
    let work = (route.serve)(context, body, progress);
    let answer = if route.changes_node {
        context.ops.once(&op_id, work).await
    } else {
        work.await
    };
    let ok = !matches!(answer, ResponseFrame::Err { .. });
    crate::metrics::metrics().request(&kind, ok, started.elapsed());
    answer
}

/// What the hub is told of a driver error.
#[allow(clippy::needless_pass_by_value)] // the shape `map_err` takes
fn failed(err: crate::pve::PveError) -> RemoteError {
    remote_error(&err)
}

async fn node_info(
    _: &Context,
    _: NodeInfo,
    _: ProgressSink<NoProgress>,
) -> Result<NodeInfoReply, RemoteError> {
    Ok(node_info::collect())
}

async fn resync(
    context: &Context,
    _: Resync,
    _: ProgressSink<NoProgress>,
) -> Result<Done, RemoteError> {
    context.collector.request_resync();
    Ok(Done {})
}

/// Replaces the node's idle policies (the whole set; the hub sends it on every change).
async fn idle_policies(
    context: &Context,
    r: IdlePolicies,
    _: ProgressSink<NoProgress>,
) -> Result<Done, RemoteError> {
    context.idle.set_policies(r).map_err(|err| {
        RemoteError::new(
            ErrorKind::Internal,
            format!("cannot keep the idle policies: {err}"),
        )
    })?;
    // Judged at once, so the timers of VMs already running start from now.
    context.idle.pass();
    Ok(Done {})
}

async fn idle_still_here(
    context: &Context,
    r: IdleStillHere,
    _: ProgressSink<NoProgress>,
) -> Result<IdleStillHereReply, RemoteError> {
    Ok(IdleStillHereReply {
        was_warned: context.idle.still_here(r.vmid),
    })
}

async fn base_export(
    context: &Context,
    r: BaseExport,
    _: ProgressSink<NoProgress>,
) -> Result<BaseExportReply, RemoteError> {
    base_copy::export(&context.node, r.base_vmid, r.diff_against, r.from_vm)
        .await
        .map_err(failed)
}

async fn base_read(
    context: &Context,
    r: BaseRead,
    _: ProgressSink<NoProgress>,
) -> Result<Chunk, RemoteError> {
    base_copy::read(
        &context.node,
        r.base_vmid,
        r.disk,
        r.offset,
        r.diff_against,
        r.from_vm,
    )
    .await
    .inspect(|chunk| crate::metrics::metrics().base_copied(true, u64::from(chunk.len)))
    .map_err(failed)
}

async fn vm_power(
    context: &Context,
    r: VmPower,
    _: ProgressSink<NoProgress>,
) -> Result<PowerReply, RemoteError> {
    let node = &context.node;
    let status = ops::power(node, r.vmid, r.action).await.map_err(failed)?;
    if r.action == PowerAction::Start {
        first_start::spawn(
            node.clone(),
            context.plugins.clone(),
            context.collector.clone(),
            r.vmid,
            Hook::AfterStart,
        );
    }
    Ok(PowerReply { status })
}

async fn vm_destroy(
    context: &Context,
    r: VmDestroy,
    _: ProgressSink<NoProgress>,
) -> Result<Done, RemoteError> {
    plugin_ops::before_delete(&context.node, &context.plugins, &context.collector, r.vmid).await;
    context.plugins.forget(r.vmid);
    ops::destroy(
        &context.node,
        r.vmid,
        r.allow_template,
        r.identity.as_deref(),
    )
    .await
    .map(|()| Done {})
    .map_err(failed)
}

async fn vm_create(
    context: &Context,
    r: VmCreate,
    _: ProgressSink<NoProgress>,
) -> Result<Done, RemoteError> {
    ops::create(&context.node, &r)
        .await
        .map(|()| Done {})
        .map_err(failed)
}

async fn vm_snapshot(
    context: &Context,
    r: VmSnapshot,
    _: ProgressSink<NoProgress>,
) -> Result<Done, RemoteError> {
    ops::snapshot(&context.node, r.vmid, &r.name, &r.op)
        .await
        .map(|()| Done {})
        .map_err(failed)
}

async fn vm_reset(
    context: &Context,
    r: VmReset,
    _: ProgressSink<NoProgress>,
) -> Result<PowerReply, RemoteError> {
    let status = reset::reset(&context.node, r.vmid, r.stopped, r.identity.as_deref())
        .await
        .map_err(failed)?;
    if status == PowerState::Running {
        first_start::spawn(
            context.node.clone(),
            context.plugins.clone(),
            context.collector.clone(),
            r.vmid,
            Hook::AfterReset,
        );
    }
    Ok(PowerReply { status })
}

async fn vm_reimage(
    context: &Context,
    r: VmReimage,
    _: ProgressSink<NoProgress>,
) -> Result<PowerReply, RemoteError> {
    reimage::reimage(&context.node, r.vmid, r.base_vmid, r.identity.as_deref())
        .await
        .map(|status| PowerReply { status })
        .map_err(failed)
}

async fn vm_hardware(
    context: &Context,
    r: VmHardware,
    _: ProgressSink<NoProgress>,
) -> Result<HardwareReply, RemoteError> {
    hardware::change_hardware(&context.node, r.vmid, r.identity.as_deref(), &r.change)
        .await
        .map_err(failed)
}

async fn vm_install(
    context: &Context,
    r: VmInstall,
    _: ProgressSink<NoProgress>,
) -> Result<Done, RemoteError> {
    install::install(&context.node, &r)
        .await
        .map(|()| Done {})
        .map_err(failed)
}

async fn vm_make_template(
    context: &Context,
    r: VmMakeTemplate,
    _: ProgressSink<NoProgress>,
) -> Result<Done, RemoteError> {
    install::make_template(&context.node, r.vmid, r.identity.as_deref())
        .await
        .map(|()| Done {})
        .map_err(failed)
}

async fn make_base(
    context: &Context,
    r: MakeBase,
    progress: ProgressSink<<MakeBase as Request>::Progress>,
) -> Result<MakeBaseReply, RemoteError> {
    clones::make_base(
        &context.node,
        r.source_vmid,
        r.base_vmid,
        &r.name,
        r.storage.as_deref(),
        |p| progress.send(p),
    )
    .await
    .map(|volids| MakeBaseReply {
        base_vmid: r.base_vmid,
        volids,
    })
    .map_err(failed)
}

async fn clone_many(
    context: &Context,
    r: CloneMany,
    progress: ProgressSink<<CloneMany as Request>::Progress>,
) -> Result<CloneManyReply, RemoteError> {
    let node = &context.node;
    let concurrency = if r.concurrency == 0 {
        node.config.clone_concurrency
    } else {
        r.concurrency as usize
    };
    let steps = r.steps.map(|steps| {
        Arc::new(CloneSteps::new(
            context.plugins.clone(),
            steps,
            node.limits,
            context.collector.clone(),
        )) as Arc<dyn clones::CloneEdit>
    });
    let outcomes = clones::clone_many(
        node,
        r.base_vmid,
        r.vms,
        concurrency,
        r.hardware,
        steps,
        |o| progress.send(o),
    )
    .await
    .map_err(failed)?;
    let (created, failed): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(|o| o.error.is_none());
    Ok(CloneManyReply {
        created: created.into_iter().map(|o| o.vmid).collect(),
        failed,
    })
}

async fn plugin_install(
    context: &Context,
    r: PluginInstall,
    _: ProgressSink<NoProgress>,
) -> Result<PluginInstalled, RemoteError> {
    plugin_ops::install(&context.plugins, r).await
}

async fn vm_assigned(
    context: &Context,
    r: VmAssigned,
    _: ProgressSink<NoProgress>,
) -> Result<VmAssignedReply, RemoteError> {
    let student = r.student_facts.unwrap_or_else(|| PluginStudent {
        display_name: r.student.clone(),
        username: r.student,
        ..PluginStudent::default()
    });
    let name =
        plugin_ops::assignment(&context.node, &context.plugins, r.vmid, Some(student)).await?;
    Ok(VmAssignedReply { name })
}

async fn vm_unassigned(
    context: &Context,
    r: VmUnassigned,
    _: ProgressSink<NoProgress>,
) -> Result<Done, RemoteError> {
    plugin_ops::assignment(&context.node, &context.plugins, r.vmid, None).await?;
    Ok(Done {})
}

async fn plugin_remove(
    context: &Context,
    r: PluginRemove,
    _: ProgressSink<NoProgress>,
) -> Result<Done, RemoteError> {
    plugin_ops::remove(&context.plugins, &r.id)
}

async fn base_write(
    context: &Context,
    r: BaseWrite,
    _: ProgressSink<NoProgress>,
) -> Result<BaseWritten, RemoteError> {
    base_copy::write(&context.node, r)
        .await
        .inspect(|bytes| crate::metrics::metrics().base_copied(false, *bytes))
        .map(|bytes| BaseWritten { bytes })
        .map_err(failed)
}

async fn base_import(
    context: &Context,
    r: BaseImport,
    _: ProgressSink<NoProgress>,
) -> Result<MakeBaseReply, RemoteError> {
    base_copy::import(&context.node, &r)
        .await
        .map(|volids| MakeBaseReply {
            base_vmid: r.base_vmid,
            volids,
        })
        .map_err(failed)
}

async fn ping(
    _: &Context,
    request: Ping,
    _: ProgressSink<NoProgress>,
) -> Result<Pong, RemoteError> {
    if request.delay_ms > MAX_PING_DELAY_MS {
        return Err(RemoteError::new(
            ErrorKind::BadRequest,
            format!("delay_ms must be at most {MAX_PING_DELAY_MS}"),
        ));
    }
    tokio::time::sleep(Duration::from_millis(request.delay_ms)).await;
    Ok(Pong {
        payload: request.payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::Collector;
    use crate::plugins::PluginRegistry;
    use crate::pve::config::PveConfig;
    use crate::pve::node::Node;

    async fn context() -> (tempfile::TempDir, Context) {
        let dir = tempfile::tempdir().unwrap();
        let node = Arc::new(Node::new(PveConfig::for_sim(dir.path(), "pve1")));
        let collector = Collector::start(node.clone()).await;
        let facts = crate::plugins::NodeFacts {
            node: "pve1".into(),
            agent_version: "test".into(),
        };
        let settings = crate::plugins::PluginSettings {
            dir: dir.path().join("plugins"),
            ..Default::default()
        };
        let host = crate::plugins::PluginHost::new(settings, facts, None).unwrap();
        let plugins = Arc::new(PluginRegistry::start(host, dir.path()));
        let idle = Arc::new(crate::idle::IdleEnforcer::new(
            node.clone(),
            collector.clone(),
            Arc::default(),
            None,
        ));
        (dir, Context::new(node, collector, plugins, idle))
    }

    async fn ask(kind: &str, body: serde_json::Value) -> ResponseFrame {
        let (_dir, context) = context().await;
        let frame = RequestFrame {
            op_id: "op".into(),
            kind: kind.into(),
            body,
        };
        dispatch(&context, frame, mpsc::unbounded_channel().0).await
    }

    #[tokio::test]
    async fn ping_echoes() {
        let answer = ask("ping", serde_json::json!({"payload": "x"})).await;
        assert_eq!(
            answer,
            ResponseFrame::Ok {
                body: serde_json::json!({"payload": "x"})
            }
        );
    }

    #[tokio::test]
    async fn unknown_kind_is_unsupported() {
        let answer = ask("frobnicate", serde_json::json!({})).await;
        assert!(
            matches!(answer, ResponseFrame::Err { error } if error.kind == ErrorKind::Unsupported)
        );
    }

    #[tokio::test]
    async fn every_advertised_kind_is_served() {
        // A body no request accepts: each advertised kind must reach its handler and be
        // refused as a bad request, never as unsupported. (Stream kinds are served on their
        // own stream, not by dispatch; the hub's console tests cover them.)
        for kind in served_kinds().filter(|kind| !STREAM_KINDS.contains(kind)) {
            if matches!(kind, "ping" | "node-info" | "resync") {
                continue;
            }
            let answer = ask(kind, serde_json::json!({"nothing": true})).await;
            assert!(
                matches!(&answer, ResponseFrame::Err { error } if error.kind == ErrorKind::BadRequest),
                "{kind}: {answer:?}"
            );
        }
    }

    #[test]
    fn every_served_kind_has_golden_wire_files() {
        // The protocol crate pins each message's encoding in a golden file.
        let golden =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/tests/golden");
        for kind in served_kinds() {
            for side in ["request", "response"] {
                let file = golden.join(format!("{side}_{}.json", kind.replace('-', "_")));
                assert!(file.exists(), "{} is missing", file.display());
            }
        }
    }

    #[tokio::test]
    async fn malformed_bodies_are_bad_requests() {
        for (kind, body) in [
            ("ping", serde_json::json!({"delay_ms": "soon"})),
            ("vm-power", serde_json::json!({"vmid": "x"})),
            ("clone-many", serde_json::json!({"base_vmid": 9000})),
        ] {
            let answer = ask(kind, body).await;
            assert!(
                matches!(&answer, ResponseFrame::Err { error } if error.kind == ErrorKind::BadRequest),
                "{kind}: {answer:?}"
            );
        }
    }

    #[tokio::test]
    async fn overlong_ping_delay_is_refused() {
        let answer = ask(
            "ping",
            serde_json::json!({"delay_ms": MAX_PING_DELAY_MS + 1}),
        )
        .await;
        assert!(
            matches!(answer, ResponseFrame::Err { error } if error.kind == ErrorKind::BadRequest)
        );
    }

    #[tokio::test]
    async fn node_info_describes_this_machine() {
        let ResponseFrame::Ok { body } = ask("node-info", serde_json::json!({})).await else {
            panic!("node-info failed");
        };
        let info: NodeInfoReply = serde_json::from_value(body).unwrap();
        assert!(info.cpu_count >= 1 && info.memory_total_bytes > 0 && !info.hostname.is_empty());
    }
}
