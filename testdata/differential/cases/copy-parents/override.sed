# Current BuildKit (Dockerfile 1.7+ stable --parents) records one COPY per
# instruction with --parents in created_by; 20.10 has no --parents, the
# reference was built with one COPY per source (Dockerfile.2010).
/^L | buildkit.dockerfile.v0 | COPY a\/b\/f /c\
L | buildkit.dockerfile.v0 | COPY --parents a/b/f a/c/g /out/ # buildkit
/^L | buildkit.dockerfile.v0 | COPY a\/c\/g /d
/^L | buildkit.dockerfile.v0 | COPY x\/1\/y /c\
L | buildkit.dockerfile.v0 | COPY --parents ./x/*/y /wild/ # buildkit
/^L | buildkit.dockerfile.v0 | COPY x\/2\/y /d
s/^\(== tree .layers: \)5;/\13;/
