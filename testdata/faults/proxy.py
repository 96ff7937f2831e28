#!/usr/bin/env python3
"""A fault-injecting proxy in front of a plain-HTTP registry (the test env's :5000).

Usage: proxy.py [--upstream 127.0.0.1:5000] [--port 0]
Prints "listening 127.0.0.1:PORT" once ready. The fault is set through a control URL:

  POST /__fault?mode=MODE&times=N&match=WHAT   -> 200 "ok"
  GET  /__fault                                -> "MODE TIMES INJECTED"

MODE: pass, bitflip, truncate, wrongdigest, reset, 503, 429, slow, stall, html.
times: how many matching requests get the fault (-1: all of them; default 1).
match: blobs (GET of /blobs/), manifests (GET/HEAD of /manifests/), uploads (any
request under /blobs/uploads/ or a PUT of a manifest), all. Default blobs.
Everything else is forwarded unchanged (Host kept, so upload Locations point here).
"""
import argparse
import http.client
import http.server
import random
import socket
import struct
import sys
import threading
import time
import urllib.parse

STATE = {"mode": "pass", "times": 0, "match": "blobs", "injected": 0}
LOCK = threading.Lock()
UPSTREAM = "127.0.0.1:5000"
# A stall or a slow body never lasts longer than this (the proxy never hangs a test run).
STALL_SECONDS = 30


def matches(method, path, what):
    if what == "all":
        return True
    if what == "blobs":
        return method == "GET" and "/blobs/" in path and "/uploads/" not in path
    if what == "manifests":
        return method in ("GET", "HEAD") and "/manifests/" in path
    if what == "uploads":
        return "/blobs/uploads/" in path or (method == "PUT" and "/manifests/" in path)
    return False


def take_fault(method, path):
    """The mode to apply to this request, consuming one of its times."""
    with LOCK:
        if STATE["mode"] == "pass" or STATE["times"] == 0:
            return "pass"
        if not matches(method, path, STATE["match"]):
            return "pass"
        if STATE["times"] > 0:
            STATE["times"] -= 1
        STATE["injected"] += 1
        return STATE["mode"]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: tests read kiln's output, not ours
        pass

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length", "0") or "0")
        return self.rfile.read(n) if n else b""

    def control(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        if self.command == "POST":
            self.read_body()
            with LOCK:
                STATE["mode"] = q.get("mode", ["pass"])[0]
                STATE["times"] = int(q.get("times", ["1"])[0])
                STATE["match"] = q.get("match", ["blobs"])[0]
                STATE["injected"] = 0
            body = b"ok"
        else:
            with LOCK:
                body = ("%s %d %d" % (STATE["mode"], STATE["times"], STATE["injected"])).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def reset(self):
        # SO_LINGER 0: close() sends an RST instead of a FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def status_only(self, code, reason, headers=()):
        body = b'{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}'
        self.send_response(code, reason)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def forward(self):
        body = self.read_body()
        conn = http.client.HTTPConnection(UPSTREAM, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "connection")}
        if body or self.command in ("PUT", "POST", "PATCH"):
            headers["Content-Length"] = str(len(body))
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp, data

    def send_upstream(self, resp, data, fault):
        length = resp.getheader("Content-Length")
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            kl = k.lower()
            if kl in ("content-length", "transfer-encoding", "connection", "date", "server"):
                continue
            if fault == "wrongdigest" and kl == "docker-content-digest":
                v = "sha256:" + "0" * 64
            self.send_header(k, v)
        if self.command == "HEAD":
            self.send_header("Content-Length", length or "0")
            self.end_headers()
            return
        if fault == "bitflip" and data:
            i = random.randrange(len(data))
            data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
        if fault == "wrongdigest" and data and "/blobs/" in self.path:
            # Another blob's worth of bytes: same length, other content.
            data = bytes(random.getrandbits(8) for _ in range(min(len(data), 4096))) + data[4096:]
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if fault == "truncate":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if fault == "stall":
            self.wfile.write(data[: len(data) // 3])
            self.wfile.flush()
            time.sleep(STALL_SECONDS)
            self.close_connection = True
            return
        if fault == "slow":
            # About 20 writes spread over ~2 s: slower than usual, never idle for long.
            step = max(1, len(data) // 20)
            for off in range(0, len(data), step):
                self.wfile.write(data[off: off + step])
                self.wfile.flush()
                time.sleep(0.1)
            return
        self.wfile.write(data)

    def handle_any(self):
        if self.path.startswith("/__fault"):
            return self.control()
        fault = take_fault(self.command, self.path)
        if fault == "reset":
            self.read_body()
            return self.reset()
        if fault == "503":
            self.read_body()
            return self.status_only(503, "Service Unavailable")
        if fault == "429":
            self.read_body()
            return self.status_only(429, "Too Many Requests", [("Retry-After", "1")])
        if fault == "html":
            self.read_body()
            body = b"<html><body><h1>Welcome to the hotel wifi</h1></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        try:
            resp, data = self.forward()
            if fault == "stall" and not data:
                # Nothing to cut short: the response itself never comes.
                time.sleep(STALL_SECONDS)
                self.close_connection = True
                return
        except OSError as e:
            return self.status_only(502, "Bad Gateway: %s" % e)
        self.send_upstream(resp, data, fault)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_any


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client killed or timing out mid-response is what the tests do on purpose.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def main():
    global UPSTREAM
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", default="127.0.0.1:5000")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    UPSTREAM = args.upstream
    srv = Server(("127.0.0.1", args.port), Handler)
    print("listening 127.0.0.1:%d" % srv.server_address[1], flush=True)
    # Dies with the test that started it (stdin closes when the parent goes).
    threading.Thread(target=lambda: (sys.stdin.read(), srv.shutdown()), daemon=True).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
