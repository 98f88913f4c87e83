//! What every request handler works with: the node, its collected state, its plugins, the
//! tunnel policy, the idle enforcer, and the cache that makes a retried operation run once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use proxlab_protocol::ResponseFrame;
use tokio::sync::OnceCell;

use crate::collect::Collector;
use crate::idle::IdleEnforcer;
use crate::plugins::PluginRegistry;
use crate::pve::node::Node;
use crate::tunnel::policy::TunnelSettings;

/// How many finished operations are remembered for retries.
const REMEMBERED_OPS: usize = 1024;

/// The answer of one operation, shared by every request that carries its id.
type SharedAnswer = Arc<OnceCell<ResponseFrame>>;

/// Finished and running operations by id, and the order they arrived in.
#[derive(Default)]
pub(crate) struct OpCache {
    ops: Mutex<(HashMap<String, SharedAnswer>, VecDeque<String>)>,
}

impl OpCache {
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
        cell.get_or_init(|| work).await.clone()
    }
}

/// What request handlers work with.
pub struct Context {
    pub node: Arc<Node>,
    pub collector: Arc<Collector>,
    pub plugins: Arc<PluginRegistry>,
    pub tunnels: TunnelSettings,
    pub idle: Arc<IdleEnforcer>,
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
            ops: OpCache::default(),
        }
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
}
