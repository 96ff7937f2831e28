//! `kiln build`'s machinery: from a context and a Dockerfile to images.
#![allow(dead_code)] // Wired into the CLI as the build path lands (issue 5).

pub mod export;
