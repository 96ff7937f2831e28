//! Sources fetched from outside the build: HTTP(S) downloads and git repositories.

pub mod git;
pub mod http;
pub mod http_cache;
