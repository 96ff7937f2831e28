# Current BuildKit (dockerfile 1.5.0, ec9a3ac14) records the global value of
# an ARG redeclared without a default.
s,^E | buildkit.dockerfile.v0 | ARG NAME$,E | buildkit.dockerfile.v0 | ARG NAME=b,
