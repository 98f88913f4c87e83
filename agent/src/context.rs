//! What every request handler works with: the node, its collected state, its plugins, the
//! tunnel policy, the idle enforcer, and the cache that makes a retried operation run once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};

use proxlab_protocol::ResponseFrame;
use tokio::sync::OnceCell;

use crate::collect::Collector;
use crate::idle::IdleEnforcer;
use crate::op_journal::OpJournal;
use crate::plugins::PluginRegistry;
use crate::pve::node::Node;
use crate::tunnel::policy::TunnelSettings;

/// How many finished operations are remembered for retries.
const REMEMBERED_OPS: usize = 1024;

/// The answer of one operation, shared by every request that carries its id.
type SharedAnswer = Arc<OnceCell<ResponseFrame>>;

/// Finished and running operations by id, and the order they arrived in; with a journal,
/// finished answers are also on disk and outlive the process.
#[derive(Default)]
pub(crate) struct OpCache {
    ops: Mutex<(HashMap<String, SharedAnswer>, VecDeque<String>)>,
    journal: Option<OpJournal>,
}

impl OpCache {
    /// A cache that keeps finished answers in the journal at `path`, starting with those it
    /// holds from before.
    pub(crate) fn with_journal(path: &Path) -> std::io::Result<Self> {
        let (journal, answers) = OpJournal::open(path, REMEMBERED_OPS)?;
        let mut ops = HashMap::new();
        let mut order = VecDeque::new();
        for (op_id, answer) in answers {
            ops.insert(op_id.clone(), Arc::new(OnceCell::new_with(Some(answer))));
            order.push_back(op_id);
        }
        Ok(Self {
            ops: Mutex::new((ops, order)),
            journal: Some(journal),
        })
    }

    /// Runs `work` once per operation id; a retry waits for, or replays, the first answer.
    pub(crate) async fn once(
        &self,
        op_id: &str,
        work: impl Future<Output = ResponseFrame>,
    ) -> ResponseFrame {
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
        let mut ran = false;
        let answer = cell
            .get_or_init(|| async {
                ran = true;
                work.await
            })
            .await
            .clone();
        if ran && let Some(journal) = &self.journal {
            journal.record(op_id, &answer);
        }
        answer
    }
}

/// What request handlers work with.
pub struct Context {
    pub node: Arc<Node>,
    pub collector: Arc<Collector>,
    pub plugins: Arc<PluginRegistry>,
    pub tunnels: TunnelSettings,
    pub idle: Arc<IdleEnforcer>,
    /// Where base copies' lanes go while the link is up.
    pub lanes: crate::lane::LaneSlot,
    pub(crate) ops: OpCache,
}

impl Context {
    pub fn new(
        node: Arc<Node>,
        collector: Arc<Collector>,
        plugins: Arc<PluginRegistry>,
        idle: Arc<IdleEnforcer>,
    ) -> Self {
        Self {
            node,
            collector,
            plugins,
            tunnels: TunnelSettings::default(),
            idle,
            lanes: crate::lane::LaneSlot::default(),
            ops: OpCache::default(),
        }
    }

    /// The same, remembering finished operations in the journal at `path` across restarts.
    pub fn with_op_journal(mut self, path: &Path) -> std::io::Result<Self> {
        self.ops = OpCache::with_journal(path)?;
        Ok(self)
    }

    /// The same, with the config's `[tunnels]` section.
    pub fn with_tunnels(mut self, tunnels: TunnelSettings) -> Self {
        self.tunnels = tunnels;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn a_journaled_operation_is_answered_after_a_restart_without_running_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operations.jsonl");
        let runs = std::sync::atomic::AtomicUsize::new(0);
        let work = |n: u64| {
            let runs = &runs;
            async move {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                ResponseFrame::Ok {
                    body: serde_json::json!(n),
                }
            }
        };
        let first = OpCache::with_journal(&path).unwrap();
        let answered = first.once("clone-7", work(1)).await;
        drop(first);
        let restarted = OpCache::with_journal(&path).unwrap();
        assert_eq!(restarted.once("clone-7", work(2)).await, answered);
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        restarted.once("clone-8", work(3)).await;
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
