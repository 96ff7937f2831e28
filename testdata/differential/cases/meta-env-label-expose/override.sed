# Dockerfile 1.19.0 (98eab3257 "fix history config for EXPOSE instruction")
# records EXPOSE as the list of this instruction's ports, sorted as written
# (parseExpose sorts them; BuildKit's test: EXPOSE 2375 5000 1234/udp ->
# [1234/udp 2375/tcp 5000/tcp]); 20.10 printed a Go map.
s,^E | buildkit.dockerfile.v0 | EXPOSE map.443.*,E | buildkit.dockerfile.v0 | EXPOSE [443/udp 80/tcp 8080/tcp],
s,^E | buildkit.dockerfile.v0 | EXPOSE map.80/tcp:{} 9000.*,E | buildkit.dockerfile.v0 | EXPOSE [80/tcp 9000/tcp 9001/tcp],
