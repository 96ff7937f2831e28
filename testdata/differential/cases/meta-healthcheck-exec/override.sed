# Dockerfile 1.24.0 (d67dafeb8 "fix HEALTHCHECK history formatting") records
# HEALTHCHECK as Go's %+v of the config; 20.10 printed %q of a pointer.
s,^E | buildkit.dockerfile.v0 | HEALTHCHECK &{.*,E | buildkit.dockerfile.v0 | HEALTHCHECK {Test:[CMD /bin/true x] Interval:1m30s Timeout:0s StartPeriod:0s StartInterval:0s Retries:2},
