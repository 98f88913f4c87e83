//! A class's plugin steps as the edit the Proxmox driver applies to every new clone.

use std::sync::Arc;
use std::time::Duration;

use proxlab_protocol::plugins::PluginSteps;
use proxlab_pve::config::VmConfig;
use proxlab_pve::policy::NodeLimits;

use super::PluginRegistry;
use crate::pve::clones::CloneEdit;

/// The plugin steps a batch of clones runs, where the plugins are, and the node's limits the
/// edits are checked against.
pub struct CloneSteps {
    pub registry: Arc<PluginRegistry>,
    pub steps: PluginSteps,
    pub limits: NodeLimits,
}

impl CloneEdit for CloneSteps {
    fn edit(&self, vmid: u32, config: &mut VmConfig) -> Result<(), String> {
        self.registry
            .prepare(&self.steps, vmid, config, &self.limits)
    }

    fn committed(&self, vmid: u32, config: &VmConfig) -> Result<(), String> {
        let name = config.main().get("name").unwrap_or_default();
        self.registry
            .remember(&self.steps, vmid, name)
            .map_err(|err| format!("cannot record the VM's plugin steps: {err}"))
    }

    fn deadline(&self) -> Duration {
        Duration::from_millis(self.registry.host().settings().steps_deadline_ms)
    }
}
