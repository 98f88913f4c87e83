//! Commands run inside a VM's guest with `qm guest exec`, through the QEMU guest agent.

use std::time::Duration;

use super::node::Node;

/// The most a command may be given on stdin (the guest agent's own limit).
pub const MAX_INPUT: usize = 1 << 20;

/// How a guest command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` with `args` in the guest of `vmid` (no shell: the guest agent starts the
/// program itself), waits up to `timeout` for it to end, and returns how it ended. Fails
/// with `qm`'s words when there is no guest agent to ask.
pub async fn exec(
    node: &Node,
    vmid: u32,
    command: &str,
    args: &[String],
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<GuestOutput, String> {
    if command.is_empty() {
        return Err("no command given".into());
    }
    if stdin.is_some_and(|input| input.len() > MAX_INPUT) {
        return Err("stdin is limited to 1 MiB".into());
    }
    let mut argv: Vec<String> = vec![
        "guest".into(),
        "exec".into(),
        vmid.to_string(),
        "--timeout".into(),
        timeout.as_secs().max(1).to_string(),
    ];
    if stdin.is_some() {
        argv.extend(["--pass-stdin".into(), "1".into()]);
    }
    argv.push("--".into());
    argv.push(command.to_owned());
    argv.extend(args.iter().cloned());
    let how = super::command::Invocation {
        timeout: timeout + Duration::from_secs(5),
        input: stdin.map(str::as_bytes),
        ..node.invocation(None)
    };
    let output = super::command::run(&node.config.qm, &argv, how)
        .await
        .map_err(|err| err.message())?;
    let answer: serde_json::Value = serde_json::from_str(&output)
        .map_err(|err| format!("qm guest exec printed no JSON: {err}"))?;
    if answer.get("exited").and_then(serde_json::Value::as_i64) != Some(1) {
        return Err(format!("the command did not finish within {timeout:?}"));
    }
    // `qm` prints `out-data` and `err-data` decoded.
    let text = |key: &str| answer[key].as_str().unwrap_or_default().to_owned();
    Ok(GuestOutput {
        exit_code: answer["exitcode"].as_i64().unwrap_or(-1) as i32,
        stdout: text("out-data"),
        stderr: text("err-data"),
    })
}

/// Writes `content` to `path` in the guest of `vmid` through the guest agent (`pvesh create
/// .../agent/file-write`, the content base64-encoded as QEMU takes it).
pub async fn write_file(
    node: &Node,
    vmid: u32,
    path: &str,
    content: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(content);
    let api_path = format!("/nodes/{}/qemu/{vmid}/agent/file-write", node.name);
    let argv = [
        "create",
        &api_path,
        "--file",
        path,
        "--content",
        &encoded,
        "--encode",
        "0",
    ];
    let how = super::command::Invocation {
        timeout,
        ..node.invocation(None)
    };
    super::command::run(&node.config.pvesh, argv, how)
        .await
        .map(|_| ())
        .map_err(|err| err.message())
}
