//! Build graph, scheduler, cache, content store, snapshots and executors for kiln.
