# Current BuildKit (dockerfile 1.5.0, ec9a3ac14) records the global value of
# an ARG redeclared without a default, and (1.12.0, e2be8f768) lists a build
# arg once in a RUN's created_by even when it was declared twice.
s,^E | buildkit.dockerfile.v0 | ARG G$,E | buildkit.dockerfile.v0 | ARG G=global,
s,^L | buildkit.dockerfile.v0 | RUN |2 G=local G=local ,L | buildkit.dockerfile.v0 | RUN |1 G=local ,
