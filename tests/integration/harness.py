"""Test harness: starts the real labhook binary on a free port with a temporary data
directory and talks HTTP to it over real sockets. Standard library only.

Each test file is one process (ctest runs them separately); each test function gets what
it needs from a shared Server started once per file unless it asks for its own.

With LABHOOK_TEST_STORE=pg (and LABHOOK_TEST_PG, from tests/pg/with_pg.py) every Server
runs on PostgreSQL instead of SQLite: a database of its own per data directory (a restart
on the same directory finds its data again), dropped at cleanup. Server.db() reads the
store directly whichever it is.

With LABHOOK_TEST_LOG_FORMAT=json every Server runs with --log-format json (as does one
given that option): each line it writes to stderr must be one JSON log object (time, level, module, msg and string fields),
checked as it arrives; Server.stop fails naming the first lines that were not. log_lines
holds each line in the text form, so the tests' searches of the log work in both modes.

Every exchange made through Server.request (and openapi_record, for tests that make their own
well-formed requests) is checked against docs/openapi.json when the test process exits
(openapi_check.py): any mismatch, or a route the document lacks, fails the process.
"""
import atexit
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import openapi_check

BIN = os.environ.get("LABHOOK_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "labhook")
PG = os.environ.get("LABHOOK_TEST_PG") if os.environ.get("LABHOOK_TEST_STORE") == "pg" else None
LOG_JSON = os.environ.get("LABHOOK_TEST_LOG_FORMAT") == "json"


def pg_uri(db):
    """The URI of database db on the test server (LABHOOK_TEST_PG names database labhook)."""
    return PG.replace("@/labhook?", "@/%s?" % db, 1)


def psql(uri, sql, check=True):
    return subprocess.run(["psql", uri, "-v", "ON_ERROR_STOP=1", "-XAtq", "-F", "\x1f",
                           "-R", "\x1e", "-c", sql], capture_output=True, text=True,
                          check=check)


def new_db(name):
    """A new, empty database `name` on the test server (dropped first if it exists)."""
    psql(PG, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
    psql(PG, "CREATE DATABASE " + name)
    return name


def skip_on_pg(why):
    """For a test file about the SQLite backend alone: passes at once on PostgreSQL."""
    if PG:
        print("skipped on PostgreSQL: " + why)
        print("0 passed, 0 failed")
        sys.exit(0)


def private_hosts(lines):
    """A command prefix that runs a program with /etc/hosts holding lines, in a mount
    namespace of its own: a copy of /etc bind-mounted over /etc for that process alone, so
    no test edits, or needs, the machine's files (a fresh chroot has no /etc/hosts at all).
    Returns (prefix, directory to remove), or (None, None) where that needs a privilege the
    tests lack (not root, or no unshare)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return None, None
    d = tempfile.mkdtemp(prefix="labhook-etc-")
    etc = os.path.join(d, "etc")
    shutil.copytree("/etc", etc, symlinks=True, ignore_dangling_symlinks=True,
                    ignore=lambda src, names: [n for n in names if not os.access(
                        os.path.join(src, n), os.R_OK)])
    old = ""
    if os.path.exists("/etc/hosts"):
        with open("/etc/hosts") as f:
            old = f.read()
    with open(os.path.join(etc, "hosts"), "w") as f:
        f.write("127.0.0.1 localhost\n::1 localhost\n" + old + "\n".join(lines) + "\n")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           capture_output=True)
    if probe.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        return None, None
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc && exec "$@"', etc], d


class _Rows(list):
    def fetchone(self):
        return self[0] if self else None

    def fetchall(self):
        return list(self)


class PgReader:
    """What the tests need of sqlite3's connection (execute with ? parameters, fetchone,
    fetchall, iteration, a with block), on PostgreSQL through psql."""

    def __init__(self, uri):
        self.uri = uri

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self):
        pass

    @staticmethod
    def _literal(v):
        if isinstance(v, (int, float)):
            return str(v)
        return "'" + str(v).replace("'", "''") + "'"

    def execute(self, sql, params=()):
        parts = sql.split("?")
        assert len(parts) == len(params) + 1, "one ? per parameter"
        q = parts[0] + "".join(self._literal(v) + rest for v, rest in zip(params, parts[1:]))
        out = psql(self.uri, q).stdout
        rows = _Rows()
        for rec in out.split("\x1e"):
            rec = rec.rstrip("\n")
            if rec == "" and out.strip() == "":
                continue
            if rec == "":
                continue
            rows.append(tuple(int(v) if re.fullmatch(r"-?\d+", v) else v
                              for v in rec.split("\x1f")))
        return rows


def _text_value(v):
    """A JSON log field's value the way the text format writes it (log_escape, or "..."
    for a value that was written quoted with plain spaces)."""
    if " " in v and all(0x20 <= ord(c) < 0x7f and c not in '"\\' for c in v):
        return '"%s"' % v
    out = []
    for b in v.encode("utf-8", "surrogateescape"):
        c = chr(b)
        if c in '"\\':
            out.append("\\" + c)
        elif b < 0x21 or b >= 0x7f:
            out.append("\\x%02x" % b)
        else:
            out.append(c)
    return "".join(out)


def json_log_as_text(line):
    """The text form of one JSON log line; ValueError when it is not valid UTF-8 holding
    one JSON object with string time, level, module and msg and only string fields."""
    line.encode("utf-8")  # a byte that is not UTF-8 arrives as a surrogate: refused here
    obj = json.loads(line)
    if not isinstance(obj, dict) or not all(k in obj for k in ("time", "level", "module", "msg")):
        raise ValueError("not a log object with time, level, module and msg")
    if not all(isinstance(v, str) for v in obj.values()):
        raise ValueError("a value that is not a string")
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", obj["time"]):
        raise ValueError("time is not RFC 3339 UTC with milliseconds")
    words = [obj["time"], obj["level"], obj["module"]]
    words += ["%s=%s" % (k, _text_value(v)) for k, v in obj.items()
              if k not in ("time", "level", "module", "msg")]
    return " ".join(words + ([obj["msg"]] if obj["msg"] else []))


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
    def __init__(self, *args, data_dir=None, env=None, wrap=None):
        self.own_dir = data_dir is None
        self.wrap = list(wrap or [])  # a command the binary runs under (private_hosts)
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="labhook-test-")
        if self.own_dir:
            # Gone at the latest when the test process ends, for a test that never reaches
            # cleanup() (one whose server refuses to start, say): such directories piled
            # up in /tmp.
            atexit.register(shutil.rmtree, self.data_dir, True)
        self.args = list(args)
        self.pg_db = None
        if PG and "--store" not in self.args:
            self.pg_db = "lh_" + hashlib.sha1(os.path.realpath(self.data_dir).encode()).hexdigest()[:16]
        self.env = env
        self.proc = None
        self.port = None
        self.api_port = None  # the API listener's port (tests may point port elsewhere)
        self.log_lines = []
        self.raw_log = []  # the lines as written (log_lines has the text form of JSON lines)
        self.not_json = []  # with LABHOOK_TEST_LOG_FORMAT=json: (line, why) not yet reported
        self._stdout = []
        self._pumps = []

    def start(self, timeout=20):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("LABHOOK_") and k != "LABHOOK_BIN":
                del env[k]
        env.update(self.env or {})
        if self.pg_db:
            r = psql(PG, "CREATE DATABASE " + self.pg_db, check=False)
            assert r.returncode == 0 or "already exists" in r.stderr, r.stderr
        cmd = [BIN, "serve", "--data-dir", self.data_dir, "--listen", "127.0.0.1:0"] + self.args
        if LOG_JSON and not any(a.startswith("--log-format") for a in self.args):
            cmd += ["--log-format", "json"]
        json_mode = any(a == "--log-format=json" or (a == "json" and b == "--log-format")
                        for b, a in zip(cmd, cmd[1:]))
        if self.pg_db and "--store" not in self.args:  # (tests may change args between starts)
            cmd += ["--store", pg_uri(self.pg_db)]
        self.port = None  # a restart that fails must not look ready on the old port
        self.proc = subprocess.Popen(self.wrap + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, text=True, errors="surrogateescape")
        ready = threading.Event()

        def pump_err():
            for line in self.proc.stderr:
                line = line.rstrip("\n")
                self.raw_log.append(line)
                if json_mode:
                    try:
                        line = json_log_as_text(line)
                    except ValueError as e:  # (UnicodeError and JSONDecodeError are ValueErrors)
                        self.not_json.append((line, str(e)))
                self.log_lines.append(line)
                m = re.search(r"listen=[^ ]*:(\d+) .*ready", line)
                if m:
                    self.port = self.api_port = int(m.group(1))
                    ready.set()
            ready.set()

        def pump_out():
            for line in self.proc.stdout:
                self._stdout.append(line)

        self._pumps = [threading.Thread(target=pump_err, daemon=True),
                       threading.Thread(target=pump_out, daemon=True)]
        for t in self._pumps:
            t.start()
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
        if self.proc and self.proc.poll() is not None:
            for t in self._pumps:  # every line it wrote is read once the pipe closes
                t.join(10)
            self.check_json_log()
        return self.proc.returncode if self.proc else None

    def check_json_log(self):
        """With LABHOOK_TEST_LOG_FORMAT=json: fails naming the lines that were not JSON log
        objects (each reported once)."""
        if self.not_json:
            bad, self.not_json = self.not_json, []
            raise AssertionError(
                "log-format json: %d line(s) of labhook's stderr are not JSON log objects:\n%s"
                % (len(bad), "\n".join("  %s\n    %r" % (why, line) for line, why in bad[:5])))

    def cleanup(self):
        self.stop()
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            if self.pg_db:
                psql(PG, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.pg_db, check=False)

    def db(self):
        """The store itself, read-only, for checks the API cannot make: sqlite3 on the
        database file, or the same interface on PostgreSQL."""
        if self.pg_db:
            return PgReader(pg_uri(self.pg_db))
        return sqlite3.connect("file:%s?mode=ro" % os.path.join(self.data_dir, "labhook.db"),
                               uri=True, timeout=10)

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
            headers, body = dict((k.lower(), v) for k, v in r.getheaders()), r.read()
            if self.port == self.api_port:  # (not a test's visit to the metrics-listen port)
                openapi_record(method, path, h, data, r.status, headers, body)
            return Response(r.status, headers, body.decode("utf-8", "replace"))
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


def openapi_record(method, target, req_headers, req_body, status, resp_headers, resp_body):
    """Records one exchange with labhook for the check against docs/openapi.json at exit
    (resp_headers lower-cased; bodies bytes or str)."""
    openapi_check.record(method, target, req_headers, req_body, status, resp_headers,
                         resp_body)


def _openapi_at_exit():
    """Fails the test process (exit 1) when its traffic disagrees with docs/openapi.json."""
    name = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    problems = openapi_check.report(name)
    if problems:
        print("FAIL openapi: %d exchange(s) disagree with docs/openapi.json:" % len(problems))
        for p in problems[:30]:
            print("  " + p)
        sys.stdout.flush()
        os._exit(1)


atexit.register(_openapi_at_exit)


def is_request_line(line):
    """One of the access log's lines (a request served; JSON lines are kept as text)."""
    return " http method=" in line


def report_of(lines):
    """A sanitizer's report from its first line (the stacks), else the last log lines: those
    other than the access log first (a test that polls would leave nothing else in view),
    then the last few of all."""
    for i, line in enumerate(lines):
        if ("ERROR: AddressSanitizer" in line or "runtime error:" in line
                or "WARNING: ThreadSanitizer" in line):
            return "\n".join(lines[i:i + 80])
    others = [line for line in lines if not is_request_line(line)]
    return ("\n".join(others[-40:]) + "\n---- the last lines, requests included ----\n" +
            "\n".join(lines[-10:]))


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
                print("---- the sanitizer's report, or the last log lines ----\n" +
                      report_of(srv.log_lines))
        if srv.proc.poll() is not None:
            failed += 1
            print("FAIL the server died during the tests (exit %s)" % srv.proc.returncode)
    finally:
        try:
            rc = srv.stop()
        except AssertionError as e:
            failed += 1
            print("FAIL %s" % e)
            rc = srv.proc.returncode
        if rc not in (0, None):
            failed += 1
            print("FAIL the server exited with %s on SIGTERM" % rc)
            print(report_of(srv.log_lines))
        srv.cleanup()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


def run_on_pg(tests, why):
    """Runs test functions that start their own servers on PostgreSQL; on SQLite prints why
    they are skipped and passes. Returns the exit code after one summary line."""
    if not PG:
        print("skipped on SQLite: " + why)
        print("0 passed, 0 failed")
        return 0
    return run_each(tests)


def run_each(tests):
    """Runs test functions that start their own servers; prints one summary line and
    returns the exit code."""
    passed = failed = 0
    for t in tests:
        try:
            t()
            passed += 1
            print("ok   %s" % t.__name__, flush=True)
        except Exception:  # noqa: BLE001
            failed += 1
            print("FAIL %s" % t.__name__, flush=True)
            traceback.print_exc()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


def expect_error(r, status, code=None, field=None):
    assert r.status == status, "want %d got %r" % (status, r)
    assert r.json and r.json.get("success") is False, r
    err = r.json["error"]
    assert err.get("message"), r
    if code:
        assert err.get("code") == code, "want code %s got %r" % (code, r)
    if field is not None:
        assert err.get("field") == field, "want field %s got %r" % (field, r)
