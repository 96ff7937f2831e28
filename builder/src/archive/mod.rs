//! Image archives and layouts on disk: OCI layout tars and directories, Docker's `docker save`
//! format, and the hostile-input-safe unpacking of both. Used by `save`, `load`, `copy` and
//! the `oci`/`docker` exporters.

pub mod docker;
pub mod oci;
