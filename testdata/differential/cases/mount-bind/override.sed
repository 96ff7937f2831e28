# Current BuildKit removes the empty mount points it had to create for a
# RUN's mounts once the RUN ends (executor/stubs.go MountStubsCleaner, made
# recursive for directories in commits 677897377 and 2cae26f61, used by the
# Dockerfile frontend through RemoveMountStubsRecursive); 20.10 left them in
# the layer.
# /rootlist is `ls /` inside the RUN: without the stubs of the earlier RUNs
# it lacks m and o2 (it has the current RUN's own /ctx mount point): the
# new size and hash are those of 20.10's /rootlist without the lines m and o2.
s,^/rootlist f 0644 0:0 size=94 sha256=fbe60ce85b790779$,/rootlist f 0644 0:0 size=89 sha256=45223eac1fb37b22,
\,^/ctx d 0755 0:0$,d
\,^/m d 0755 0:0$,d
\,^/o2 d 0755 0:0$,d
