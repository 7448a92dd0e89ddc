//! The topology model.
