//! `guest-exec` for plugins on a real node: `qm guest exec`, through the QEMU guest agent.

use std::sync::Arc;
use std::time::Duration;

use super::ExecResult;
use super::host::GuestExec;
use crate::pve::node::Node;

/// The most a command may be given on stdin (the guest agent's own limit).
const MAX_INPUT: usize = 1 << 20;

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

/// `out-data`/`err-data`, which `qm` prints decoded.
fn text_of(value: &serde_json::Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
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
        if command.is_empty() {
            return Err("no command given".into());
        }
        if stdin.is_some_and(|input| input.len() > MAX_INPUT) {
            return Err("stdin is limited to 1 MiB".into());
        }
        let timeout_secs = timeout.as_secs().max(1).to_string();
        let mut argv: Vec<String> = vec![
            "guest".into(),
            "exec".into(),
            vmid.to_string(),
            "--timeout".into(),
            timeout_secs,
        ];
        if stdin.is_some() {
            argv.extend(["--pass-stdin".into(), "1".into()]);
        }
        argv.push("--".into());
        argv.push(command.to_owned());
        argv.extend(args.iter().cloned());
        let node = self.node.clone();
        let input = stdin.map(|text| text.as_bytes().to_vec());
        let output = self.runtime.block_on(async move {
            let how = crate::pve::command::Invocation {
                timeout: timeout + Duration::from_secs(5),
                input: input.as_deref(),
                ..node.invocation(None)
            };
            crate::pve::command::run(&node.config.qm, &argv, how).await
        });
        let output = output.map_err(|err| err.message())?;
        let answer: serde_json::Value = serde_json::from_str(&output)
            .map_err(|err| format!("qm guest exec printed no JSON: {err}"))?;
        if answer.get("exited").and_then(serde_json::Value::as_i64) != Some(1) {
            return Err(format!("the command did not finish within {timeout:?}"));
        }
        Ok(ExecResult {
            exit_code: answer["exitcode"].as_i64().unwrap_or(-1) as i32,
            stdout: text_of(&answer["out-data"]),
            stderr: text_of(&answer["err-data"]),
        })
    }
}
