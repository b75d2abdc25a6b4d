"""Running labhook as an operator does: readiness and stopping through sd_notify (a unix
datagram socket standing in for systemd's NOTIFY_SOCKET), the JSON log format as a log
shipper reads it, the man page generated from the settings table, the packaged systemd
unit (systemd-analyze verify) and the packaged default configuration.
(The Debian package itself: tests/packaging/test_deb.sh.)"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from harness import BIN, LOG_JSON, Server, json_log_as_text, run

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
UNIT = os.path.join(ROOT, "packaging", "labhook.service")
CONF = os.path.join(ROOT, "packaging", "labhook.conf")


def recv_until(sock, want, got):
    """Reads notify datagrams into got until one holds the line `want`; returns that one."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        msg = sock.recv(4096).decode()
        got.append(msg)
        if want in msg.split("\n"):
            return msg
    raise AssertionError("no %s among %r" % (want, got))


def test_notify_ready_then_stopping(_srv):
    d = tempfile.mkdtemp(prefix="labhook-notify-")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(os.path.join(d, "notify"))
    cmd = [BIN, "serve", "--data-dir", os.path.join(d, "data"), "--listen", "127.0.0.1:0"]
    if LOG_JSON:
        cmd += ["--log-format", "json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABHOOK_")}
    env["NOTIFY_SOCKET"] = os.path.join(d, "notify")
    err = open(os.path.join(d, "stderr"), "w+")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        got = []
        ready = recv_until(sock, "READY=1", got)
        # READY=1 names the port it serves on, and that port answers at once: the
        # listener is up and the store open before systemd hears "started".
        m = re.search(r"^STATUS=serving on 127\.0\.0\.1:(\d+) \(store sqlite\)$", ready, re.M)
        assert m, ready
        assert "STATUS=opening the store" in got[0], got
        srv = Server()
        srv.port = int(m.group(1))
        assert srv.get("/healthz").status == 200
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        stopping = recv_until(sock, "STOPPING=1", got)
        assert "STATUS=stopping" in stopping, stopping
        assert proc.wait(20) == 0
        assert not any("READY=1" in g for g in got[got.index(stopping):]), got
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
        err.seek(0)
        lines = err.read().splitlines()
        err.close()
        shutil.rmtree(d, ignore_errors=True)
    if LOG_JSON:
        for line in lines:
            json_log_as_text(line)  # raises on a line that is not a JSON log object


def test_json_log_lines(_srv):
    s = Server("--log-format", "json").start()
    try:
        assert s.get("/healthz", headers={"X-Request-Id": "abc-0123"}).status == 200
        c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        c.sendall(b"GET /nope%0a%22evil%20%C3%A9%FF HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        c.recv(4096)
        c.close()
        key = s.admin_key()
        time.sleep(0.2)
    finally:
        assert s.stop() == 0  # checks every line too (the harness)
        s.cleanup()
    objs = [json.loads(line) for line in s.raw_log]
    assert all(set(("time", "level", "module", "msg")) <= set(o) for o in objs), objs[:3]
    ready = [o for o in objs if o["msg"] == "ready"]
    assert ready and ready[0]["module"] == "main" and ready[0]["level"] == "info", ready
    assert ready[0]["listen"] == "127.0.0.1:%d" % s.port, ready
    cfg = [o for o in objs if o["msg"] == "effective configuration"]
    assert cfg and cfg[0]["log_format"] == "json" and cfg[0]["http_threads"] == "8", cfg
    req = [o for o in objs if o.get("rid") == "abc-0123"]
    assert len(req) == 1, req
    assert req[0]["module"] == "http" and req[0]["method"] == "GET", req
    assert req[0]["path"] == "/healthz" and req[0]["status"] == "200", req
    assert float(req[0]["dur_ms"]) >= 0, req
    # The hostile path comes back as the value it was: a newline, a quote, a space, an
    # e-acute (UTF-8) and a byte that is not UTF-8 (kept as the text \xff).
    bad = [o for o in objs if o.get("status") == "404"]
    assert len(bad) == 1 and bad[0]["path"] == "/nope\n\"evil \u00e9\\xff", bad
    assert key not in "\n".join(s.raw_log)
    for o in objs:
        if o["time"][-1:] != "Z" or not re.fullmatch(r"[\d\-T:.Z]{24}", o["time"]):
            raise AssertionError("time %r" % o["time"])


def roff(s):
    """util_roff_text(s, dashes=1)."""
    return ("\\&" if s[:1] in (".", "'") else "") + s.replace("\\", "\\e").replace("-", "\\-")


def test_man_page_from_the_settings_table(_srv):
    page = subprocess.run([BIN, "man"], capture_output=True, text=True, check=True).stdout
    helptext = subprocess.run([BIN, "--help"], capture_output=True, text=True).stdout
    settings = re.findall(r"^  --([a-z0-9-]+) .*\n +default: (.*); env (LABHOOK_\w+)$",
                          helptext, re.M)
    assert len(settings) >= 30 and ("log-format", "text", "LABHOOK_LOG_FORMAT") in settings
    for name, default, env in settings:
        i = page.find("\\fB\\-\\-%s\\fR \\fIvalue\\fR\n" % roff(name))
        assert i >= 0, "setting %s is not in the man page" % name
        entry = page[i:page.find(".TP", i)]
        want = "none" if default == "(none)" else "\\fB%s\\fR" % roff(default)
        assert "Default: %s. Environment: \\fB%s\\fR" % (want, roff(env)) in entry, entry
    for tool in ("admin", "lab"):
        usage = subprocess.run([BIN, tool, "--help"], capture_output=True, text=True).stdout
        cmds = [l.strip() for l in usage.splitlines() if l.startswith("  ")]
        assert len(cmds) >= 4, usage
        for c in cmds:
            assert "labhook %s %s\n" % (tool, roff(c)) in page, c
    with tempfile.NamedTemporaryFile("w", suffix=".8") as f:
        f.write(page)
        f.flush()
        g = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", f.name],
                           capture_output=True, text=True)
        assert g.returncode == 0 and g.stderr == "", g.stderr
        # What lintian runs (manpage-has-errors-from-man), and its whatis check (lexgrog).
        m = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", f.name],
                           capture_output=True, text=True,
                           env=dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="80"))
        assert m.returncode == 0 and m.stderr == "", m.stderr
        w = subprocess.run(["lexgrog", f.name], capture_output=True, text=True)
        assert w.returncode == 0 and "labhook - webhooks for a laboratory" in w.stdout, w


def test_unit_file_verifies(_srv):
    unit = open(UNIT).read()
    for line in ("Type=notify", "User=labhook", "StateDirectory=labhook",
                 "ExecStart=/usr/bin/labhook serve --config /etc/labhook/labhook.conf",
                 "ProtectSystem=strict", "NoNewPrivileges=yes", "CapabilityBoundingSet=",
                 "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX"):
        assert re.search("^%s$" % re.escape(line), unit, re.M), line
    d = tempfile.mkdtemp(prefix="labhook-unit-")
    try:
        # verify wants the binary to exist: the build's, in a copy under the unit's name.
        path = os.path.join(d, "labhook.service")
        with open(path, "w") as f:
            f.write(unit.replace("ExecStart=/usr/bin/labhook ",
                                 "ExecStart=%s " % os.path.realpath(BIN)))
        # --man=no: labhook(8) is not installed here (tests/packaging/test_deb.sh verifies
        # the installed unit with its man page). Any output is a warning: none allowed.
        v = subprocess.run(["systemd-analyze", "verify", "--man=no", path],
                           capture_output=True, text=True)
        assert v.returncode == 0 and v.stdout + v.stderr == "", v.stdout + v.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_packaged_config_starts_the_service(_srv):
    # The packaged file as is; the harness's --data-dir and --listen override its own.
    s = Server("--config", CONF).start()
    try:
        assert s.get("/healthz").status == 200
        line = next(l for l in s.log_lines if "effective configuration" in l)
        assert " config=%s " % CONF.replace(" ", "\\x20") in line, line
        fmt = "json" if LOG_JSON else "text"  # the file's, unless the harness overrides it
        assert " log_level=info log_format=%s " % fmt in line, line
    finally:
        assert s.stop() == 0
        s.cleanup()


if __name__ == "__main__":
    run([test_notify_ready_then_stopping, test_json_log_lines,
         test_man_page_from_the_settings_table, test_unit_file_verifies,
         test_packaged_config_starts_the_service])
