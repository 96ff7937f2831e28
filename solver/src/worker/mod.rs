//! The worker: executes the ops of a build graph on this machine, turning
//! inputs' results into a vertex's result (BuildKit's "worker").

pub mod layers;
