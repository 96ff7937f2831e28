#!/usr/bin/env bash
# remote_cache.sh - two CI runners sharing a build cache through a registry: kiln's
# --cache-to/--cache-from beside BuildKit's inline cache (dockerd 20.10) and buildah's
# --cache-to/--cache-from, on the multistage and bigcontext contexts, in the same run.
#
#   bench/remote_cache.sh
#   env: RUNS=1 (repetitions; the table shows medians)   CONTEXTS="multistage bigcontext"
#        BUILDERS="kiln buildkit buildah"   KILN=path (default: cargo build --release, its kiln)
#        PORT=5102 (scratch registry)   BASE=127.0.0.1:5000/library/busybox:latest
#        PEERS_DIR=../shared/peers (its docker.sh)   BUILDAH_JOBS=1
#        WORK=scratch dir (default a new /var/tmp/kiln-bench-rcache.*; removed unless KEEP=1)
#        STEP_TIMEOUT=900 (seconds per command)
#
# Per context, builder and run, on an emptied scratch registry (127.0.0.1:$PORT):
#   runner A  fresh state (nothing local, not even the base image): build, export the cache
#             and push the image. kiln: --cache-to type=registry,mode=max --push (the export
#             column is kiln's "exporting cache" step); BuildKit: BUILDKIT_INLINE_CACHE=1
#             build, then docker push (the export); buildah: bud --layers --cache-to, then
#             buildah push.
#   runner B  another fresh state: build the same input with --cache-from into the local
#             image store (import + build). "run" = steps that ran (0: all from the cache);
#             "same" = B's image config equals A's.
#   re-export on runner B's state, nothing changed: a warm build with --cache-from and
#             --cache-to minus the same build without --cache-to (BuildKit: docker push of
#             the unchanged image), and the registry requests it made (blob HEADs, blob
#             uploads, manifest PUTs) from the scratch registry's log.
# Targets (issue 14): kiln runner B <= 0.5x BuildKit's; re-export <= 0.1 s + the manifest.
# Measured 2026-12-03 (2 vCPU, load 11-13 from parallel compiles; seconds, median of 3):
#   multistage  kiln A 2.61 (export 0.40)  B 0.80 (0.32x BuildKit's 2.48)  re-export 0.00 s, 0 uploads
#   bigcontext  kiln A 11.17 (export 1.20) B 7.20 (0.23x BuildKit's 31.34) re-export 0.00 s, 0 uploads
# Needs: bash testdata/env/setup.sh start (base image); docker-registry; for the peers
# $PEERS_DIR/install.sh once (dockerd is started here when it is not running, and then
# stopped at the end); buildah.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
REPO=$PWD
RUNS=${RUNS:-1}
CONTEXTS=${CONTEXTS:-multistage bigcontext}
BUILDERS=${BUILDERS:-kiln buildkit buildah}
PORT=${PORT:-5102}
REG=127.0.0.1:$PORT
BASE=${BASE:-127.0.0.1:5000/library/busybox:latest}
PEERS_DIR=${PEERS_DIR:-$( [ -d ../shared/peers ] && cd ../shared/peers && pwd || echo /work/shared/peers)}
BUILDAH_JOBS=${BUILDAH_JOBS:-1}
STEP_TIMEOUT=${STEP_TIMEOUT:-900}
WORK=${WORK:-$(mktemp -d /var/tmp/kiln-bench-rcache.XXXXXX)}
mkdir -p "$WORK/logs" "$WORK/tmp"
DOCKER=${DOCKER:-/usr/bin/docker}
export DOCKER_HOST=${DOCKER_HOST:-unix:///tmp/peers/run/docker.sock}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
command -v docker-registry >/dev/null || die "docker-registry is required (testdata/env/setup.sh installs it)"
curl -fs "http://${BASE%%/*}/v2/" >/dev/null || die "no registry for $BASE: bash testdata/env/setup.sh start"
if [ -z "${KILN:-}" ]; then   # this tree's kiln, rebuilt if the sources changed
  cargo build -q --release --locked -p kiln >&2 || die "cargo build --release -p kiln failed"
  KILN=$REPO/target/release/kiln
fi
[ -x "$KILN" ] || die "no kiln binary at $KILN"

# ---- scratch registry (distribution, info log: one line per request) ---------------
REGPID=""
cat > "$WORK/registry.yml" <<YML
version: 0.1
log: {level: info, fields: {service: bench-rcache}}
storage:
  filesystem: {rootdirectory: $WORK/registry}
  delete: {enabled: true}
http:
  addr: $REG
  secret: kiln-bench-rcache
YML
stop_registry() {
  [ -n "$REGPID" ] || return 0
  kill "$REGPID" 2>/dev/null; wait "$REGPID" 2>/dev/null; REGPID=""
}
# Restarts the registry on empty storage, so no builder finds another's blobs there.
fresh_registry() {
  stop_registry
  rm -rf "$WORK/registry"
  curl -s -o /dev/null "http://$REG/v2/" && die "something already listens on $REG; set PORT"
  docker-registry serve "$WORK/registry.yml" >> "$WORK/registry.log" 2>&1 &
  REGPID=$!
  for _ in $(seq 100); do curl -fs "http://$REG/v2/" >/dev/null && return 0; sleep 0.1; done
  die "scratch registry did not start (log $WORK/registry.log)"
}
reg_mark() { wc -l < "$WORK/registry.log"; }
# reg_requests MARK -> "blob HEADs/blob uploads/manifest PUTs" since MARK (access-log lines).
reg_requests() {
  tail -n "+$(($1 + 1))" "$WORK/registry.log" | awk '
    match($0, /"(HEAD|GET|POST|PUT|PATCH|DELETE) [^ ]+ HTTP\/[0-9.]+"/) {
      split(substr($0, RSTART + 1, RLENGTH - 2), r, " "); m = r[1]; u = r[2]
      if (m == "HEAD" && u ~ /\/blobs\//) head++
      else if (m == "POST" && u ~ /\/blobs\/uploads\// && u !~ /mount=/) up++
      else if (m == "PUT" && u ~ /\/manifests\//) man++
    }
    END { printf "%d/%d/%d", head, up, man }'
}

# ---- docker (BuildKit peer) --------------------------------------------------------
STARTED_DOCKER=""
docker_up() { "$DOCKER" version >/dev/null 2>&1; }
need_docker() {
  docker_up && return 0
  [ -x "$PEERS_DIR/docker.sh" ] || [ -f "$PEERS_DIR/docker.sh" ] || return 1
  [ -x /usr/sbin/dockerd ] || return 1
  log "starting dockerd ($PEERS_DIR/docker.sh start)"
  # docker.sh keeps its state under its own WORK (/tmp/peers), not this script's
  env -u WORK bash "$PEERS_DIR/docker.sh" start >/dev/null 2>&1 || return 1
  STARTED_DOCKER=1
  docker_up
}

cleanup() {
  stop_registry
  # buildah's overlay mounts of our own storage roots
  grep -o " $WORK/[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
  [ -n "$STARTED_DOCKER" ] && env -u WORK bash "$PEERS_DIR/docker.sh" stop >/dev/null 2>&1
  if [ -n "${KEEP:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- timing and log reading ----------------------------------------------------------
us_now() { local t=${EPOCHREALTIME}; echo "${t/./}"; }
SECS="" FAILED_WHY=""
# timed LOGNAME CMD... -> sets SECS (wall seconds), returns CMD's status; output in the log.
timed() {
  local lf=$WORK/logs/$1.log t0 t1 rc; shift
  sync   # untimed: earlier phases' dirty pages do not bill this one
  t0=$(us_now)
  timeout "$STEP_TIMEOUT" "$@" > "$lf" 2>&1; rc=$?
  t1=$(us_now)
  SECS=$(awk -v d=$((t1 - t0)) 'BEGIN { printf "%.2f", d / 1e6 }')
  if [ "$rc" -ne 0 ]; then
    log "FAILED ($rc): $* (log $lf)"; tail -5 "$lf" >&2
    # the table's reason: the log's last line that says what went wrong
    FAILED_WHY=$(grep -v '^\s*$' "$lf" | grep -iE 'error|fail|unsupported|not ' | tail -1 | cut -c1-90)
    [ "$rc" -eq 124 ] && FAILED_WHY="timed out after ${STEP_TIMEOUT}s"
  fi
  return "$rc"
}
# vertex_secs LOG REGEX -> seconds of the plain-progress steps whose name matches, or "-".
vertex_secs() {
  awk -v re="$2" '
    match($0, /^#[0-9]+ /) {
      id = substr($1, 2); rest = substr($0, RLENGTH + 1)
      if (!(id in name)) { name[id] = rest; if (rest ~ re) want[id] = 1 }
      if (want[id] && rest ~ /^DONE [0-9.]+s$/) { v = rest; gsub(/^DONE |s$/, "", v); sum += v; found = 1 }
    }
    END { if (found) printf "%.2f", sum; else print "-" }' "$1"
}
# steps_run_plain LOG -> Dockerfile steps (RUN/COPY/ADD) of a plain progress log not CACHED.
steps_run_plain() {
  awk '
    match($0, /^#[0-9]+ /) {
      id = substr($1, 2); rest = substr($0, RLENGTH + 1)
      if (!(id in name)) { name[id] = rest; if (rest ~ /^\[[^]]*\] (RUN|COPY|ADD) /) step[id] = 1 }
      if (rest == "CACHED") cached[id] = 1
    }
    END { for (id in step) if (!(id in cached)) n++; print n + 0 }' "$1"
}
add() { RES[$1]+="$2 "; }   # add KEY VALUE: one more run's value
declare -A RES

# ---- contexts -------------------------------------------------------------------------
prepare_context() { # name -> path
  local src=$REPO/bench/contexts/$1 ctx=$WORK/ctx/$1
  if [ ! -d "$ctx" ]; then
    if [ -x "$src/gen.sh" ]; then "$src/gen.sh" "$ctx" >&2 || die "gen.sh failed for $1"
    else mkdir -p "$ctx" && cp -a "$src/." "$ctx/" && rm -f "$ctx/bench.env"; fi
  fi
  echo "$ctx"
}

# ---- kiln -----------------------------------------------------------------------------
kiln_has_cache_flags() { local h; h=$("$KILN" build --help 2>/dev/null); grep -q -- '--cache-to' <<<"$h"; }
kiln_md() { jq -r "$2 // \"-\"" "$1" 2>/dev/null || echo -; } # metadata-file field
bench_kiln() { # name ctx rep
  local name=$1 ctx=$2 rep=$3 k=$1:kiln pre=$WORK/logs/$1-kiln-$3
  local cache=$REG/bench/cache:$name img=$REG/bench/img:$name ra=$WORK/kiln-A rb=$WORK/kiln-B
  local common=(--progress plain --network none --build-arg "BASE=$BASE")
  local from=(--cache-from "type=registry,ref=$cache") to=(--cache-to "type=registry,ref=$cache,mode=max")
  fresh_registry
  rm -rf "$ra" "$rb"
  timed "$name-kiln-$rep-A" "$KILN" --root "$ra" build "${common[@]}" --metadata-file "$pre-A.json" \
    "${to[@]}" -t "$img" --push "$ctx" || return 1
  add "$k:a" "$SECS"; add "$k:export" "$(vertex_secs "$pre-A.log" '^exporting cache')"
  timed "$name-kiln-$rep-B" "$KILN" --root "$rb" build "${common[@]}" --metadata-file "$pre-B.json" \
    "${from[@]}" -t "bench/img:$name" "$ctx" || return 1
  add "$k:b" "$SECS"; add "$k:run" "$(kiln_md "$pre-B.json" '.["kiln.vertices.executed"]')"
  local ca cb; ca=$(kiln_md "$pre-A.json" '.["containerimage.config.digest"]')
  cb=$(kiln_md "$pre-B.json" '.["containerimage.config.digest"]')
  add "$k:same" "$([ "$ca" = "$cb" ] && [ "$ca" != - ] && echo yes || echo no)"
  # re-export of the unchanged cache, on runner B's state
  timed "$name-kiln-$rep-C0" "$KILN" --root "$rb" build "${common[@]}" "${from[@]}" -t "bench/img:$name" "$ctx" || return 1
  local c0=$SECS mark; mark=$(reg_mark)
  timed "$name-kiln-$rep-C1" "$KILN" --root "$rb" build "${common[@]}" "${from[@]}" "${to[@]}" -t "bench/img:$name" "$ctx" || return 1
  sleep 0.2   # the registry's last log lines
  add "$k:reexport" "$(awk -v a="$SECS" -v b="$c0" 'BEGIN { printf "%.2f", a - b }')"
  add "$k:reexport_step" "$(vertex_secs "$pre-C1.log" '^exporting cache')"
  add "$k:reqs" "$(reg_requests "$mark")"
  rm -rf "$ra" "$rb"
}

# ---- BuildKit (dockerd 20.10), inline cache ---------------------------------------------
docker_reset() { # img: a fresh runner (no build cache, no image, no base image)
  "$DOCKER" image rm -f "$1" "$BASE" >/dev/null 2>&1
  "$DOCKER" builder prune -af >/dev/null 2>&1
}
bench_buildkit() { # name ctx rep
  local name=$1 ctx=$2 rep=$3 k=$1:buildkit pre=$WORK/logs/$1-buildkit-$3
  local img=$REG/bench/bk:$name
  local build=(env DOCKER_BUILDKIT=1 "$DOCKER" build --network none --progress plain --build-arg "BASE=$BASE"
               --build-arg BUILDKIT_INLINE_CACHE=1)
  fresh_registry
  docker_reset "$img"
  timed "$name-buildkit-$rep-A" "${build[@]}" -t "$img" "$ctx" || return 1
  local ta=$SECS ia; ia=$("$DOCKER" image inspect -f '{{.Id}}' "$img" 2>/dev/null)
  timed "$name-buildkit-$rep-Apush" "$DOCKER" push "$img" || return 1
  add "$k:a" "$(awk -v a="$ta" -v b="$SECS" 'BEGIN { printf "%.2f", a + b }')"; add "$k:export" "$SECS"
  docker_reset "$img"
  timed "$name-buildkit-$rep-B" "${build[@]}" --cache-from "$img" -t "$img" "$ctx" || return 1
  add "$k:b" "$SECS"; add "$k:run" "$(steps_run_plain "$pre-B.log")"
  add "$k:same" "$([ "$ia" = "$("$DOCKER" image inspect -f '{{.Id}}' "$img" 2>/dev/null)" ] && echo yes || echo no)"
  # re-export: BuildKit's inline cache leaves with the image, so it is the push of the unchanged image
  timed "$name-buildkit-$rep-C0" "${build[@]}" --cache-from "$img" -t "$img" "$ctx" || return 1
  local mark; mark=$(reg_mark)
  timed "$name-buildkit-$rep-C1" "$DOCKER" push "$img" || return 1
  sleep 0.2
  add "$k:reexport" "$SECS"; add "$k:reqs" "$(reg_requests "$mark")"
  docker_reset "$img"
}

# ---- buildah ------------------------------------------------------------------------------
buildah_at() { # runner-dir args...
  local d=$1; shift
  env TMPDIR="$d/tmp" buildah --root "$d/root" --runroot "$d/run" --storage-driver overlay "$@"
}
buildah_wipe() { # runner-dir
  [ -d "$1/root" ] || { rm -rf "$1"; return 0; }
  buildah_at "$1" rm -a >/dev/null 2>&1; buildah_at "$1" rmi -a -f >/dev/null 2>&1
  grep -o " $1/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
  rm -rf "$1"
}
# buildah_steps_run LOG -> RUN/COPY/ADD steps of a bud log that did not end in "Using cache".
buildah_steps_run() {
  awk 'function close_step() { if (open) n++; open = 0 }
       / STEP [0-9]+\/[0-9]+: / { close_step(); if ($0 ~ /STEP [0-9]+\/[0-9]+: (RUN|COPY|ADD) /) open = 1; next }
       /^--> Using cache / { open = 0 }
       / COMMIT / { close_step() }
       END { close_step(); print n + 0 }' "$1"
}
bench_buildah() { # name ctx rep
  local name=$1 ctx=$2 rep=$3 k=$1:buildah ra=$WORK/buildah-A rb=$WORK/buildah-B
  local cache=$REG/bench/bah-cache img=$REG/bench/bah:$name
  local bud=(bud --layers --isolation oci --runtime /usr/sbin/runc --network none --jobs "$BUILDAH_JOBS"
             --tls-verify=false --build-arg "BASE=$BASE")
  # timeout runs programs, not functions: the two runners' buildah command lines
  local ba=(env TMPDIR="$ra/tmp" buildah --root "$ra/root" --runroot "$ra/run" --storage-driver overlay)
  local bb=(env TMPDIR="$rb/tmp" buildah --root "$rb/root" --runroot "$rb/run" --storage-driver overlay)
  fresh_registry
  buildah_wipe "$ra"; buildah_wipe "$rb"; mkdir -p "$ra/tmp" "$rb/tmp"
  timed "$name-buildah-$rep-A" "${ba[@]}" "${bud[@]}" --cache-to "$cache" -t "$img" "$ctx" || return 1
  local ta=$SECS ia; ia=$(buildah_at "$ra" inspect --type image -f '{{.FromImageID}}' "$img" 2>/dev/null)
  timed "$name-buildah-$rep-Apush" "${ba[@]}" push --tls-verify=false "$img" "docker://$img" || return 1
  add "$k:a" "$(awk -v a="$ta" -v b="$SECS" 'BEGIN { printf "%.2f", a + b }')"; add "$k:export" -
  buildah_wipe "$ra"
  timed "$name-buildah-$rep-B" "${bb[@]}" "${bud[@]}" --cache-from "$cache" -t "$img" "$ctx" || return 1
  add "$k:b" "$SECS"
  add "$k:run" "$(buildah_steps_run "$WORK/logs/$name-buildah-$rep-B.log")"
  add "$k:same" "$([ -n "$ia" ] && [ "$ia" = "$(buildah_at "$rb" inspect --type image -f '{{.FromImageID}}' "$img" 2>/dev/null)" ] && echo yes || echo no)"
  timed "$name-buildah-$rep-C0" "${bb[@]}" "${bud[@]}" --cache-from "$cache" -t "$img" "$ctx" || return 1
  local c0=$SECS mark; mark=$(reg_mark)
  timed "$name-buildah-$rep-C1" "${bb[@]}" "${bud[@]}" --cache-from "$cache" --cache-to "$cache" -t "$img" "$ctx" || return 1
  sleep 0.2
  add "$k:reexport" "$(awk -v a="$SECS" -v b="$c0" 'BEGIN { printf "%.2f", a - b }')"
  add "$k:reqs" "$(reg_requests "$mark")"
  buildah_wipe "$rb"
}

# ---- run --------------------------------------------------------------------------------
declare -A NA   # builder -> why it has no numbers
for b in $BUILDERS; do
  case $b in
    kiln) kiln_has_cache_flags || NA[kiln]="n/a (kiln has no --cache-to yet)" ;;
    buildkit) need_docker || NA[buildkit]="n/a (no dockerd: $PEERS_DIR/install.sh, docker.sh start)" ;;
    buildah)
      if ! command -v buildah >/dev/null; then NA[buildah]="n/a (buildah not installed)"
      elif ! grep -q -- '--cache-to' <<<"$(buildah bud --help 2>/dev/null)"; then
        NA[buildah]="n/a (buildah $(buildah --version | awk '{print $3}') has no --cache-to)"; fi ;;
    *) die "unknown builder $b (kiln, buildkit, buildah)" ;;
  esac
done
for name in $CONTEXTS; do
  ctx=$(prepare_context "$name")
  log "context $name: $(find "$ctx" -type f | wc -l) files, $(du -sh "$ctx" | cut -f1)"
  for rep in $(seq "$RUNS"); do
    for b in $BUILDERS; do
      [ -z "${NA[$b]:-}" ] || continue
      log "$name $b run $rep"
      FAILED_WHY=""
      "bench_$b" "$name" "$ctx" "$rep" || RES[$name:$b:failed]=${FAILED_WHY:-see the logs}
    done
  done
done
stop_registry

# ---- table ------------------------------------------------------------------------------
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END {
  if (!NR) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
distinct() { tr ' ' '\n' | grep -v '^$' | sort -u | paste -sd, | sed 's/^$/-/'; } # run/same of every run
cell() { # median of a metric, or "-" when a run had none
  local v=${RES[$1]:-}
  if [ -z "$v" ] || [[ " $v" == *" - "* ]]; then echo -; else median <<<"$v"; fi
}
step_of() { local v; v=$(cell "$1:reexport_step"); [ "$v" = - ] || echo " ($v)"; } # kiln's own export step
printf '\n%-11s %-9s %14s %8s %5s %5s %8s %14s %11s\n' context builder "A (export)" "B" run same "B/BK" "re-export" "reqs H/U/M"
for name in $CONTEXTS; do
  bk=$(cell "$name:buildkit:b")
  for b in $BUILDERS; do
    if [ -n "${NA[$b]:-}" ]; then printf '%-11s %-9s %s\n' "$name" "$b" "${NA[$b]}"; continue; fi
    if [ -n "${RES[$name:$b:failed]:-}" ] && [ -z "${RES[$name:$b:b]:-}" ]; then
      printf '%-11s %-9s failed: %s\n' "$name" "$b" "${RES[$name:$b:failed]}"; continue; fi
    kb=$(cell "$name:$b:b")
    ratio=$(awk -v a="$kb" -v b="$bk" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }')
    printf '%-11s %-9s %14s %8s %5s %5s %8s %14s %11s\n' "$name" "$b" \
      "$(cell "$name:$b:a") ($(cell "$name:$b:export"))" "$kb" "$(distinct <<<"${RES[$name:$b:run]:-}")" \
      "$(distinct <<<"${RES[$name:$b:same]:-}")" "$ratio" "$(cell "$name:$b:reexport")$(step_of "$name:$b")" "$(distinct <<<"${RES[$name:$b:reqs]:-}")"
  done
done
for name in $CONTEXTS; do for b in $BUILDERS; do
  [ -n "${RES[$name:$b:failed]:-}" ] && [ -n "${RES[$name:$b:b]:-}" ] && echo "$name $b: a run failed: ${RES[$name:$b:failed]}"
done; done
[ -n "${KEEP:-}" ] && echo "logs: $WORK/logs"
echo "(seconds, median of $RUNS. A: fresh runner, build + cache export + image push (the export part"
echo " in parentheses). B: another fresh runner, import + build with --cache-from; run = steps B ran,"
echo " same = B's image is A's. re-export: extra time of exporting the unchanged cache again from B"
echo " (kiln's own export step in parentheses; BuildKit: the push of the image carrying the inline"
echo " cache); reqs: blob HEADs / blob uploads / manifest PUTs it made. BuildKit: dockerd 20.10.)"
for name in $CONTEXTS; do
  if [ -n "${NA[kiln]:-}" ] || [ -z "${RES[$name:kiln:b]:-}" ] || [ -z "${RES[$name:buildkit:b]:-}" ]; then continue; fi
  awk -v n="$name" -v k="$(cell "$name:kiln:b")" -v b="$(cell "$name:buildkit:b")" 'BEGIN {
    printf "target %s: kiln B %.2f s <= 0.5 x BuildKit %.2f s: %s\n", n, k, b, (k <= 0.5 * b ? "met" : "NOT met") }'
done
