//! Ending with the process that started the agent: the demo runs its agents as children, and
//! they must not outlive it, however it ends (a node's agent runs under systemd, without this).

use anyhow::{Context, Result, bail};

/// Holds the PID of the process whose end ends this agent.
pub const EXIT_WITH_PARENT_ENV: &str = "PROXLAB_AGENT_EXIT_WITH_PARENT";

/// When [`EXIT_WITH_PARENT_ENV`] names this process's parent, asks the kernel for a SIGTERM
/// when that parent ends (the agent then stops as it does under systemd). Fails when the
/// parent has already ended.
pub fn follow_parent() -> Result<()> {
    let Ok(pid) = std::env::var(EXIT_WITH_PARENT_ENV) else {
        return Ok(());
    };
    let expected: i32 = pid
        .trim()
        .parse()
        .with_context(|| format!("{EXIT_WITH_PARENT_ENV}={pid:?} is not a process id"))?;
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
        .context("asking for a signal when the parent ends")?;
    // Checked after asking: a parent that ended just before would never send the signal.
    let parent = rustix::process::getppid().map(|pid| pid.as_raw_nonzero().get());
    if parent != Some(expected) {
        bail!("the process that started this agent ({expected}) has ended");
    }
    Ok(())
}
