# Current BuildKit (--exclude stable in Dockerfile 1.7+) records one COPY;
# --exclude is not part of created_by. 20.10 has no --exclude: the reference
# was built from Dockerfile.2010 (one COPY per kept file). `*.log` matches at
# the context root only (like .dockerignore patterns), so sub/c.log is copied.
/^L | buildkit.dockerfile.v0 | COPY a \/c\/ /c\
L | buildkit.dockerfile.v0 | COPY . /c/ # buildkit
/^L | buildkit.dockerfile.v0 | COPY sub\/c.log sub\/d /d
s/^\(== tree .layers: \)3;/\12;/
