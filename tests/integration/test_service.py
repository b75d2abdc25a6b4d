"""`labhook serve` itself (API.md 0, 8): health, routing errors, body caps, slow clients,
request logs, settings precedence and refusal, graceful stop, restart durability, demo."""
import json
import os
import re
import signal
import socket
import stat
import subprocess
import tempfile
import time

from harness import BIN, Server, expect_error, run


def raw_exchange(srv, data, read_timeout=10):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=read_timeout)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                m = re.search(rb"content-length: *(\d+)", head, re.I)
                if m and len(rest) >= int(m.group(1)):
                    break
        return out
    finally:
        s.close()


def test_healthz_and_request_log(srv):
    r = srv.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert r.status == 200 and r.json["success"] is True and r.json["status"] == "ok", r
    assert r.headers["x-request-id"] == "abc-123"
    assert r.headers["content-type"] == "application/json"
    time.sleep(0.2)
    lines = [l for l in srv.log_lines if "rid=abc-123" in l]
    assert len(lines) == 1, lines
    assert re.search(r" info http method=GET path=/healthz status=200 dur_ms=[0-9.]+ "
                     r"rid=abc-123", lines[0]), lines[0]
    # A hostile request id is replaced, not echoed into the log.
    r = srv.get("/healthz", headers={"X-Request-Id": "x y\"z"})
    assert re.fullmatch(r"[0-9a-f]{16}", r.headers["x-request-id"]), r.headers


def test_log_escapes_hostile_paths(srv):
    raw_exchange(srv, b"GET /nope%0a%22evil HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    time.sleep(0.2)
    assert not any(l.startswith("\"evil") for l in srv.log_lines)
    assert any('path=/nope\\x0a\\"evil' in l for l in srv.log_lines), srv.log_lines[-3:]


def test_unknown_path_and_method(srv):
    expect_error(srv.get("/nope"), 404, "not_found")
    expect_error(srv.request("DELETE", "/healthz"), 405, "method_not_allowed")
    expect_error(srv.request("PUT", "/client/events/subscribe", {}), 405)


def test_ambiguous_framing_and_head(srv):
    """Request-smuggling shapes are refused and the connection closed; HEAD works where GET
    does; a 405 names the allowed methods."""
    for req, status in [
        (b"POST /client/auth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"400"),
        (b"POST /client/auth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
         b"Content-Length: 41\r\n\r\n{}", b"400"),
        (b"POST /client/auth/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
         b"501"),
    ]:
        out = raw_exchange(srv, req + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 " + status), out[:100]
        assert b"connection: close" in out.lower() and out.count(b"HTTP/1.1 ") == 1, out
    out = raw_exchange(srv, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200"), out[:100]
    r = srv.request("DELETE", "/healthz")
    assert r.status == 405 and r.headers.get("allow") == "GET", r.headers


def test_body_over_cap_is_413_without_reading_it(srv):
    """max-body on a route with credentials (routes without them have a smaller cap: see
    test_hardening.py)."""
    auth = b"Authorization: Bearer " + srv.admin_key().encode() + b"\r\n"
    out = raw_exchange(srv, b"POST /admin/accounts HTTP/1.1\r\nHost: x\r\n" + auth +
                            b"Content-Type: application/json\r\n"
                            b"Content-Length: 1048577\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413"), out[:200]
    body = json.loads(out.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "payload_too_large"
    assert "1048576 bytes" in body["error"]["message"], body
    # Chunked, growing past the cap: 413 as soon as it crosses.
    chunk = b"a" * 65536
    req = b"POST /admin/accounts HTTP/1.1\r\nHost: x\r\n" + auth + \
        b"Transfer-Encoding: chunked\r\n\r\n"
    req += (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 17 + b"0\r\n\r\n"
    out = raw_exchange(srv, req)
    assert out.startswith(b"HTTP/1.1 413"), out[:200]
    # Exactly at the cap: read and judged on content (400, not 413).
    body = b'{"name": "' + b"x" * (1048576 - 32) + b'"}'
    body += b" " * (1048576 - len(body))
    r = srv.request("POST", "/admin/accounts", raw=body, token=srv.admin_key())
    expect_error(r, 400)
    # The server is fine afterwards.
    assert srv.get("/healthz").status == 200


def test_slow_and_idle_clients_do_not_block(_srv):
    srv = Server("--conn-timeout", "2s", "--http-threads", "2").start()
    try:
        idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(50)]
        slow = socket.create_connection(("127.0.0.1", srv.port))
        slow.sendall(b"POST /client/auth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                     b"\r\n{\"client")
        t0 = time.time()
        assert srv.get("/healthz", timeout=5).status == 200
        assert time.time() - t0 < 1.5
        slow.settimeout(10)
        t0 = time.time()
        data = slow.recv(100)  # the server gives up on it: EOF
        assert time.time() - t0 < 8, "slow client held for too long"
        assert data == b"" or data.startswith(b"HTTP/1.1 4"), data
        for s in idle + [slow]:
            s.close()
        assert srv.get("/healthz").status == 200
    finally:
        srv.cleanup()


def test_bad_settings_refuse_to_start(_srv):
    d = tempfile.mkdtemp()
    cases = [
        (["--listen", "nope"], {}, "listen"),
        (["--listen", "127.0.0.1:99999"], {}, "listen"),
        (["--http-threads", "0"], {}, "http-threads"),
        (["--retry-schedule", "5s,soon"], {}, "retry-schedule"),
        (["--allow-net", "10.0.0.0/99"], {}, "allow-net"),
        (["--ca-file", "/nonexistent/ca.pem"], {}, "ca-file"),
        (["--max-body", "1"], {}, "max-body"),
        (["--bogus"], {}, "--bogus"),
        ([], {"LABHOOK_AUTH_LOCKOUT": "forever"}, "LABHOOK_AUTH_LOCKOUT"),
    ]
    for args, env, name in cases:
        e = dict(os.environ, **env)
        p = subprocess.run([BIN, "serve", "--data-dir", d] + args, env=e, capture_output=True,
                           text=True, timeout=10)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert name in p.stderr, (name, p.stderr)
    cfg = os.path.join(d, "bad.conf")
    with open(cfg, "w") as f:
        f.write("# comment\nlisten = 127.0.0.1:0\nmystery = 1\n")
    p = subprocess.run([BIN, "serve", "--config", cfg], capture_output=True, text=True,
                       timeout=10)
    assert p.returncode == 2 and "mystery" in p.stderr and "bad.conf:3" in p.stderr, p.stderr


def test_settings_precedence(_srv):
    d = tempfile.mkdtemp()
    cfg = os.path.join(d, "labhook.conf")
    with open(cfg, "w") as f:
        f.write("http-threads = 3\nauth-max-failures 7\n")

    def effective(args, env):
        s = Server("--config", cfg, *args, env=env).start()
        try:
            line = next(l for l in s.log_lines if "effective configuration" in l)
        finally:
            s.cleanup()
        return (int(re.search(r"http_threads=(\d+)", line).group(1)),
                int(re.search(r"auth_max_failures=(\d+)", line).group(1)))
    # Every setting is in the line, by its own name (generated from the settings table).
    s = Server("--timeout", "7s").start()
    try:
        line = next(l for l in s.log_lines if "effective configuration" in l)
    finally:
        s.cleanup()
    helptext = subprocess.run([BIN, "--help"], capture_output=True, text=True).stdout
    for name in re.findall(r"^  --([a-z-]+)", helptext, re.M):
        assert " %s=" % name.replace("-", "_") in line, (name, line)
    assert " timeout=7000ms " in line, line
    assert effective([], {}) == (3, 7)
    assert effective([], {"LABHOOK_HTTP_THREADS": "4"}) == (4, 7)
    assert effective(["--http-threads", "5"], {"LABHOOK_HTTP_THREADS": "4"}) == (5, 7)
    assert effective(["--http-threads=6"], {}) == (6, 7)


def test_help(_srv):
    p = subprocess.run([BIN, "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0
    for name in ["--data-dir", "--listen", "--allow-net", "--ca-file", "--retry-schedule",
                 "--public-url", "LABHOOK_DATA_DIR"]:
        assert name in p.stdout, name
    assert "labhook store copy" in p.stdout
    p = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and "--listen" in p.stdout
    p = subprocess.run([BIN, "store", "copy", "--help"], capture_output=True, text=True,
                       timeout=10)
    assert p.returncode == 0 and "--to" in p.stdout and "LABHOOK_STORE" in p.stdout
    p = subprocess.run([BIN, "frobnicate"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "unknown command" in p.stderr


def test_graceful_stop_restart_and_durability(_srv):
    srv = Server().start()
    d = srv.data_dir
    try:
        key_path = os.path.join(d, "admin.key")
        assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
        key = srv.admin_key()
        assert key not in "\n".join(srv.log_lines)
        cid, sec = srv.new_account()
        # SIGKILL right after the 200: the account must be there after restart.
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        srv2 = Server(data_dir=d).start()
        assert srv2.admin_key() == key, "the admin key must survive restarts"
        assert srv2.token(cid, sec)
        assert srv2.stop(signal.SIGINT) == 0
        assert any("stopped cleanly" in l for l in srv2.log_lines)
        srv3 = Server(data_dir=d).start()
        assert srv3.stop(signal.SIGTERM) == 0
    finally:
        srv.cleanup()
        import shutil
        shutil.rmtree(d, ignore_errors=True)


def test_one_process_per_data_directory(_srv):
    """`labhook serve` on SQLite holds <data-dir>/labhook.lock, with its pid in it, for its
    lifetime: a second serve and a `labhook store copy` of the same directory are refused,
    naming that pid. The kernel drops the lock with the process, even one killed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABHOOK_")}
    srv = Server("--store", "sqlite").start()
    d = srv.data_dir
    copy = [BIN, "store", "copy", "--data-dir", d, "--to",
            "postgresql://nobody:hunter2@127.0.0.1:1/none"]
    try:
        pid = srv.proc.pid
        with open(os.path.join(d, "labhook.lock")) as f:
            assert f.read().strip() == str(pid)
        p = subprocess.run([BIN, "serve", "--data-dir", d, "--store", "sqlite", "--listen",
                            "127.0.0.1:0"], env=env, capture_output=True, text=True,
                           timeout=10)
        assert p.returncode == 1 and "another labhook (pid %d)" % pid in p.stderr, p.stderr
        p = subprocess.run(copy, env=env, capture_output=True, text=True, timeout=10)
        assert p.returncode == 1, (p.returncode, p.stderr)
        assert "stop the node first" in p.stderr and "pid %d" % pid in p.stderr, p.stderr
        assert srv.get("/healthz").status == 200
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        # Free again: the copy gets past the lock, to the (closed) database port.
        p = subprocess.run(copy, env=env, capture_output=True, text=True, timeout=30)
        assert p.returncode == 1 and "cannot connect to" in p.stderr, p.stderr
        assert "hunter2" not in p.stdout + p.stderr and "nobody:***@" in p.stderr, p.stderr
        srv2 = Server("--store", "sqlite", data_dir=d).start()
        assert srv2.stop() == 0
    finally:
        srv.cleanup()
    # No store in the directory: nothing to copy. No target: a usage error.
    e = tempfile.mkdtemp()
    try:
        p = subprocess.run(copy[:3] + ["--data-dir", e] + copy[5:], env=env,
                           capture_output=True, text=True, timeout=10)
        assert p.returncode == 1 and "no store in" in p.stderr, p.stderr
        p = subprocess.run([BIN, "store", "copy", "--data-dir", e], env=env,
                           capture_output=True, text=True, timeout=10)
        assert p.returncode == 2 and "--to" in p.stderr, p.stderr
        assert not os.listdir(e)  # neither made a lock file nor a store
    finally:
        os.rmdir(e)


def test_demo_mode_prints_working_credentials(_srv):
    srv = Server("--demo").start()
    d = srv.data_dir
    try:
        time.sleep(0.2)
        out = srv.stdout
        cid = re.findall(r"clientID=(cl_\w+)", out)
        sec = re.findall(r"clientSecret=(cs_[\w-]+)", out)
        lab = re.findall(r"labID=(lab_\w+)", out)
        assert len(cid) == 2 and len(sec) == 2 and len(lab) == 2, out
        assert re.search(r"corporateUser=cu_\w+", out), out
        tok = srv.token(cid[0], sec[0])
        labs = srv.get("/client/labs", token=tok).json["labs"]
        assert [l["labID"] for l in labs] == [lab[0]]
        srv.stop()
        # A temporary file left behind with a wide mode (a crash mid-write, a copy) must
        # not hand its mode to the secrets written through it.
        left = os.path.join(d, "demo.json.tmp")
        with open(left, "w") as f:
            f.write("{}")
        os.chmod(left, 0o644)
        # Nor may a development CA's key left with a wide mode by an interrupted start (one
        # file of the four missing: they are all made again) keep that mode.
        os.remove(os.path.join(d, "dev-listen.pem"))
        os.chmod(os.path.join(d, "dev-ca.key"), 0o644)
        # A second demo start keeps the same accounts and secrets, and the token got before
        # the restart still works (issue 14: the demo stays put).
        srv2 = Server("--demo", data_dir=d).start()
        time.sleep(0.2)
        out2 = srv2.stdout
        assert re.findall(r"clientID=(cl_\w+)", out2) == cid
        sec2 = re.findall(r"clientSecret=(cs_[\w-]+)", out2)
        assert sec2 == sec, out2
        assert srv2.get("/client/labs", token=tok).status == 200
        assert os.stat(os.path.join(d, "demo.json")).st_mode & 0o777 == 0o600
        for name in ("dev-ca.pem", "dev-ca.key", "dev-listen.pem", "dev-listen.key"):
            assert os.stat(os.path.join(d, name)).st_mode & 0o777 == 0o600, name
        srv2.cleanup()
    finally:
        srv.cleanup()
        import shutil
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    run([test_healthz_and_request_log, test_log_escapes_hostile_paths,
         test_unknown_path_and_method, test_ambiguous_framing_and_head,
         test_body_over_cap_is_413_without_reading_it,
         test_slow_and_idle_clients_do_not_block, test_bad_settings_refuse_to_start,
         test_settings_precedence, test_help, test_graceful_stop_restart_and_durability,
         test_one_process_per_data_directory, test_demo_mode_prints_working_credentials])
