# Heredocs are stable since Dockerfile 1.4 (COPY <<EOF expands variables
# unless the delimiter is quoted). The reference comes from Dockerfile.2010
# and the history lines are what BuildKit's dispatchCopy records.
s/^L | buildkit.dockerfile.v0 | RUN |1 NAME=world .bin.sh -c printf 'hello.*/L | buildkit.dockerfile.v0 | COPY <<EOF \/hello # buildkit/
s/^L | buildkit.dockerfile.v0 | RUN |1 NAME=world .bin.sh -c mkdir.*/L | buildkit.dockerfile.v0 | COPY <<A <<B \/two\/ # buildkit/
