//! The build cache: cache keys, content checksums and the persistent cache store.

pub mod contenthash;
mod dirfd;
mod fingerprint;
pub mod key;
pub mod statcache;
pub mod store;
mod walk;

pub use contenthash::{
    checksum_paths, checksum_paths_cached, checksum_paths_filtered, ContentChecksum,
    ContentHashError, Selector,
};
pub use key::{
    cache_key, input_selectors, op_cache_digest, reads_only_users, vertex_cache_key, CacheKey,
    InputKey, KeyParts,
};
pub use statcache::{FileStat, StatCache};
pub use store::{CacheEntry, CacheResult, CacheStore};
