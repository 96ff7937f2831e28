//! Cache-mount contents in the remote cache: one layer blob per cache id, restored into
//! the cache-mount store of the importing machine.
//!
//! SKELETON (lead): being written (issue 14).
