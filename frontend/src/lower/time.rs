//! History timestamps (shared with the progress displays, in the solver).

pub use kiln_solver::timestamp::{now_secs as now, rfc3339};
