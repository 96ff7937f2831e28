//! `kiln bake`: bake files (HCL, JSON, compose) read, evaluated and resolved into
//! targets, as `docker buildx bake` reads them.

pub mod compose;
pub mod error;
pub mod eval;
pub mod files;
pub mod funcs;
pub mod funcs_ext;
pub mod order;
pub mod overrides;
pub mod plan;
pub mod print;
pub mod resolve;
pub mod target;
pub mod time;
pub mod tryfunc;
pub mod vartype;
