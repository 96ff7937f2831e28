//! Exporters: where a build's result goes (`-o/--output`).

pub mod docker_archive;
pub mod image;
pub mod oci;
pub mod output;
