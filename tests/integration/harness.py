"""Test harness: starts the real labhook binary on a free port with a temporary data
directory and talks HTTP to it over real sockets. Standard library only.

Each test file is one process (ctest runs them separately); each test function gets what
it needs from a shared Server started once per file unless it asks for its own.
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

BIN = os.environ.get("LABHOOK_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "labhook")


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.raw = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def code(self):
        return (self.json or {}).get("error", {}).get("code")

    @property
    def field(self):
        return (self.json or {}).get("error", {}).get("field")

    def __repr__(self):
        return "<%d %s>" % (self.status, self.raw[:300])


class Server:
    def __init__(self, *args, data_dir=None, env=None):
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="labhook-test-")
        self.args = list(args)
        self.env = env
        self.proc = None
        self.port = None
        self.log_lines = []
        self._stdout = []

    def start(self, timeout=20):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("LABHOOK_") and k != "LABHOOK_BIN":
                del env[k]
        env.update(self.env or {})
        cmd = [BIN, "serve", "--data-dir", self.data_dir, "--listen", "127.0.0.1:0"] + self.args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, text=True)
        ready = threading.Event()

        def pump_err():
            for line in self.proc.stderr:
                self.log_lines.append(line.rstrip("\n"))
                m = re.search(r"listen=[^ ]*:(\d+) .*ready", line)
                if m:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        def pump_out():
            for line in self.proc.stdout:
                self._stdout.append(line)

        threading.Thread(target=pump_err, daemon=True).start()
        threading.Thread(target=pump_out, daemon=True).start()
        if not ready.wait(timeout) or self.port is None:
            self.stop()
            raise RuntimeError("labhook did not become ready:\n" + "\n".join(self.log_lines))
        return self

    @property
    def stdout(self):
        return "".join(self._stdout)

    def admin_key(self):
        with open(os.path.join(self.data_dir, "admin.key")) as f:
            return f.read().strip()

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("labhook did not stop within %ss" % timeout)
        return self.proc.returncode if self.proc else None

    def cleanup(self):
        self.stop()
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # ---- HTTP ----
    def request(self, method, path, body=None, token=None, headers=None, raw=None,
                timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = {"Content-Type": "application/json"}
        if token:
            h["Authorization"] = "Bearer " + token
        h.update(headers or {})
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        if isinstance(data, str):
            data = data.encode()
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            return Response(r.status, dict((k.lower(), v) for k, v in r.getheaders()),
                            r.read().decode("utf-8", "replace"))
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def admin(self, method, path, body=None):
        r = self.request(method, path, body, token=self.admin_key())
        return r

    # ---- fixtures ----
    def new_account(self, mode="catch-all", name="Test Account"):
        r = self.admin("POST", "/admin/accounts", {"name": name, "mode": mode})
        assert r.status == 200, r
        return r.json["clientID"], r.json["clientSecret"]

    def new_lab(self, client_id, name="Lab"):
        r = self.admin("POST", "/admin/accounts/%s/labs" % client_id, {"name": name})
        assert r.status == 200, r
        return r.json["labID"]

    def new_party(self, client_id, kind="corporateUser", name="Party"):
        r = self.admin("POST", "/admin/accounts/%s/parties" % client_id,
                       {"kind": kind, "name": name})
        assert r.status == 200, r
        return r.json["partyID"]

    def token(self, client_id, secret):
        r = self.post("/client/auth/token", {"clientID": client_id, "clientSecret": secret})
        assert r.status == 200, r
        return r.json["authToken"]

    def client(self, mode="catch-all"):
        """A new account with one lab (and one party of each kind when party-scoped)."""
        cid, sec = self.new_account(mode)
        c = {"id": cid, "secret": sec, "lab": self.new_lab(cid)}
        if mode == "party-scoped":
            c["cu"] = self.new_party(cid, "corporateUser")
            c["org"] = self.new_party(cid, "organization")
        c["token"] = self.token(cid, sec)
        return c


def report_of(lines):
    """A sanitizer's report from its first line (the stacks), else the last log lines."""
    for i, line in enumerate(lines):
        if "ERROR: AddressSanitizer" in line or "runtime error:" in line:
            return "\n".join(lines[i:i + 80])
    return "\n".join(lines[-30:])


def run(tests, server_args=()):
    """Runs test functions taking a started Server; prints one summary line and exits."""
    srv = Server(*server_args).start()
    passed = failed = 0
    try:
        for t in tests:
            try:
                t(srv)
                passed += 1
                print("ok   %s" % t.__name__, flush=True)
            except Exception:
                failed += 1
                print("FAIL %s" % t.__name__, flush=True)
                traceback.print_exc()
                print("---- last log lines ----\n" + "\n".join(srv.log_lines[-15:]))
        if srv.proc.poll() is not None:
            failed += 1
            print("FAIL the server died during the tests (exit %s)" % srv.proc.returncode)
    finally:
        rc = srv.stop()
        if rc not in (0, None):
            failed += 1
            print("FAIL the server exited with %s on SIGTERM" % rc)
            print(report_of(srv.log_lines))
        srv.cleanup()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


def expect_error(r, status, code=None, field=None):
    assert r.status == status, "want %d got %r" % (status, r)
    assert r.json and r.json.get("success") is False, r
    err = r.json["error"]
    assert err.get("message"), r
    if code:
        assert err.get("code") == code, "want code %s got %r" % (code, r)
    if field is not None:
        assert err.get("field") == field, "want field %s got %r" % (field, r)
