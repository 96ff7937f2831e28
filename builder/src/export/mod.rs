//! Exporters: where a build's result goes (`-o/--output`).

pub mod image;
pub mod output;
