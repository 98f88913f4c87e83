//! The agents' side of the hub: the QUIC server, enrollment, sessions, the registry of
//! connected agents, and the typed call helper. This is the only module that touches quinn.

mod call;
mod context;
mod enroll;
pub mod lanes;
mod presence;
mod registry;
pub mod relay;
mod server;
mod session;

pub use call::{CallError, new_op_id};
pub use context::LinkContext;
pub use presence::Presence;
pub use registry::{AgentEvent, AgentRegistry, NodeStateChange, SessionInfo};
pub use server::AgentServer;
