#!/usr/bin/env bash
# Push and pull of an image with one 1 GiB random layer plus 50 small layers through a local
# registry: kiln vs skopeo in the same run, wall time and peak RSS, printed as a table.
#   usage: bench/registry_transfer.sh            (builds nothing; uses target/release/kiln)
#   env:   KILN=path/to/kiln  BENCH_DIR=scratch dir  BENCH_PORT=5901  BIG_MB=1024  SMALL=50  RUNS=1
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-$PWD/target/release/kiln}
BIG_MB=${BIG_MB:-1024}
SMALL=${SMALL:-50}
RUNS=${RUNS:-1}
PORT=${BENCH_PORT:-5901}
REG=127.0.0.1:$PORT
WORK=${BENCH_DIR:-$(mktemp -d /var/tmp/kiln-bench.XXXXXX)}
mkdir -p "$WORK"
[ -x "$KILN" ] || { echo "no kiln binary at $KILN (cargo build --release -p kiln)" >&2; exit 1; }
command -v skopeo >/dev/null || { echo "skopeo is required" >&2; exit 1; }

cat > "$WORK/registry.yml" <<YML
version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: $WORK/registry}
  delete: {enabled: true}
http:
  addr: $REG
  secret: kiln-bench
YML
REGPID=""
# (Re)starts the bench registry with empty storage: as root, skopeo's blob-info cache lives in
# /var/lib/containers/cache and would turn a second push into cross-repo mounts otherwise.
fresh_registry() {
  if [ -n "$REGPID" ]; then kill "$REGPID" 2>/dev/null || true; wait "$REGPID" 2>/dev/null || true; fi
  rm -rf "$WORK/registry"
  if curl -fs "http://$REG/v2/" >/dev/null 2>&1; then
    echo "something already listens on $REG; set BENCH_PORT" >&2; exit 1
  fi
  docker-registry serve "$WORK/registry.yml" > "$WORK/registry.log" 2>&1 &
  REGPID=$!
  for _ in $(seq 100); do curl -fs "http://$REG/v2/" >/dev/null && return; sleep 0.1; done
  echo "bench registry did not start" >&2; exit 1
}
trap 'kill $REGPID 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
fresh_registry

echo "building a ${BIG_MB} MiB + ${SMALL} small-layer image in $WORK/layout ..." >&2
python3 - "$WORK/layout" "$BIG_MB" "$SMALL" <<'PY'
import hashlib, io, json, os, sys, tarfile
root, big_mb, small = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
blobs = os.path.join(root, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)
def put(path_or_bytes):
    h = hashlib.sha256()
    if isinstance(path_or_bytes, bytes):
        h.update(path_or_bytes); d = h.hexdigest()
        with open(os.path.join(blobs, d), "wb") as f: f.write(path_or_bytes)
        return d, len(path_or_bytes)
    with open(path_or_bytes, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""): h.update(chunk)
    d = h.hexdigest(); size = os.path.getsize(path_or_bytes)
    os.rename(path_or_bytes, os.path.join(blobs, d))
    return d, size
def layer_tar(name, size, out):
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t, open("/dev/urandom", "rb") as r:
        info = tarfile.TarInfo(name); info.size = size; info.mode = 0o644
        class Limited(io.RawIOBase):
            left = size
            def readable(self): return True
            def readinto(self, b):
                n = min(len(b), self.left)
                if n == 0: return 0
                data = r.read(n); b[:n] = data; self.left -= n; return n
        t.addfile(info, io.BufferedReader(Limited(), 1 << 20))
import gzip, shutil
def gzipped(tar_path):
    # gzip -1 so both tools pass the layer through as is (skopeo compresses plain tars itself).
    diff = hashlib.sha256()
    with open(tar_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""): diff.update(chunk)
    gz = tar_path + ".gz"
    with open(tar_path, "rb") as f, gzip.open(gz, "wb", compresslevel=1) as g:
        shutil.copyfileobj(f, g, 1 << 20)
    os.remove(tar_path)
    return diff.hexdigest(), put(gz)
layers, diff_ids = [], []
tmp = os.path.join(root, "tmp.tar")
layer_tar("big.bin", big_mb << 20, tmp)
d, blob = gzipped(tmp); diff_ids.append(d); layers.append(blob)
for i in range(small):
    layer_tar(f"small-{i}.bin", 4096 + 997 * i, tmp)
    d, blob = gzipped(tmp); diff_ids.append(d); layers.append(blob)
config = {"architecture": "amd64", "os": "linux", "config": {},
          "rootfs": {"type": "layers", "diff_ids": ["sha256:" + d for d in diff_ids]}}
cd, cs = put(json.dumps(config).encode())
lt = "application/vnd.oci.image.layer.v1.tar+gzip"
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cd, "size": cs},
            "layers": [{"mediaType": lt, "digest": "sha256:" + d, "size": s} for d, s in layers]}
md, ms = put(json.dumps(manifest).encode())
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + md, "size": ms,
                        "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}
open(os.path.join(root, "index.json"), "w").write(json.dumps(index))
open(os.path.join(root, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
PY

# measure NAME CMD...: runs CMD RUNS times, keeps the best wall time and the max RSS.
declare -A WALL RSS
measure() {
  local name=$1; shift
  local best="" rss=0
  for run in $(seq "$RUNS"); do
    [ -n "${SETUP:-}" ] && eval "$SETUP"
    /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" || {
      echo "$name failed:" >&2; cat "$WORK/err" >&2; exit 1; }
    read -r w m < "$WORK/time"
    if [ -z "$best" ] || awk "BEGIN{exit !($w < $best)}"; then best=$w; fi
    [ "$m" -gt "$rss" ] && rss=$m
  done
  WALL[$name]=$best; RSS[$name]=$rss
}

# Fresh HOME for skopeo so its blob-info cache cannot turn uploads into mounts; fresh repositories per run.
export HOME_SKOPEO="$WORK/skopeo-home"
SETUP='fresh_registry; rm -rf "$HOME_SKOPEO"; mkdir -p "$HOME_SKOPEO"' \
  measure "push skopeo" env HOME="$WORK/skopeo-home" skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:bench" "docker://$REG/bench/skopeo:1"
SETUP='fresh_registry' \
  measure "push kiln" "$KILN" copy -q "oci:$WORK/layout:bench" "$REG/bench/kiln:1"
# Pull the same repository with both.
fresh_registry
"$KILN" copy -q "oci:$WORK/layout:bench" "$REG/bench/src:1" >/dev/null
SETUP='rm -rf "$WORK/pulled-skopeo" "$HOME_SKOPEO"; mkdir -p "$HOME_SKOPEO"' \
  measure "pull skopeo" env HOME="$WORK/skopeo-home" skopeo copy -q --src-tls-verify=false "docker://$REG/bench/src:1" "oci:$WORK/pulled-skopeo:x"
SETUP='rm -rf "$WORK/kiln-root"' \
  measure "pull kiln" env KILN_ROOT="$WORK/kiln-root" "$KILN" pull -q "$REG/bench/src:1"

printf '\n%-6s %-8s %10s %14s %18s\n' "op" "tool" "wall (s)" "peak RSS (MB)" "kiln/skopeo wall"
for op in push pull; do
  for tool in skopeo kiln; do
    k="$op $tool"
    ratio=""
    [ "$tool" = kiln ] && ratio=$(awk "BEGIN{printf \"%.2f\", ${WALL[$k]} / ${WALL[$op skopeo]}}")
    printf '%-6s %-8s %10s %14s %18s\n' "$op" "$tool" "${WALL[$k]}" "$(( ${RSS[$k]} / 1024 ))" "$ratio"
  done
done
echo "(image: 1 x ${BIG_MB} MiB + ${SMALL} small gzip layers; registry $REG; best of $RUNS)"
