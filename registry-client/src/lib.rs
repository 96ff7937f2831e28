//! OCI distribution client for kiln: references, auth, pull, push.
