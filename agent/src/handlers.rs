//! Answers to hub requests: one stream each, served concurrently, with progress frames for
//! long operations and an operation-id cache so a retried request never runs twice.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxlab_link::{FrameIoError, read_frame, write_frame};
use proxlab_protocol::base_copy::{BaseExport, BaseImport, BaseRead, BaseWrite, BaseWritten};
use proxlab_protocol::clones::{CloneMany, CloneManyReply, MakeBase, MakeBaseReply};
use proxlab_protocol::limits::{FRAME_READ_TIMEOUT, MAX_FRAME_LEN};
use proxlab_protocol::plugins::{PluginInstall, PluginRemove, VmAssigned};
use proxlab_protocol::requests::{MAX_PING_DELAY_MS, NodeInfo, Ping, Pong};
use proxlab_protocol::vm_ops::{
    Done, PowerAction, PowerReply, Resync, VmCreate, VmDestroy, VmPower, VmReset, VmSnapshot,
};
use proxlab_protocol::{ErrorKind, RemoteError, Request, RequestFrame, ResponseFrame};
use serde::Serialize;
use tokio::sync::{OnceCell, mpsc};
use tracing::Instrument;

use crate::collect::Collector;
use crate::node_info;
use crate::plugins::PluginRegistry;
use crate::plugins::{first_start, plugin_ops};
use crate::pve::node::Node;
use crate::pve::{base_copy, clones, ops, remote_error};

/// The request kinds this agent serves, advertised in its hello.
pub const CAPABILITIES: &[&str] = &[
    Ping::KIND,
    NodeInfo::KIND,
    Resync::KIND,
    VmPower::KIND,
    VmDestroy::KIND,
    VmCreate::KIND,
    VmSnapshot::KIND,
    VmReset::KIND,
    MakeBase::KIND,
    CloneMany::KIND,
    BaseExport::KIND,
    BaseRead::KIND,
    BaseWrite::KIND,
    BaseImport::KIND,
    PluginInstall::KIND,
    PluginRemove::KIND,
    VmAssigned::KIND,
];

/// Stream error code for a request stream the agent could not read.
const STREAM_BAD_FRAME: u32 = 1;

/// How many finished operations are remembered for retries.
const REMEMBERED_OPS: usize = 1024;

/// The answer of one operation, shared by every request that carries its id.
type SharedAnswer = Arc<OnceCell<ResponseFrame>>;

/// Finished and running operations by id, and the order they arrived in.
#[derive(Default)]
struct OpCache {
    ops: Mutex<(HashMap<String, SharedAnswer>, VecDeque<String>)>,
}

impl OpCache {
    /// Runs `work` once per operation id; a retry waits for, or replays, the first answer.
    async fn once(&self, op_id: &str, work: impl Future<Output = ResponseFrame>) -> ResponseFrame {
        let cell = {
            let mut guard = self.ops.lock().expect("not poisoned");
            let (ops, order) = &mut *guard;
            if let Some(cell) = ops.get(op_id) {
                cell.clone()
            } else {
                let cell = Arc::new(OnceCell::new());
                ops.insert(op_id.to_owned(), cell.clone());
                order.push_back(op_id.to_owned());
                if order.len() > REMEMBERED_OPS
                    && let Some(oldest) = order.pop_front()
                {
                    ops.remove(&oldest);
                }
                cell
            }
        };
        cell.get_or_init(|| work).await.clone()
    }
}

/// What request handlers work with.
pub struct Context {
    pub node: Arc<Node>,
    pub collector: Arc<Collector>,
    pub plugins: Arc<PluginRegistry>,
    ops: OpCache,
}

impl Context {
    pub fn new(node: Arc<Node>, collector: Arc<Collector>, plugins: Arc<PluginRegistry>) -> Self {
        Self {
            node,
            collector,
            plugins,
            ops: OpCache::default(),
        }
    }
}

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

/// Routes a request to its handler by kind. Operations that change the node run once per
/// operation id.
pub async fn dispatch(
    context: &Context,
    frame: RequestFrame,
    tx: mpsc::UnboundedSender<serde_json::Value>,
) -> ResponseFrame {
    let RequestFrame { op_id, kind, body } = frame;
    match kind.as_str() {
        Ping::KIND => handle(body, tx, |r: Ping, _| ping(r)).await,
        NodeInfo::KIND => {
            handle(body, tx, |_: NodeInfo, _| async {
                Ok(node_info::collect())
            })
            .await
        }
        Resync::KIND => {
            handle(body, tx, |_: Resync, _| async {
                context.collector.request_resync();
                Ok(Done {})
            })
            .await
        }
        BaseExport::KIND => {
            handle(body, tx, |r: BaseExport, _| async move {
                base_copy::export(&context.node, r.base_vmid)
                    .await
                    .map_err(|e| remote_error(&e))
            })
            .await
        }
        BaseRead::KIND => {
            handle(body, tx, |r: BaseRead, _| async move {
                base_copy::read(&context.node, r.base_vmid, r.disk, r.offset)
                    .await
                    .map_err(|e| remote_error(&e))
            })
            .await
        }
        VmPower::KIND
        | VmDestroy::KIND
        | VmCreate::KIND
        | VmSnapshot::KIND
        | VmReset::KIND
        | MakeBase::KIND
        | CloneMany::KIND
        | BaseWrite::KIND
        | BaseImport::KIND
        | PluginInstall::KIND
        | PluginRemove::KIND
        | VmAssigned::KIND => {
            context
                .ops
                .once(&op_id, change(context, &kind, body, tx))
                .await
        }
        other => ResponseFrame::Err {
            error: RemoteError::new(
                ErrorKind::Unsupported,
                format!("this agent does not serve {other:?} requests"),
            ),
        },
    }
}

/// The requests that change the node.
async fn change(
    context: &Context,
    kind: &str,
    body: serde_json::Value,
    tx: mpsc::UnboundedSender<serde_json::Value>,
) -> ResponseFrame {
    let node = &context.node;
    let failed = |e: crate::pve::PveError| remote_error(&e);
    match kind {
        VmPower::KIND => {
            handle(body, tx, |r: VmPower, _| async move {
                let status = ops::power(node, r.vmid, r.action).await.map_err(failed)?;
                if r.action == PowerAction::Start {
                    first_start::spawn(
                        node.clone(),
                        context.plugins.clone(),
                        context.collector.clone(),
                        r.vmid,
                    );
                }
                Ok(PowerReply { status })
            })
            .await
        }
        VmDestroy::KIND => {
            handle(body, tx, |r: VmDestroy, _| async move {
                context.plugins.forget(r.vmid);
                ops::destroy(node, r.vmid, r.allow_template, r.identity.as_deref())
                    .await
                    .map(|()| Done {})
                    .map_err(failed)
            })
            .await
        }
        VmCreate::KIND => {
            handle(body, tx, |r: VmCreate, _| async move {
                ops::create(node, &r)
                    .await
                    .map(|()| Done {})
                    .map_err(failed)
            })
            .await
        }
        VmSnapshot::KIND => {
            handle(body, tx, |r: VmSnapshot, _| async move {
                ops::snapshot(node, r.vmid, &r.name, &r.op)
                    .await
                    .map(|()| Done {})
                    .map_err(failed)
            })
            .await
        }
        VmReset::KIND => {
            handle(body, tx, |r: VmReset, _| async move {
                clones::reset(node, r.vmid, r.stopped, r.identity.as_deref())
                    .await
                    .map(|status| PowerReply { status })
                    .map_err(failed)
            })
            .await
        }
        MakeBase::KIND => {
            handle(body, tx, |r: MakeBase, progress| async move {
                clones::make_base(
                    node,
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
            })
            .await
        }
        CloneMany::KIND => {
            handle(body, tx, |r: CloneMany, progress| async move {
                let concurrency = if r.concurrency == 0 {
                    node.config.clone_concurrency
                } else {
                    r.concurrency as usize
                };
                let steps = r.steps.map(|steps| {
                    Arc::new(clones::CloneSteps {
                        registry: context.plugins.clone(),
                        steps,
                    })
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
                let (created, failed): (Vec<_>, Vec<_>) =
                    outcomes.into_iter().partition(|o| o.error.is_none());
                Ok(CloneManyReply {
                    created: created.into_iter().map(|o| o.vmid).collect(),
                    failed,
                })
            })
            .await
        }
        PluginInstall::KIND => {
            handle(body, tx, |r: PluginInstall, _| async move {
                plugin_ops::install(&context.plugins, r).await
            })
            .await
        }
        VmAssigned::KIND => {
            handle(body, tx, |r: VmAssigned, _| async move {
                plugin_ops::assigned(node, &context.plugins, r).await
            })
            .await
        }
        PluginRemove::KIND => {
            handle(body, tx, |r: PluginRemove, _| async move {
                plugin_ops::remove(&context.plugins, &r.id)
            })
            .await
        }
        BaseWrite::KIND => {
            handle(body, tx, |r: BaseWrite, _| async move {
                base_copy::write(node, r)
                    .await
                    .map(|bytes| BaseWritten { bytes })
                    .map_err(failed)
            })
            .await
        }
        BaseImport::KIND => {
            handle(body, tx, |r: BaseImport, _| async move {
                base_copy::import(node, &r)
                    .await
                    .map(|volids| MakeBaseReply {
                        base_vmid: r.base_vmid,
                        volids,
                    })
                    .map_err(failed)
            })
            .await
        }
        other => ResponseFrame::Err {
            error: RemoteError::new(
                ErrorKind::Unsupported,
                format!("{other:?} is not an operation"),
            ),
        },
    }
}

async fn ping(request: Ping) -> Result<Pong, RemoteError> {
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
    use proxlab_protocol::requests::NodeInfoReply;

    use super::*;
    use crate::pve::config::PveConfig;

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
        (dir, Context::new(node, collector, plugins))
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
        // refused as a bad request, never as unsupported.
        for kind in CAPABILITIES {
            if matches!(*kind, "ping" | "node-info" | "resync") {
                continue;
            }
            let answer = ask(kind, serde_json::json!({"nothing": true})).await;
            assert!(
                matches!(&answer, ResponseFrame::Err { error } if error.kind == ErrorKind::BadRequest),
                "{kind}: {answer:?}"
            );
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

    #[tokio::test]
    async fn a_retried_operation_runs_once() {
        let cache = OpCache::default();
        let runs = std::sync::atomic::AtomicUsize::new(0);
        let work = || async {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ResponseFrame::Ok {
                body: serde_json::json!(1),
            }
        };
        let (a, b) = tokio::join!(cache.once("op-1", work()), cache.once("op-1", work()));
        assert_eq!(a, b);
        cache.once("op-1", work()).await;
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        cache.once("op-2", work()).await;
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
