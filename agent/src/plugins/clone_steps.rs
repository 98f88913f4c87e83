//! A class's plugin steps as the edit the Proxmox driver applies to every new clone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxlab_protocol::plugins::{PluginFinding, PluginSteps};
use proxlab_pve::config::VmConfig;
use proxlab_pve::policy::NodeLimits;

use super::registry::StepReport;
use super::{Hook, PluginRegistry};
use crate::collect::Collector;
use crate::pve::clones::CloneEdit;

/// The plugin steps a batch of clones runs, where the plugins are, the node's limits the
/// edits are checked against, and where what the plugins found is told.
pub struct CloneSteps {
    pub registry: Arc<PluginRegistry>,
    pub steps: PluginSteps,
    pub limits: NodeLimits,
    pub collector: Arc<Collector>,
    /// What each new VM's `validate` hooks found, until it is made.
    pub found: Mutex<BTreeMap<u32, Vec<PluginFinding>>>,
}

impl CloneSteps {
    pub fn new(
        registry: Arc<PluginRegistry>,
        steps: PluginSteps,
        limits: NodeLimits,
        collector: Arc<Collector>,
    ) -> Self {
        Self {
            registry,
            steps,
            limits,
            collector,
            found: Mutex::new(BTreeMap::new()),
        }
    }
}

impl CloneEdit for CloneSteps {
    fn edit(&self, vmid: u32, config: &mut VmConfig) -> Result<(), String> {
        let findings = self
            .registry
            .prepare(&self.steps, vmid, config, &self.limits)?;
        self.found
            .lock()
            .expect("not poisoned")
            .insert(vmid, findings);
        Ok(())
    }

    fn committed(&self, vmid: u32, config: &VmConfig) -> Result<(), String> {
        let name = config.main().get("name").unwrap_or_default();
        self.registry
            .remember(&self.steps, vmid, name)
            .map_err(|err| format!("cannot record the VM's plugin steps: {err}"))?;
        let findings = self
            .found
            .lock()
            .expect("not poisoned")
            .remove(&vmid)
            .unwrap_or_default();
        // Sent even without findings: a VM made again drops what was found before.
        let report = StepReport {
            findings,
            ..StepReport::default()
        };
        self.collector.report(report.event(vmid, Hook::Validate));
        Ok(())
    }

    fn deadline(&self) -> Duration {
        Duration::from_millis(self.registry.host().settings().steps_deadline_ms)
    }
}
