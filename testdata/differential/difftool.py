#!/usr/bin/env python3
"""difftool.py - the one implementation behind the differential suite.

Used by regen.sh (images built by docker 20.10's BuildKit) and by
builder/tests/differential.rs (images built by kiln), so both sides are
prepared and summarized by the same code:

  difftool.py prepare CASE_DIR DEST   copy CASE_DIR/context (if any) to DEST with
                                      normalized modes, then run CASE_DIR/prepare.sh
                                      inside DEST (for hard links, odd modes, tars
                                      that git cannot store)
  difftool.py summarize ARCHIVE       print the summary of the single image in a
                                      docker-archive tar (`docker save`, kiln's
                                      `-o type=docker`)

The summary is line-oriented text so that a failing case reads as a plain diff:
the config fields, the history (created_by, comment, empty_layer) and the
filesystem after applying every layer with OCI whiteouts. The busybox base's
own layer is subtracted: the tree lists only what differs from it (added or
changed entries, and base paths removed), which keeps the references short.
mtimes are left out (RUN-made files get the build's clock).
"""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile

# diff_id of the single layer of the test env's busybox (linux/amd64), which the
# cases pin by index digest in testdata/differential/BASE. Leading layers with
# these diff_ids are the base that the tree is shown relative to.
BASE_DIFF_IDS = {
    "sha256:4aa2502b11e2129b0f631d68779474f389d8bcedcefdb8178fb233006b38109a": "busybox",
}

CONFIG_FIELDS = [
    "User", "Env", "Entrypoint", "Cmd", "WorkingDir", "Labels", "ExposedPorts",
    "Volumes", "StopSignal", "Healthcheck", "Shell", "OnBuild", "ArgsEscaped",
]

MAX_LAYER_ENTRIES = 200_000  # bound on hostile/huge archives


def norm(path):
    """Layer-tar member name -> absolute path without trailing slash."""
    parts = []
    for c in path.split("/"):
        if c in ("", "."):
            continue
        if c == "..":
            if parts:
                parts.pop()
            continue
        parts.append(c)
    return "/" + "/".join(parts)


class Fs:
    """A merged root filesystem: path -> entry dict, plus hard-link identity."""

    def __init__(self):
        self.entries = {}
        self.next_inode = 1

    def copy(self):
        f = Fs()
        f.entries = {k: dict(v) for k, v in self.entries.items()}
        f.next_inode = self.next_inode
        return f

    def remove_tree(self, path):
        self.entries.pop(path, None)
        prefix = path.rstrip("/") + "/"
        for k in [k for k in self.entries if k.startswith(prefix)]:
            del self.entries[k]

    def remove_children(self, path):
        prefix = path.rstrip("/") + "/"
        for k in [k for k in self.entries if k.startswith(prefix)]:
            del self.entries[k]

    def ensure_parents(self, path):
        # Extraction makes missing parents as root-owned 0755 directories.
        parts = path.split("/")[1:-1]
        cur = ""
        for c in parts:
            cur += "/" + c
            e = self.entries.get(cur)
            if e is None or e["type"] != "d":
                if e is not None:
                    self.remove_tree(cur)
                self.entries[cur] = {"type": "d", "mode": 0o755, "uid": 0, "gid": 0}

    def apply_layer(self, tf):
        members = []
        for i, m in enumerate(tf):
            if i >= MAX_LAYER_ENTRIES:
                raise SystemExit("layer has too many entries")
            members.append(m)
        # Whiteouts hide what the lower layers had; apply them before the
        # layer's own entries (their order inside the tar is not fixed).
        for m in members:
            path = norm(m.name)
            base = os.path.basename(path)
            parent = os.path.dirname(path)
            if base == ".wh..wh..opq":
                self.remove_children(parent)
            elif base.startswith(".wh."):
                self.remove_tree(os.path.join(parent, base[len(".wh."):]))
        for m in members:
            path = norm(m.name)
            base = os.path.basename(path)
            if base.startswith(".wh.") or path == "/":
                continue
            self.add(tf, m, path)

    def add(self, tf, m, path):
        self.ensure_parents(path)
        old = self.entries.get(path)
        if old is not None and not (old["type"] == "d" and m.isdir()):
            self.remove_tree(path)
        e = {"mode": m.mode & 0o7777, "uid": m.uid, "gid": m.gid}
        xattrs = {k[len("SCHILY.xattr."):]: v for k, v in m.pax_headers.items()
                  if k.startswith("SCHILY.xattr.")}
        if xattrs:
            e["xattrs"] = xattrs
        if m.isdir():
            e["type"] = "d"
        elif m.issym():
            e["type"] = "l"
            e["target"] = m.linkname
        elif m.islnk():
            target = self.entries.get(norm(m.linkname))
            if target is None or target["type"] != "f":
                e.update({"type": "BROKEN-HARDLINK", "target": m.linkname})
            else:
                e = dict(target)  # a hard link shares the inode, metadata included
        elif m.isreg():
            data = tf.extractfile(m).read()
            e.update({"type": "f", "size": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()[:16],
                      "inode": self.next_inode})
            self.next_inode += 1
        elif m.ischr() or m.isblk():
            e.update({"type": "c" if m.ischr() else "b", "dev": f"{m.devmajor}:{m.devminor}"})
        elif m.isfifo():
            e["type"] = "p"
        else:
            e["type"] = "?"
        self.entries[path] = e


def line(path, e):
    s = f"{path} {e['type']} {e['mode']:04o} {e['uid']}:{e['gid']}"
    if e["type"] == "f":
        s += f" size={e['size']} sha256={e['sha256']}"
    if "target" in e:
        s += f" -> {e['target']}"
    if "dev" in e:
        s += f" dev={e['dev']}"
    for k in sorted(e.get("xattrs", {})):
        s += f" xattr:{k}={e['xattrs'][k]!r}"
    return s


def escape(s):
    """One line per history entry: heredoc bodies keep their newlines escaped."""
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def comparable(e):
    return {k: v for k, v in e.items() if k != "inode"}


def open_member(outer, name):
    f = outer.extractfile(name)
    if f is None:
        raise SystemExit(f"archive has no file {name}")
    return f


def summarize(archive):
    out = []
    with tarfile.open(archive) as outer:
        manifest = json.load(open_member(outer, "manifest.json"))
        if len(manifest) != 1:
            raise SystemExit(f"{archive}: expected one image, manifest.json has {len(manifest)}")
        img = json.load(open_member(outer, manifest[0]["Config"]))
        cfg = img.get("config") or {}
        out.append("== config")
        out.append(f"platform: {img.get('os')}/{img.get('architecture')}"
                   + (f"/{img['variant']}" if img.get("variant") else ""))
        for k in CONFIG_FIELDS:
            v = cfg.get(k)
            out.append(f"{k}: {json.dumps(v, sort_keys=True)}")
        out.append("== history (empty_layer | comment | created_by)")
        for h in img.get("history") or []:
            out.append(f"{'E' if h.get('empty_layer') else 'L'} | {h.get('comment', '')} | "
                       f"{escape(h.get('created_by', ''))}")
        diff_ids = (img.get("rootfs") or {}).get("diff_ids") or []
        layers = manifest[0]["Layers"]
        if len(layers) != len(diff_ids):
            raise SystemExit(f"{archive}: {len(layers)} layers but {len(diff_ids)} diff_ids")
        nbase = 0
        while nbase < len(diff_ids) and diff_ids[nbase] in BASE_DIFF_IDS:
            nbase += 1
        fs = Fs()
        base = Fs()
        for i, layer in enumerate(layers):
            if i == nbase:
                base = fs.copy()
            with tarfile.open(fileobj=open_member(outer, layer), mode="r:*") as tf:
                fs.apply_layer(tf)
        if nbase == len(layers):
            base = fs.copy()
    names = [BASE_DIFF_IDS[d] for d in diff_ids[:nbase]]
    out.append(f"== tree (layers: {len(layers)}; relative to base layers: {names or 'none'})")
    for path in sorted(fs.entries):
        e = fs.entries[path]
        b = base.entries.get(path)
        if b is None or comparable(b) != comparable(e):
            out.append(line(path, e))
    removed = sorted(p for p in base.entries if p not in fs.entries)
    if removed:
        out.append("== removed from base")
        out.extend(removed)
    groups = {}
    for path, e in fs.entries.items():
        if "inode" in e:
            groups.setdefault(e["inode"], []).append(path)
    links = sorted(sorted(g) for g in groups.values() if len(g) > 1)
    if links:
        out.append("== hard-link groups")
        out.extend(" = ".join(g) for g in links)
    return "\n".join(out) + "\n"


def prepare(case, dest):
    src = os.path.join(case, "context")
    if os.path.exists(dest):
        shutil.rmtree(dest)
    if os.path.isdir(src):
        shutil.copytree(src, dest, symlinks=True)
    else:
        os.makedirs(dest)
    # A checkout's modes follow the umask; the references assume 0644/0755.
    for root, dirs, files in os.walk(dest):
        for d in dirs:
            p = os.path.join(root, d)
            if not os.path.islink(p):
                os.chmod(p, 0o755)
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                exe = os.stat(p).st_mode & stat.S_IXUSR
                os.chmod(p, 0o755 if exe else 0o644)
    os.chmod(dest, 0o755)
    script = os.path.join(case, "prepare.sh")
    if os.path.exists(script):
        subprocess.run(["bash", "-euo", "pipefail", os.path.abspath(script)], cwd=dest, check=True)


def main(argv):
    if len(argv) == 4 and argv[1] == "prepare":
        prepare(argv[2], argv[3])
    elif len(argv) == 3 and argv[1] == "summarize":
        sys.stdout.write(summarize(argv[2]))
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
