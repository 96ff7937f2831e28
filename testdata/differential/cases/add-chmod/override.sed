# BuildKit's Dockerfile frontend 1.7.0 (commit c7ce41a2f, "Add --chown and
# --chmod to commitMessage for ADD/COPY command") records these flags in the
# history's created_by; 20.10's frontend left them out.
s,^L | buildkit.dockerfile.v0 | ADD f /a # buildkit$,L | buildkit.dockerfile.v0 | ADD --chmod=640 f /a # buildkit,
s,^L | buildkit.dockerfile.v0 | ADD dir /d/ # buildkit$,L | buildkit.dockerfile.v0 | ADD --chmod=750 dir /d/ # buildkit,
