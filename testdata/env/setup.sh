#!/usr/bin/env bash
# setup.sh - the test environment of kiln, made from real parts.
#
#   setup.sh start    install the Debian packages, start the registries and the
#                     token server on loopback, make and push the base images,
#                     write $KILN_TESTENV/env (KEY=VALUE lines the tests read)
#   setup.sh stop     stop only the processes this script started (by PID)
#   setup.sh status   show what is running
#
# Idempotent: a second `start` reuses what is already up. Run as root on
# Debian 12; no network beyond the Debian package mirror.
#
# Registries (CNCF distribution, Debian package docker-registry):
#   127.0.0.1:5000  plain HTTP, no auth, delete enabled
#   127.0.0.1:5001  HTTPS (our own CA) + htpasswd (bcrypt) basic auth
#   127.0.0.1:5002  plain HTTP + bearer-token auth; token server on 127.0.0.1:5003
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KILN_TESTENV=${KILN_TESTENV:-/tmp/kiln-testenv}
ENVFILE=$KILN_TESTENV/env
HOST=127.0.0.1
PORT_PLAIN=5000
PORT_TLS=5001
PORT_TOKEN=5002
PORT_TOKEN_SERVER=5003
TLS_USER=kiln
TLS_PASS=kiln-basic-secret
TOKEN_USER=kiln
TOKEN_PASS=kiln-token-secret
TOKEN_RO_USER=reader
TOKEN_RO_PASS=reader-token-secret
TOKEN_SERVICE=kiln-test-registry
TOKEN_ISSUER=kiln-test-token-issuer
SOURCE_DATE_EPOCH=0
PACKAGES=(docker-registry crun runc busybox-static skopeo umoci qemu-user-static git jq curl
          openssl apache2-utils file iproute2 ca-certificates python3 openssh-client
          libseccomp-dev pkg-config slirp4netns uidmap gcc libc6-dev rpm strace)

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "packages missing (${missing[*]}) and not root: install them or run as root"
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# The unprivileged user of the rootless tests: subordinate id ranges for its
# user namespace (newuidmap/newgidmap from uidmap), and /dev/net/tun open to
# all (udev's usual 0666; slirp4netns opens it inside that namespace).
ROOTLESS_USER=kiln-rootless
ROOTLESS_RANGE=200000-265535
rootless_user() {
  [ "$(id -u)" = 0 ] || { log "not root: skipping the rootless test user"; return 0; }
  id -u "$ROOTLESS_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$ROOTLESS_USER"
  grep -q "^$ROOTLESS_USER:" /etc/subuid 2>/dev/null || usermod --add-subuids "$ROOTLESS_RANGE" "$ROOTLESS_USER"
  grep -q "^$ROOTLESS_USER:" /etc/subgid 2>/dev/null || usermod --add-subgids "$ROOTLESS_RANGE" "$ROOTLESS_USER"
  [ -c /dev/net/tun ] && chmod 0666 /dev/net/tun
  return 0
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_http() { # url [extra curl args...]
  local url=$1 i; shift
  for i in $(seq 1 100); do
    curl -s -o /dev/null "$@" "$url" && return 0
    sleep 0.1
  done
  return 1
}

stop_pid() { # pidfile name
  local f=$1 name=$2 pid i
  running "$f" || { rm -f "$f"; return 0; }
  pid=$(cat "$f")
  kill "$pid"
  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$f"
  log "$name stopped (pid $pid)"
}

make_certs() {
  local d=$KILN_TESTENV/certs
  [ -f "$d/server.crt" ] && [ -f "$d/token.crt" ] && return 0
  mkdir -p "$d"
  log "making the test CA, the registry certificate and the token-signing key"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kiln test CA" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > "$d/server.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 3650 -extfile "$d/server.ext" -out "$d/server.crt" 2>/dev/null
  # The registry trusts tokens whose x5c chain ends in this self-signed cert.
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kiln test token issuer" \
    -keyout "$d/token.key" -out "$d/token.crt" 2>/dev/null
}

write_registry_config() { # name port auth-kind
  local name=$1 port=$2 kind=$3 dir=$KILN_TESTENV/registry/$1
  mkdir -p "$dir/data"
  {
    echo "version: 0.1"
    echo "log: {level: warn, fields: {service: kiln-test-$name}}"
    echo "storage:"
    echo "  filesystem: {rootdirectory: $dir/data}"
    echo "  delete: {enabled: true}"
    echo "  cache: {blobdescriptor: inmemory}"
    echo "http:"
    echo "  addr: $HOST:$port"
    echo "  secret: kiln-test-$name-secret"
    if [ "$kind" = basic ]; then
      echo "  tls: {certificate: $KILN_TESTENV/certs/server.crt, key: $KILN_TESTENV/certs/server.key}"
      echo "auth:"
      echo "  htpasswd: {realm: kiln-test-basic, path: $dir/htpasswd}"
    elif [ "$kind" = token ]; then
      echo "auth:"
      echo "  token:"
      echo "    realm: http://$HOST:$PORT_TOKEN_SERVER/token"
      echo "    service: $TOKEN_SERVICE"
      echo "    issuer: $TOKEN_ISSUER"
      echo "    rootcertbundle: $KILN_TESTENV/certs/token.crt"
    fi
  } > "$dir/config.yml"
  if [ "$kind" = basic ]; then htpasswd -Bbn "$TLS_USER" "$TLS_PASS" > "$dir/htpasswd"; fi
}

start_registry() { # name port auth-kind
  local name=$1 port=$2 kind=$3 pidf=$KILN_TESTENV/registry-$1.pid scheme=http
  [ "$kind" = basic ] && scheme=https
  if running "$pidf"; then return 0; fi
  if curl -s -o /dev/null -k "$scheme://$HOST:$port/v2/"; then
    die "port $port already answers but not from a registry this script started; stop it first"
  fi
  write_registry_config "$name" "$port" "$kind"
  setsid docker-registry serve "$KILN_TESTENV/registry/$name/config.yml" \
    > "$KILN_TESTENV/registry-$name.log" 2>&1 < /dev/null &
  echo $! > "$pidf"
  wait_http "$scheme://$HOST:$port/v2/" --cacert "$KILN_TESTENV/certs/ca.crt" \
    || { tail -20 "$KILN_TESTENV/registry-$name.log" >&2; die "registry $name did not come up"; }
  log "registry $name on $scheme://$HOST:$port (pid $(cat "$pidf"))"
}

start_token_server() {
  local pidf=$KILN_TESTENV/token-server.pid
  if running "$pidf"; then return 0; fi
  cat > "$KILN_TESTENV/token-users.json" <<JSON
{"$TOKEN_USER": {"password": "$TOKEN_PASS", "actions": ["pull", "push", "delete"]},
 "$TOKEN_RO_USER": {"password": "$TOKEN_RO_PASS", "actions": ["pull"]}}
JSON
  setsid python3 "$HERE/token_server.py" --listen "$HOST:$PORT_TOKEN_SERVER" \
    --key "$KILN_TESTENV/certs/token.key" --cert "$KILN_TESTENV/certs/token.crt" \
    --issuer "$TOKEN_ISSUER" --service "$TOKEN_SERVICE" --users "$KILN_TESTENV/token-users.json" \
    > "$KILN_TESTENV/token-server.log" 2>&1 < /dev/null &
  echo $! > "$pidf"
  wait_http "http://$HOST:$PORT_TOKEN_SERVER/healthz" \
    || { tail -20 "$KILN_TESTENV/token-server.log" >&2; die "token server did not come up"; }
  log "token server on http://$HOST:$PORT_TOKEN_SERVER (pid $(cat "$pidf"))"
}

# A foreign-arch .deb fetched with a private apt state, so the host's apt
# configuration is left as it was.
fetch_arm64_busybox() {
  local apt=$KILN_TESTENV/apt deb
  deb=$(ls "$apt"/debs/busybox-static_*_arm64.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
    local opts=(-q -o APT::Architecture=amd64 -o APT::Architectures::=amd64 -o APT::Architectures::=arm64
                -o Dir::State::Lists="$apt/lists" -o Dir::Cache="$apt/cache")
    apt-get "${opts[@]}" update >/dev/null 2>&1 || die "apt-get update for arm64 lists failed"
    (cd "$apt/debs" && apt-get "${opts[@]}" download busybox-static:arm64 >/dev/null 2>&1) \
      || die "could not download busybox-static:arm64"
    deb=$(ls "$apt"/debs/busybox-static_*_arm64.deb | head -1)
  fi
  echo "$deb"
}

make_rootfs() { # dir busybox-binary
  local rf=$1 bin=$2
  rm -rf "$rf"
  mkdir -p "$rf"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,home/app,proc,sys,dev,var}
  cp /bin/busybox "$rf/bin/busybox"
  # The host (amd64) busybox makes the applet links; the same version's link set fits arm64.
  chroot "$rf" /bin/busybox --install -s
  cp "$bin" "$rf/bin/busybox"
  printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$rf/etc/passwd"
  printf 'root:x:0:\napp:x:1000:\nnogroup:x:65534:\n' > "$rf/etc/group"
  chmod 1777 "$rf/tmp"; chmod 700 "$rf/root"; chown 1000:1000 "$rf/home/app"
  find "$rf" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
}

oci_image() { # layout tag rootfs arch
  local layout=$1 tag=$2 rf=$3 arch=$4 created bundle
  created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
  [ -d "$layout" ] || umoci init --layout "$layout"
  umoci new --image "$layout:$tag"
  bundle=$KILN_TESTENV/bundle-$arch
  rm -rf "$bundle"
  umoci unpack --image "$layout:$tag" "$bundle" >/dev/null
  cp -a "$rf/." "$bundle/rootfs/"
  umoci repack --image "$layout:$tag" --history.created "$created" \
    --history.created_by "testdata/env/setup.sh: busybox $arch rootfs" "$bundle"
  umoci config --no-history --image "$layout:$tag" --os linux --architecture "$arch" \
    --created "$created" --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.cmd sh
  rm -rf "$bundle"
}

# An OCI index over the per-arch manifests, tagged `latest` in the layout.
oci_index() { # layout
  local layout=$1 manifests idx dig size
  manifests=$(jq -c '[.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] | test("^(amd64|arm64)$"))
                     | {mediaType, digest, size, platform: {architecture: .annotations["org.opencontainers.image.ref.name"], os: "linux"}}]' \
              "$layout/index.json")
  idx=$(jq -cn --argjson m "$manifests" '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: $m}')
  dig=$(printf '%s' "$idx" | sha256sum | cut -d' ' -f1)
  size=$(printf '%s' "$idx" | wc -c)
  printf '%s' "$idx" > "$layout/blobs/sha256/$dig"
  jq --arg d "sha256:$dig" --argjson s "$size" '.manifests += [{mediaType: "application/vnd.oci.image.index.v1+json",
      digest: $d, size: $s, annotations: {"org.opencontainers.image.ref.name": "latest"}}]' \
      "$layout/index.json" > "$layout/index.json.new"
  mv "$layout/index.json.new" "$layout/index.json"
}

make_base_images() {
  local layout=$KILN_TESTENV/oci/busybox rootfs=$KILN_TESTENV/rootfs
  if [ ! -f "$layout/index.json" ] || ! jq -e '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="latest")' "$layout/index.json" >/dev/null; then
    local deb x
    deb=$(fetch_arm64_busybox)
    x=$KILN_TESTENV/busybox-arm64-deb
    rm -rf "$x" "$layout"; dpkg -x "$deb" "$x"
    make_rootfs "$rootfs/busybox-amd64" /bin/busybox
    make_rootfs "$rootfs/busybox-arm64" "$x/bin/busybox"
    mkdir -p "$KILN_TESTENV/oci"
    oci_image "$layout" amd64 "$rootfs/busybox-amd64" amd64
    oci_image "$layout" arm64 "$rootfs/busybox-arm64" arm64
    oci_index "$layout"
    umoci gc --layout "$layout"
    log "busybox OCI layout made with umoci: $layout"
  fi
  push_images "$HOST:$PORT_PLAIN" --dest-tls-verify=false
  push_images "$HOST:$PORT_TLS" --dest-cert-dir "$KILN_TESTENV/certs/client" --dest-creds "$TLS_USER:$TLS_PASS"
  push_images "$HOST:$PORT_TOKEN" --dest-tls-verify=false --dest-creds "$TOKEN_USER:$TOKEN_PASS"
}

push_images() { # registry skopeo-dest-args...
  local reg=$1; shift
  local layout=$KILN_TESTENV/oci/busybox want
  want=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="latest") | .digest' "$layout/index.json")
  if [ -f "$KILN_TESTENV/pushed-$reg" ] && [ "$(cat "$KILN_TESTENV/pushed-$reg")" = "$want" ]; then return 0; fi
  skopeo copy -q --all "$@" "oci:$layout:latest" "docker://$reg/library/busybox:latest"
  skopeo copy -q "$@" "oci:$layout:amd64" "docker://$reg/library/busybox:latest-amd64"
  skopeo copy -q "$@" "oci:$layout:arm64" "docker://$reg/library/busybox:latest-arm64"
  echo "$want" > "$KILN_TESTENV/pushed-$reg"
  log "pushed busybox:latest (index $want), :latest-amd64, :latest-arm64 to $reg"
}

# A base image of real Debian packages for the SBOM tests, made as the busybox
# one is: the .debs fetched with apt-get download, unpacked with dpkg-deb over a
# busybox rootfs, and a dpkg status written from their own control files.
SBOM_DEBS=(base-files netbase media-types)
SBOM_DIR=$KILN_TESTENV/debian-pkgs
make_debian_image() {
  local layout=$KILN_TESTENV/oci/debian-pkgs rf=$KILN_TESTENV/rootfs/debian-pkgs p deb created bundle
  mkdir -p "$SBOM_DIR/debs"
  for p in "${SBOM_DEBS[@]}"; do
    ls "$SBOM_DIR/debs/${p}_"*.deb >/dev/null 2>&1 && continue
    (cd "$SBOM_DIR/debs" && apt-get download -q "$p" >/dev/null 2>&1) \
      || { apt-get update -q >/dev/null 2>&1; (cd "$SBOM_DIR/debs" && apt-get download -q "$p" >/dev/null 2>&1); } \
      || die "could not download $p"
  done
  if [ ! -f "$layout/index.json" ] || ! jq -e '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="latest")' "$layout/index.json" >/dev/null; then
    make_rootfs "$rf" /bin/busybox
    mkdir -p "$rf/var/lib/dpkg"
    : > "$rf/var/lib/dpkg/status"
    for deb in "$SBOM_DIR"/debs/*.deb; do
      dpkg-deb -x "$deb" "$rf"
      # dpkg writes Status right after Package; a blank line ends each stanza.
      dpkg-deb -f "$deb" | sed '1a Status: install ok installed' >> "$rf/var/lib/dpkg/status"
      echo >> "$rf/var/lib/dpkg/status"
    done
    find "$rf" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
    rm -rf "$layout"; mkdir -p "$KILN_TESTENV/oci"
    umoci init --layout "$layout"
    umoci new --image "$layout:latest"
    bundle=$KILN_TESTENV/bundle-debian-pkgs
    rm -rf "$bundle"
    umoci unpack --image "$layout:latest" "$bundle" >/dev/null
    cp -a "$rf/." "$bundle/rootfs/"
    umoci repack --image "$layout:latest" --history.created "$created" \
      --history.created_by "testdata/env/setup.sh: ${SBOM_DEBS[*]} over busybox" "$bundle"
    umoci config --no-history --image "$layout:latest" --os linux --architecture amd64 \
      --created "$created" --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --config.cmd sh
    rm -rf "$bundle"
    umoci gc --layout "$layout"
    log "Debian-packages OCI layout made with umoci: $layout"
  fi
  local want reg=$HOST:$PORT_PLAIN
  want=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="latest") | .digest' "$layout/index.json")
  if [ -f "$KILN_TESTENV/pushed-debian-$reg" ] && [ "$(cat "$KILN_TESTENV/pushed-debian-$reg")" = "$want" ]; then return 0; fi
  skopeo copy -q --dest-tls-verify=false "oci:$layout:latest" "docker://$reg/library/debian-pkgs:latest"
  echo "$want" > "$KILN_TESTENV/pushed-debian-$reg"
  log "pushed debian-pkgs:latest ($want) to $reg"
}

# An rpm database (rpm >= 4.16, SQLite) for the SBOM tests: two tiny packages built
# with rpmbuild and registered with `rpm --justdb` under $RPM_ROOT/var/lib/rpm.
RPM_ROOT=$KILN_TESTENV/rpm-root
make_rpm_root() {
  [ -f "$RPM_ROOT/var/lib/rpm/rpmdb.sqlite" ] && return 0
  local top=$KILN_TESTENV/rpmbuild spec
  rm -rf "$top" "$RPM_ROOT"; mkdir -p "$top/SPECS" "$RPM_ROOT/var/lib/rpm"
  for spec in "kiln-rpm-one|1.2.3|4.fc40|2|MIT AND Apache-2.0|Kiln Test Vendor|noarch" \
              "kiln-rpm-two|0.9|1|0|GPL-2.0-or-later|Kiln Test Vendor|x86_64"; do
    IFS='|' read -r name version release epoch license vendor arch <<<"$spec"
    cat > "$top/SPECS/$name.spec" <<SPEC
Name: $name
Version: $version
Release: $release
Epoch: $epoch
Summary: kiln SBOM test package
License: $license
Vendor: $vendor
BuildArch: $arch
%description
kiln SBOM test package
%files
SPEC
    rpmbuild --define "_topdir $top" --define '_build_id_links none' --target "$arch" \
      -bb "$top/SPECS/$name.spec" >/dev/null 2>&1 || die "rpmbuild $name failed"
  done
  rpm --define '_db_backend sqlite' --dbpath "$RPM_ROOT/var/lib/rpm" --initdb
  rpm --define '_db_backend sqlite' --dbpath "$RPM_ROOT/var/lib/rpm" -i --justdb --nodeps \
    --ignorearch "$top"/RPMS/*/*.rpm >/dev/null 2>&1 || die "rpm --justdb failed"
  rm -rf "$top"
  log "rpm database made: $RPM_ROOT/var/lib/rpm"
}

write_env() {
  cat > "$ENVFILE.new" <<ENV
KILN_TESTENV=$KILN_TESTENV
KILN_TEST_REGISTRY=$HOST:$PORT_PLAIN
KILN_TEST_REGISTRY_TLS=$HOST:$PORT_TLS
KILN_TEST_TLS_USER=$TLS_USER
KILN_TEST_TLS_PASS=$TLS_PASS
KILN_TEST_CA=$KILN_TESTENV/certs/ca.crt
KILN_TEST_REGISTRY_TOKEN=$HOST:$PORT_TOKEN
KILN_TEST_TOKEN_REALM=http://$HOST:$PORT_TOKEN_SERVER/token
KILN_TEST_TOKEN_SERVICE=$TOKEN_SERVICE
KILN_TEST_TOKEN_USER=$TOKEN_USER
KILN_TEST_TOKEN_PASS=$TOKEN_PASS
KILN_TEST_TOKEN_RO_USER=$TOKEN_RO_USER
KILN_TEST_TOKEN_RO_PASS=$TOKEN_RO_PASS
KILN_TEST_OCI_LAYOUT=$KILN_TESTENV/oci/busybox
KILN_TEST_ROOTFS_AMD64=$KILN_TESTENV/rootfs/busybox-amd64
KILN_TEST_ROOTFS_ARM64=$KILN_TESTENV/rootfs/busybox-arm64
KILN_TEST_DEBIAN_IMAGE=$HOST:$PORT_PLAIN/library/debian-pkgs:latest
KILN_TEST_DEBIAN_DEBS=$SBOM_DIR/debs
KILN_TEST_RPM_ROOT=$RPM_ROOT
ENV
  mv "$ENVFILE.new" "$ENVFILE"
}

start() {
  install_packages
  rootless_user
  mkdir -p "$KILN_TESTENV"
  make_certs
  # skopeo wants the CA of a --dest-cert-dir as *.crt.
  mkdir -p "$KILN_TESTENV/certs/client" && cp "$KILN_TESTENV/certs/ca.crt" "$KILN_TESTENV/certs/client/ca.crt"
  start_registry plain "$PORT_PLAIN" none
  start_registry tls "$PORT_TLS" basic
  start_token_server
  start_registry token "$PORT_TOKEN" token
  make_base_images
  make_debian_image
  make_rpm_root
  write_env
  log "ready: $ENVFILE"
}

stop() {
  stop_pid "$KILN_TESTENV/registry-plain.pid" "registry plain"
  stop_pid "$KILN_TESTENV/registry-tls.pid" "registry tls"
  stop_pid "$KILN_TESTENV/registry-token.pid" "registry token"
  stop_pid "$KILN_TESTENV/token-server.pid" "token server"
  # Registry storage goes with its processes, so the next start pushes again.
  rm -f "$KILN_TESTENV"/pushed-* "$ENVFILE"
  rm -rf "$KILN_TESTENV/registry"
}

status() {
  local f
  for f in registry-plain registry-tls registry-token token-server; do
    if running "$KILN_TESTENV/$f.pid"; then echo "$f: running (pid $(cat "$KILN_TESTENV/$f.pid"))"
    else echo "$f: stopped"; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
