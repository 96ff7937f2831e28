# Heredocs are stable since Dockerfile 1.4; 20.10 has none. A single
# heredoc starting with #! is mounted at /dev/pipes/EOF and run through the
# shell (dispatchRun), which is what created_by shows; the mount point under
# /dev is removed again (mount stub cleaner), so the filesystem is the one of
# Dockerfile.2010's plain RUN.
s,^L | buildkit.dockerfile.v0 | RUN .bin.sh -c echo from-script.*,L | buildkit.dockerfile.v0 | RUN /bin/sh -c /dev/pipes/EOF # buildkit,
