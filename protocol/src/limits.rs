//! Sizes and times both peers agree on.

use std::time::Duration;

/// The largest frame either side accepts. Bigger frames are refused before allocation.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// The largest enrollment frame. Enrollment is unauthenticated, so it gets a small budget.
pub const MAX_ENROLL_FRAME_LEN: usize = 64 * 1024;

/// How long a reader waits for the rest of a frame once it has started, and for the first
/// frame of a new stream.
pub const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the agent sends a heartbeat on its control stream.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// How many missed heartbeats make the hub drop a connection.
pub const HEARTBEAT_MISSES_ALLOWED: u32 = 3;

/// The default time a hub request may take before the caller gives up.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
