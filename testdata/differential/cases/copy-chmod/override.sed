# BuildKit's Dockerfile frontend 1.7.0 (commit c7ce41a2f, "Add --chown and
# --chmod to commitMessage for ADD/COPY command") records these flags in the
# history's created_by; 20.10's frontend left them out.
s,^L | buildkit.dockerfile.v0 | COPY f /a # buildkit$,L | buildkit.dockerfile.v0 | COPY --chmod=600 f /a # buildkit,
s,^L | buildkit.dockerfile.v0 | COPY dir /d/ # buildkit$,L | buildkit.dockerfile.v0 | COPY --chmod=755 dir /d/ # buildkit,
s,^L | buildkit.dockerfile.v0 | COPY f /b # buildkit$,L | buildkit.dockerfile.v0 | COPY --chown=1000:1000 --chmod=0640 f /b # buildkit,
