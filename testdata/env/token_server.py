#!/usr/bin/env python3
"""A small token server for the bearer-auth test registry (distribution's `auth: token`).

It answers the realm URL the registry names in its Bearer challenge, checks the
user's password (HTTP Basic on GET, or OAuth2 password grant on POST), and hands
out an RS256-signed JWT whose x5c chain ends in the certificate the registry
trusts (its `rootcertbundle`). A user gets only the intersection of the actions
it asks for and the actions configured for it, so a pull-only user's push is
refused by the registry. Standard library only; signing is done by openssl.
"""
import argparse
import base64
import json
import os
import secrets
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

TOKEN_TTL = 300


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse_scope(scope: str):
    """`repository:library/busybox:pull,push` -> (type, name, [actions])."""
    first = scope.find(":")
    last = scope.rfind(":")
    if first < 0 or last <= first:
        return None
    return scope[:first], scope[first + 1:last], [a for a in scope[last + 1:].split(",") if a]


class Issuer:
    def __init__(self, key, cert, issuer, service, users):
        self.key = key
        self.issuer = issuer
        self.service = service
        self.users = users
        with open(cert, "rb") as f:
            pem = f.read().decode()
        body = "".join(l for l in pem.splitlines() if l and not l.startswith("-----"))
        self.x5c = [body]

    def check(self, user, password):
        entry = self.users.get(user)
        return entry is not None and secrets.compare_digest(entry["password"], password)

    def grant(self, user, scopes):
        allowed = set(self.users.get(user, {}).get("actions", [])) if user else set()
        access = []
        for s in scopes:
            parsed = parse_scope(s)
            if parsed is None:
                continue
            typ, name, actions = parsed
            if typ == "repository":
                granted = [a for a in actions if a in allowed]
            elif typ == "registry" and name == "catalog" and "push" in allowed:
                granted = actions
            else:
                granted = []
            access.append({"type": typ, "name": name, "actions": granted})
        return access

    def sign(self, user, access):
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": self.x5c}
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + TOKEN_TTL,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        signing_input = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())).encode()
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=signing_input,
                             capture_output=True, check=True).stdout
        return signing_input.decode() + "." + b64url(sig)


class Handler(BaseHTTPRequestHandler):
    issuer: Issuer = None

    def log_message(self, fmt, *args):
        sys.stderr.write("token-server: " + (fmt % args) + "\n")

    def reply(self, status, body, extra_headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def issue(self, user, service, scopes):
        if service and service != self.issuer.service:
            return self.reply(400, {"errors": [{"code": "DENIED", "message": "unknown service " + service}]})
        token = self.issuer.sign(user, self.issuer.grant(user, scopes))
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.reply(200, {"token": token, "access_token": token, "expires_in": TOKEN_TTL, "issued_at": issued})

    def unauthorized(self):
        self.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid username or password"}]},
                   [("WWW-Authenticate", 'Basic realm="kiln-test-token"')])

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/healthz":
            return self.reply(200, {"ok": True})
        if url.path != "/token":
            return self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
        q = parse_qs(url.query)
        user = None
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:
                return self.unauthorized()
            if not self.issuer.check(user, password):
                return self.unauthorized()
        self.issue(user, q.get("service", [""])[0], q.get("scope", []))

    def do_POST(self):
        url = urlparse(self.path)
        if url.path != "/token":
            return self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
        length = int(self.headers.get("Content-Length", "0") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        if form.get("grant_type", [""])[0] != "password":
            return self.reply(400, {"error": "unsupported_grant_type"})
        user = form.get("username", [""])[0]
        if not self.issuer.check(user, form.get("password", [""])[0]):
            return self.unauthorized()
        scopes = " ".join(form.get("scope", [])).split()
        self.issue(user, form.get("service", [""])[0], scopes)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen", required=True, help="host:port")
    p.add_argument("--key", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--users", required=True, help="JSON: {user: {password, actions}}")
    a = p.parse_args()
    with open(a.users) as f:
        users = json.load(f)
    Handler.issuer = Issuer(a.key, a.cert, a.issuer, a.service, users)
    host, _, port = a.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    print(f"token server on {a.listen} (pid {os.getpid()})", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
