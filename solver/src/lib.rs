//! Build graph, scheduler, cache, content store, snapshots and executors for kiln.

pub mod archive;
pub mod atomic_file;
pub mod cache;
pub mod content;
pub mod executor;
pub mod gc;
pub mod llb;
pub mod meta;
pub mod mounts;
pub mod ops;
pub mod pattern;
pub mod pid;
pub mod progress;
pub mod remote_cache;
pub mod rootfs_path;
pub mod scheduler;
pub mod snapshot;
pub mod state;
pub mod sysmount;
pub mod timestamp;
pub mod trash;
pub mod units;
pub mod userns;
pub mod worker;
