# Heredocs are stable since Dockerfile 1.4; 20.10's built-in frontend
# has none, so Dockerfile.2010 runs the same commands on one line and the
# history lines are set to what BuildKit's dispatchRun records: a plain
# heredoc becomes `/bin/sh -c <body>`, one with a command after it keeps the
# heredoc syntax. Newlines in created_by appear as JSON-escaped \n by difftool.
s/^L | buildkit.dockerfile.v0 | RUN .bin.sh -c echo hi .*/L | buildkit.dockerfile.v0 | RUN \/bin\/sh -c echo hi > \/x\\necho there >> \/x\\n # buildkit/
s/^L | buildkit.dockerfile.v0 | RUN .bin.sh -c echo tabbed .*/L | buildkit.dockerfile.v0 | RUN \/bin\/sh -c <<-EOT sh\\n\\techo tabbed > \/y\\nEOT # buildkit/
