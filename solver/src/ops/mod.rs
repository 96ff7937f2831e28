//! Executing the ops of the build graph.

pub mod file;
pub mod source;
