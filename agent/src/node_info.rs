//! Facts about this node, from sysinfo.

use proxlab_protocol::requests::NodeInfoReply;
use proxlab_pve::policy::NodeLimits;
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// CPUs and memory, without the costlier parts of sysinfo.
fn cpus_and_memory() -> System {
    System::new_with_specifics(
        RefreshKind::nothing()
            .with_memory(MemoryRefreshKind::nothing().with_ram())
            .with_cpu(CpuRefreshKind::nothing()),
    )
}

/// Collects the node's facts.
pub fn collect() -> NodeInfoReply {
    let system = cpus_and_memory();
    NodeInfoReply {
        hostname: System::host_name().unwrap_or_default(),
        kernel: System::kernel_version().unwrap_or_default(),
        os: System::long_os_version().unwrap_or_default(),
        cpu_count: system.cpus().len() as u32,
        memory_total_bytes: system.total_memory(),
        memory_used_bytes: system.used_memory(),
        uptime_secs: System::uptime(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// The node's logical CPUs and physical memory.
pub fn limits() -> NodeLimits {
    let system = cpus_and_memory();
    NodeLimits {
        cpus: (system.cpus().len() as u32).max(1),
        memory_mib: system.total_memory() / (1024 * 1024),
    }
}
