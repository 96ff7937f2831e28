//! The remote build cache of `kiln build` (`--cache-to` / `--cache-from`): the flags, the
//! import of cache configs before the solve and the export of the build's cache after it,
//! to a registry, an OCI layout directory, or the image's own config (inline). The cache
//! image itself is made and read by `kiln_solver::remote_cache`.

pub mod spec;
