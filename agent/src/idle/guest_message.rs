//! The idle warning, shown inside the guest as well: `wall` on Linux (every terminal of
//! every user logged in), `msg *` on Windows (every session's desktop). It goes through the
//! QEMU guest agent, so only VMs configured with one (`agent: 1`) are asked, and a guest
//! without it running, or without the program, only costs a line in the agent's log.

use std::time::Duration;

use proxlab_protocol::idle::IdleReason;

use crate::pve::guest;
use crate::pve::node::Node;

/// How long the guest has to show the message.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What a guest is told, in its users' words.
pub fn text(reason: IdleReason, secs_left: u32) -> String {
    let why = match reason {
        IdleReason::NoConnection => "Nobody has connected to this VM since it started",
        IdleReason::Disconnected => "Nobody has been connected to this VM for a while",
        IdleReason::IdleGuest | IdleReason::Unknown => "This VM has been idle for a while",
    };
    let minutes = secs_left.div_ceil(60).max(1);
    format!(
        "proxlab: {why}. It shuts down in {minutes} min. To keep it running, use it, or \
         press \"I'm still here\" in the lab portal. Save your work."
    )
}

/// The guest's program and arguments that show `text` to its users, by the VM's `ostype`.
pub fn command(ostype: Option<&str>, text: &str, secs_left: u32) -> (&'static str, Vec<String>) {
    if ostype.is_some_and(|os| os.starts_with('w')) {
        let shown = format!("/TIME:{}", secs_left.max(60));
        ("msg", vec!["*".into(), shown, text.into()])
    } else {
        ("wall", vec![text.into()])
    }
}

/// Shows the warning in the guest of `vmid`, if it has a guest agent configured.
pub async fn tell(node: &Node, vmid: u32, reason: IdleReason, secs_left: u32) {
    let config = match node.read_config(vmid) {
        Ok(Some((config, _))) => config,
        Ok(None) => return,
        Err(err) => {
            tracing::info!(vmid, %err, "idle: cannot read the VM's config for the guest message");
            return;
        }
    };
    let main = config.main();
    if !config.guest_agent_enabled() {
        return;
    }
    let text = text(reason, secs_left);
    let (program, args) = command(main.get("ostype"), &text, secs_left);
    match guest::exec(node, vmid, program, &args, None, TIMEOUT).await {
        Ok(output) if output.exit_code == 0 => {
            tracing::info!(vmid, program, "idle: the warning was shown in the guest");
        }
        Ok(output) => tracing::info!(
            vmid,
            program,
            code = output.exit_code,
            stderr = %output.stderr.trim(),
            "idle: the guest could not show the warning"
        ),
        Err(err) => tracing::info!(vmid, %err, "idle: no message into the guest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_guests_get_wall_and_windows_guests_msg() {
        let text = text(IdleReason::Disconnected, 290);
        assert!(text.contains("in 5 min"), "{text}");
        assert_eq!(
            command(Some("l26"), &text, 290),
            ("wall", vec![text.clone()])
        );
        assert_eq!(command(None, &text, 290), ("wall", vec![text.clone()]));
        assert_eq!(
            command(Some("win11"), &text, 290),
            ("msg", vec!["*".into(), "/TIME:290".into(), text.clone()])
        );
    }
}
