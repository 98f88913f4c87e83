//! The parts of `proxlab-loadtest`: the hub process under test ([`site`]), simulated agents
//! ([`fleet`], [`inventory`]), browsers ([`browsers`]), readings ([`measure`]) and the
//! [`report`].

pub mod browsers;
pub mod fleet;
pub mod inventory;
pub mod measure;
pub mod report;
pub mod site;
