//! Exporters: where a build's result goes (`-o/--output`).

pub mod image;
pub mod output;
pub mod docker_archive;
pub mod oci;
