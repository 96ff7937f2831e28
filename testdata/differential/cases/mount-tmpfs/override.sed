# Current BuildKit removes the empty mount points it had to create for a
# RUN's mounts once the RUN ends (executor/stubs.go MountStubsCleaner, made
# recursive for directories in commits 677897377 and 2cae26f61, used by the
# Dockerfile frontend through RemoveMountStubsRecursive); 20.10 left them in
# the layer.
\,^/t d 0755 0:0$,d
\,^/newdir d 0755 0:0$,d
\,^/newdir/sub d 0755 0:0$,d
