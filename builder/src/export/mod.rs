//! Exporters: where a build's result goes (`-o/--output`).

pub mod output;
