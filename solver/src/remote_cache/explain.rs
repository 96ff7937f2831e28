//! Why a step missed an imported cache: which part of its key differs from the imported
//! record of the same step.
//!
//! SKELETON (lead): being written (issue 14).
