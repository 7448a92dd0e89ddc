//! The topology model: hosts, containers, CENs, CINs and pools in a petgraph
//! graph, with the rules of ids, wiring and addressing. Pure: no I/O, no
//! async, no locks.

pub mod addressing;
pub mod change;
pub mod commands;
pub mod error;
pub mod ids;
pub mod read;
pub mod records;
pub mod tally;
pub mod topology;
pub mod view;

pub use addressing::AddrPlan;
pub use change::{Change, ChangeItem, SYSTEM_ACTOR};
pub use commands::{CenSpec, CinSpec, Command, CpoolSpec, StatusReport};
pub use commands::{MAX_NETNS_PATH, MAX_POOL_SIZE};
pub use error::{ErrorCode, ModelError, Result};
pub use ids::check_host_arg;
pub use read::Read;
pub use records::*;
pub use topology::{Images, Topology};
pub use view::{CinMember, IfAddr, Interface, View, Wiring};

#[cfg(test)]
mod tests;
