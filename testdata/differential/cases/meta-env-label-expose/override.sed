# Dockerfile 1.19.0 (98eab3257 "fix history config for EXPOSE instruction")
# records EXPOSE as the list of this instruction's ports in order; 20.10
# printed a Go map.
s,^E | buildkit.dockerfile.v0 | EXPOSE map.443.*,E | buildkit.dockerfile.v0 | EXPOSE [80/tcp 443/udp 8080/tcp],
s,^E | buildkit.dockerfile.v0 | EXPOSE map.80/tcp:{} 9000.*,E | buildkit.dockerfile.v0 | EXPOSE [80/tcp 9000/tcp 9001/tcp],
