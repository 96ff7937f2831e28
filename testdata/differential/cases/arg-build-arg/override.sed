# Current BuildKit (dispatchArg, since Dockerfile 1.8.0 / 47a52a17b) records
# an ARG with the value in effect: the --build-arg value wins over the default.
# 20.10 recorded the default as written.
s,^E | buildkit.dockerfile.v0 | ARG A=default$,E | buildkit.dockerfile.v0 | ARG A=fromcli,
s,^E | buildkit.dockerfile.v0 | ARG UNSET$,E | buildkit.dockerfile.v0 | ARG UNSET=given,
