//! `guest-exec` and `guest-files` for plugins on a real node: `qm guest exec` and the
//! guest agent's `file-write`, through the QEMU guest agent.

use std::sync::Arc;
use std::time::Duration;

use super::ExecResult;
use super::host::GuestExec;
use crate::pve::guest;
use crate::pve::node::Node;

/// Runs guest commands with the node's `qm`. Plugins call it from a blocking thread; it
/// waits on the agent's runtime.
pub struct NodeGuestExec {
    node: Arc<Node>,
    runtime: tokio::runtime::Handle,
}

impl NodeGuestExec {
    pub fn new(node: Arc<Node>, runtime: tokio::runtime::Handle) -> Self {
        Self { node, runtime }
    }
}

impl GuestExec for NodeGuestExec {
    fn exec(
        &self,
        vmid: u32,
        command: &str,
        args: &[String],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> Result<ExecResult, String> {
        let output = self
            .runtime
            .block_on(guest::exec(&self.node, vmid, command, args, stdin, timeout))?;
        Ok(ExecResult {
            exit_code: output.exit_code,
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }

    fn write_file(
        &self,
        vmid: u32,
        path: &str,
        content: &[u8],
        timeout: Duration,
    ) -> Result<(), String> {
        self.runtime
            .block_on(guest::write_file(&self.node, vmid, path, content, timeout))
    }
}
