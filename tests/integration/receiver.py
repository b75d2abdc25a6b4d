"""A real HTTPS webhook receiver for tests, with its own test CA (made with the openssl
command line at start). Each path prefix answers in one scripted way; every request that
arrives is recorded (time, path, headers, body) for the test to inspect.

  /ok            200              /fail        500          /gone      410
  /throttle/N    429 + Retry-After: N                       /redirect  301 to /ok
  /slow/S        answers 200 after S seconds                /hang      never answers
  /reset         closes the connection with a TCP reset     /flaky/P   500 with probability P
  /fail-first/N  500 for the first N requests of each webhook-id, then 200
  /answer/NAME   200 with the scripted body ANSWERS[NAME] (bytes that are not valid UTF-8)
  /switch/NAME   500 while NAME is in the receiver's `down` set, else 200
"""
import base64
import hashlib
import hmac
import json
import os
import random
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Answers that are not clean UTF-8: invalid bytes, and a 3-byte character ("\u20ac")
# that starts at byte 254, so the first 255 bytes (what labhook keeps) cut it.
ANSWERS = {
    "invalid": b"ok \xff\xc0 end",
    "straddle": b"a" * 254 + "\u20ac".encode() + b" tail",
}


def verify(secret, headers, body):
    """What a receiver does: recompute v1 over id.timestamp.body with the decoded secret."""
    key = base64.b64decode(secret[len("whsec_"):])
    signed = "%s.%s.%s" % (headers["webhook-id"], headers["webhook-timestamp"], body)
    want = base64.b64encode(hmac.new(key, signed.encode(), hashlib.sha256).digest()).decode()
    return any(s == "v1," + want for s in headers["webhook-signature"].split(" "))


def make_ca(d):
    def run(*args):
        subprocess.run(args, check=True, capture_output=True, cwd=d)
    run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key")
    run("openssl", "req", "-x509", "-new", "-key", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=labhook test CA")
    run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "srv.key")
    run("openssl", "req", "-new", "-key", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,DNS:hooks.localhost,IP:127.0.0.1,IP:::1\n")
    run("openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf")
    return os.path.join(d, "ca.pem"), os.path.join(d, "srv.pem"), os.path.join(d, "srv.key")


class Receiver:
    def __init__(self, port=0, certs_of=None):
        """A receiver on port (0: any free one), with its own test CA, or with the CA and
        certificate of the receiver certs_of (so servers trusting one trust both)."""
        self.own_dir = certs_of is None
        if certs_of:
            self.dir, self.ca = certs_of.dir, certs_of.ca
            cert, key = os.path.join(self.dir, "srv.pem"), os.path.join(self.dir, "srv.key")
        else:
            self.dir = tempfile.mkdtemp(prefix="labhook-recv-")
            self.ca, cert, key = make_ca(self.dir)
        self.requests = []
        self.lock = threading.Lock()
        self.counts = {}
        self.stop_event = threading.Event()
        self.down = set()
        recv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                rec = {"t": time.time(), "path": self.path, "status": None,
                       "headers": {k.lower(): v for k, v in self.headers.items()},
                       "body": body.decode("utf-8", "replace")}
                with recv.lock:
                    recv.requests.append(rec)
                    key = (self.path, rec["headers"].get("webhook-id"))
                    recv.counts[key] = recv.counts.get(key, 0) + 1
                    seen = recv.counts[key]
                parts = self.path.strip("/").split("/")
                kind = parts[0]
                arg = parts[1] if len(parts) > 1 else None
                if kind == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if kind == "hang":
                    recv.stop_event.wait(120)
                    self.close_connection = True
                    return
                if kind == "slow":
                    time.sleep(float(arg or 3))
                status, extra = 200, {}
                if kind == "fail":
                    status = 500
                elif kind == "gone":
                    status = 410
                elif kind == "throttle":
                    status, extra = 429, {"Retry-After": arg or "2"}
                elif kind == "redirect":
                    status, extra = 301, {"Location": "https://127.0.0.1:%d/ok" % recv.port}
                elif kind == "flaky" and random.random() < float(arg or 0.5):
                    status = 500
                elif kind == "fail-first" and seen <= int(arg or 1):
                    status = 500
                elif kind == "switch" and arg in recv.down:
                    status = 500
                out = b'{"received": true}' if status < 300 else b'{"error": "scripted"}'
                if kind == "answer":
                    out = ANSWERS[arg]
                rec["status"] = status
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # clients that time out and hang up are part of the script

        self.httpd = Quiet(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return "https://127.0.0.1:%d%s" % (self.port, path)

    def received(self, prefix=None):
        with self.lock:
            return [r for r in self.requests if prefix is None or r["path"].startswith(prefix)]

    def wait_for(self, pred, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return True
            time.sleep(0.05)
        return pred()

    def close(self):
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
