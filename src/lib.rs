//! leviathan: a topology service for container networks.
pub mod model;
pub mod realize;
