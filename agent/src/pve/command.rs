//! Running Proxmox's tools: an argument vector (never a shell), a timeout, and stderr
//! captured into a typed error.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// A failed tool call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PveError {
    /// A tool exited with an error; `failure` says what its words mean (see [`classify`]).
    #[error("{program} failed (exit {code}): {stderr}")]
    CommandFailed {
        program: String,
        code: i32,
        stderr: String,
        failure: Failure,
    },
    #[error("{program} did not finish within {after:?}")]
    Timeout { program: String, after: Duration },
    #[error("cannot run {program}: {message}")]
    Spawn { program: String, message: String },
    #[error("{0}")]
    Invalid(String),
    /// The VM is gone, or is another VM than the one asked about.
    #[error("{0}")]
    NotFound(String),
    /// The VM or VMID is busy or taken: locked, running already, existing already.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Io(String),
}

impl From<std::io::Error> for PveError {
    fn from(err: std::io::Error) -> Self {
        PveError::Io(err.to_string())
    }
}

impl From<proxlab_pve::policy::Refusal> for PveError {
    fn from(refusal: proxlab_pve::policy::Refusal) -> Self {
        PveError::Invalid(format!("refused {refusal}"))
    }
}

impl PveError {
    /// The tool's own message, for people.
    pub fn message(&self) -> String {
        match self {
            PveError::CommandFailed { stderr, .. } => stderr.clone(),
            other => other.to_string(),
        }
    }
}

/// What a tool's failure means for whoever asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// What was asked about does not exist.
    NotFound,
    /// It is busy or taken (a lock, a VM already running, a VMID already used).
    Conflict,
    /// Anything else.
    Other,
}

/// How Proxmox's tools word the failures the hub acts on, first match wins (their wording is
/// in `shared/reference/proxmox-node.md`). The only place that reads meaning into stderr.
const STDERR_MEANINGS: &[(&str, Failure)] = &[
    ("does not exist", Failure::NotFound),
    ("is locked", Failure::Conflict),
    ("already exists", Failure::Conflict),
    ("already running", Failure::Conflict),
    ("got timeout", Failure::Conflict),
];

/// What a tool's stderr means.
pub fn classify(stderr: &str) -> Failure {
    STDERR_MEANINGS
        .iter()
        .find(|(words, _)| stderr.contains(words))
        .map_or(Failure::Other, |(_, failure)| *failure)
}

fn name_of(program: &Path) -> String {
    program.file_name().map_or_else(
        || program.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// How many times each tool has been started by this process, by program name (for the
/// agent's metrics and the node-cost benchmark).
static RUNS: std::sync::Mutex<BTreeMap<String, u64>> = std::sync::Mutex::new(BTreeMap::new());

/// How many times each tool has been started so far, by program name.
pub fn runs_so_far() -> BTreeMap<String, u64> {
    RUNS.lock().expect("not poisoned").clone()
}

fn count_run(name: &str) {
    *RUNS
        .lock()
        .expect("not poisoned")
        .entry(name.to_owned())
        .or_default() += 1;
}

/// How to run a tool: where, for how long, with what extra environment.
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    pub cwd: Option<&'a Path>,
    pub timeout: Duration,
    pub env: &'a BTreeMap<String, String>,
    /// What the tool reads on stdin; nothing (`/dev/null`) when `None`.
    pub input: Option<&'a [u8]>,
}

impl Invocation<'_> {
    /// A plain call with a timeout.
    pub fn with_timeout(timeout: Duration) -> Invocation<'static> {
        static NO_ENV: BTreeMap<String, String> = BTreeMap::new();
        Invocation {
            cwd: None,
            timeout,
            env: &NO_ENV,
            input: None,
        }
    }
}

/// Runs `program args...` and returns its stdout.
pub async fn run<I, S>(program: &Path, args: I, how: Invocation<'_>) -> Result<String, PveError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_streaming(program, args, how, |_| {}).await
}

/// Like [`run`], calling `on_output` with each chunk of stdout as it arrives (for progress).
pub async fn run_streaming<I, S>(
    program: &Path,
    args: I,
    how: Invocation<'_>,
    mut on_output: impl FnMut(&str),
) -> Result<String, PveError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let name = name_of(program);
    let timeout = how.timeout;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(how.env)
        .stdin(if how.input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = how.cwd {
        command.current_dir(dir);
    }
    count_run(&name);
    let mut child = command.spawn().map_err(|err| PveError::Spawn {
        program: name.clone(),
        message: err.to_string(),
    })?;
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut stderr = child.stderr.take().expect("piped");
    let stdin = child.stdin.take();
    let work = async {
        let write_input = async {
            if let (Some(mut stdin), Some(input)) = (stdin, how.input) {
                stdin.write_all(input).await?;
                // Dropped here: the tool sees the end of its input.
            }
            Ok::<_, std::io::Error>(())
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_err = stderr.read_to_end(&mut err);
        let read_out = async {
            let mut buf = [0u8; 8192];
            loop {
                let n = stdout.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(());
                }
                on_output(&String::from_utf8_lossy(&buf[..n]));
                out.extend_from_slice(&buf[..n]);
            }
        };
        let (input_result, out_result, err_result) = tokio::join!(write_input, read_out, read_err);
        input_result?;
        out_result?;
        err_result?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, out, err))
    };
    let (status, out, err) = match tokio::time::timeout(timeout, work).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(PveError::Timeout {
                program: name,
                after: timeout,
            });
        }
    };
    if !status.success() {
        let stderr = String::from_utf8_lossy(&err).trim_end().to_owned();
        return Err(PveError::CommandFailed {
            program: name,
            code: status.code().unwrap_or(-1),
            failure: classify(&stderr),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxmox_failures_are_classified_by_their_words() {
        // Lines as `qm`, `pvesh` and `pvesm` print them (proxmox-node.md).
        for (stderr, expected) in [
            (
                "Configuration file 'nodes/pve1/qemu-server/104.conf' does not exist",
                Failure::NotFound,
            ),
            ("VM is locked (backup)", Failure::Conflict),
            ("VM is locked (snapshot)", Failure::Conflict),
            ("VM 100 already running", Failure::Conflict),
            (
                "unable to create VM 104 - VM 104 already exists on node 'pve2'",
                Failure::Conflict,
            ),
            (
                "can't lock file '/var/lock/qemu-server/lock-104.conf' - got timeout",
                Failure::Conflict,
            ),
            ("VM quit/powerdown failed - got timeout", Failure::Conflict),
            ("you can't start a vm if it's a template", Failure::Other),
            ("unable to parse volume ID 'x'", Failure::Other),
            ("", Failure::Other),
        ] {
            assert_eq!(classify(stderr), expected, "{stderr}");
        }
    }

    #[tokio::test]
    async fn captures_output_and_errors() {
        let out = run(
            Path::new("/bin/echo"),
            ["a b", "c"],
            Invocation::with_timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap();
        assert_eq!(
            out, "a b c\n",
            "arguments are passed as-is, never through a shell"
        );
        let err = run(
            Path::new("/bin/ls"),
            ["/nonexistent-proxlab"],
            Invocation::with_timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, PveError::CommandFailed { program, code, stderr, .. } if program == "ls" && *code != 0 && stderr.contains("nonexistent")),
            "{err}"
        );
        let err = run(
            Path::new("/nonexistent/qm"),
            ["list"],
            Invocation::with_timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, PveError::Spawn { .. }));
    }

    #[tokio::test]
    async fn times_out() {
        let err = run(
            Path::new("/bin/sleep"),
            ["5"],
            Invocation::with_timeout(Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, PveError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn streams_stdout() {
        let mut chunks = String::new();
        run_streaming(
            Path::new("/bin/echo"),
            ["hello"],
            Invocation::with_timeout(Duration::from_secs(5)),
            |c| chunks.push_str(c),
        )
        .await
        .unwrap();
        assert_eq!(chunks, "hello\n");
    }
}
