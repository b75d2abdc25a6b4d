"""The first hour from the command line (issue 14): `labhook listen` and `labhook trigger`
against `serve --demo` with no other setup, `labhook client` against the real service
(login, refresh, revoked refresh, every command, --json), `labhook lab` with flags, and a
service without --demo that still refuses loopback endpoints."""
import http.server
import json
import os
import queue
import shutil
import signal
import ssl
import stat
import subprocess
import tempfile
import threading
import time
import urllib.request

from harness import BIN, Server, expect_error, run

SIX = ["bill.created", "bill.completed", "bill.deleted", "report.completed", "lead.created",
       "booking.created"]


def demo(srv):
    with open(os.path.join(srv.data_dir, "demo.json")) as f:
        return json.load(f)["accounts"][0]


def demo_token(srv):
    a = demo(srv)
    return srv.token(a["clientID"], a["clientSecret"])


def labhook(*args, env=None, stdin=None, timeout=60):
    e = dict(os.environ)
    for k in list(e):
        if k.startswith("LABHOOK_") and k != "LABHOOK_BIN":
            del e[k]
    e.update(env or {})
    return subprocess.run([BIN] + list(args), capture_output=True, text=True, env=e,
                          input=stdin, timeout=timeout)


class Listen:
    """`labhook listen` as a subprocess; its stdout read line by line in a thread."""

    def __init__(self, srv, *args, env=None):
        e = dict(os.environ)
        for k in list(e):
            if k.startswith("LABHOOK_") and k != "LABHOOK_BIN":
                del e[k]
        e.update(env or {})
        self.proc = subprocess.Popen([BIN, "listen", "--data-dir", srv.data_dir] + list(args),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=e)
        self.lines = queue.Queue()
        self.all = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.all.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pred, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            try:
                line = self.lines.get(timeout=max(0.05, end - time.time()))
            except queue.Empty:
                break
            if line is None:
                break
            if pred(line):
                return line
        raise AssertionError("listen did not print what was awaited; it printed:\n%s\n%s"
                             % ("".join(self.all), self.stderr_now()))

    def stderr_now(self):
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read()

    def sub_id(self, ready):
        return ready.split("(subscription ")[1].split(")")[0]

    def stop(self, sig=signal.SIGINT):
        self.proc.send_signal(sig)
        rc = self.proc.wait(20)
        time.sleep(0.1)
        return rc


def live_subs(srv, tok):
    r = srv.get("/client/events/subscriptions", token=tok)
    assert r.status == 200, r
    return r.json["subscriptions"]


def test_newcomer_listen_and_trigger(srv):
    """Fresh data dir, serve --demo, then listen and trigger on their defaults."""
    tok = demo_token(srv)
    before = len(live_subs(srv, tok))
    ln = Listen(srv)
    try:
        ready = ln.wait_for(lambda l: l.startswith("Ready:"))
        sub = ln.sub_id(ready)
        assert [s["id"] for s in live_subs(srv, tok)][-1] == sub
        p = labhook("trigger", "--data-dir", srv.data_dir, "bill.completed")
        assert p.returncode == 0, p.stderr
        bill = [l.split()[-1] for l in p.stdout.splitlines() if l.startswith("bill.created")]
        assert len(bill) == 1 and bill[0].startswith("bill_"), p.stdout
        assert p.stdout.count("report.completed") == 2 and "bill.completed" in p.stdout
        seen = []
        for _ in range(4):
            line = ln.wait_for(lambda l: l.startswith("--> "))
            assert "signature verified" in line, line
            assert bill[0] in line, line
            seen.append(line.split()[1])
        assert seen == ["bill.created", "report.completed", "report.completed",
                        "bill.completed"], seen
        assert "INVALID" not in "".join(ln.all)
        # the payload is printed pretty
        assert '"eventType": "bill.completed"' in "".join(ln.all)
        # a webhook whose signature is not the subscription's is flagged, not trusted
        url = ready.split(" arrive at ")[1].split()[0]
        forged = json.dumps({"eventType": "bill.created", "data": {"billID": "bill_forged"}})
        req = urllib.request.Request(url, data=forged.encode(), method="POST", headers={
            "Content-Type": "application/json", "webhook-id": "evt_forged",
            "webhook-timestamp": str(int(time.time())),
            "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="})
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        urllib.request.urlopen(req, context=tls, timeout=10).read()
        line = ln.wait_for(lambda l: l.startswith("--> "))
        assert "evt_forged" in line or "bill_forged" in line, line
        assert "signature INVALID" in line, line
    finally:
        rc = ln.stop()
    assert rc == 0, ln.proc.stderr.read()
    assert "deleted subscription %s" % sub in "".join(ln.all)
    assert len(live_subs(srv, tok)) == before
    r = srv.get("/client/events/subscriptions/" + sub, token=tok)
    expect_error(r, 404, "subscription_not_found")


def test_listen_sigterm_and_stale_subscription(srv):
    """SIGTERM deletes too; one left behind by a killed listen is taken over, not a 409."""
    tok = demo_token(srv)
    ln = Listen(srv, "--events", "lead.created")
    ready = ln.wait_for(lambda l: l.startswith("Ready:"))
    stale = ln.sub_id(ready)
    ln.proc.kill()  # no chance to clean up
    ln.proc.wait(10)
    assert stale in [s["id"] for s in live_subs(srv, tok)]
    ln2 = Listen(srv, "--events", "lead.created,booking.created")
    try:
        ln2.wait_for(lambda l: l.startswith("Ready:"))
        assert "removed %s" % stale in "".join(ln2.all)
        p = labhook("trigger", "--data-dir", srv.data_dir, "booking.created")
        assert p.returncode == 0, p.stderr
        got = [ln2.wait_for(lambda l: l.startswith("--> ")).split()[1] for _ in range(2)]
        assert got == ["lead.created", "booking.created"], got
    finally:
        assert ln2.stop(signal.SIGTERM) == 0
    assert not [s for s in live_subs(srv, tok) if s["endpoint"].endswith("/labhook-listen")]


def test_second_listen_leaves_a_running_one_alone(srv):
    """A listen still running keeps its subscription: a second one for the same events
    stops with a message naming the first one's port, and takes nothing over."""
    tok = demo_token(srv)
    ln = Listen(srv, "--events", "lead.created")
    try:
        first = ln.sub_id(ln.wait_for(lambda l: l.startswith("Ready:")))
        ln2 = Listen(srv, "--events", "lead.created")
        rc = ln2.proc.wait(30)
        err = ln2.proc.stderr.read()
        assert rc != 0, "".join(ln2.all)
        assert "still running on port" in err and first in err, err
        assert first in [s["id"] for s in live_subs(srv, tok)]
        p = labhook("trigger", "--data-dir", srv.data_dir, "lead.created")
        assert p.returncode == 0, p.stderr
        assert ln.wait_for(lambda l: l.startswith("--> ")).split()[1] == "lead.created"
    finally:
        assert ln.stop() == 0


class _Hooks(http.server.BaseHTTPRequestHandler):
    got = []

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        _Hooks.got.append((self.path, dict(self.headers), self.rfile.read(n)))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def test_listen_forward_to(srv):
    hs = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    threading.Thread(target=hs.serve_forever, daemon=True).start()
    url = "http://localhost:%d/hooks" % hs.server_address[1]
    ln = Listen(srv, "--events", "bill.created", "--forward-to", url)
    try:
        ln.wait_for(lambda l: l.startswith("Ready:"))
        p = labhook("trigger", "--data-dir", srv.data_dir, "bill.created")
        assert p.returncode == 0, p.stderr
        ln.wait_for(lambda l: l.startswith("--> bill.created"))
        fwd = ln.wait_for(lambda l: "forwarded to" in l)
        assert fwd.strip() == "forwarded to %s: 202" % url, fwd
        path, headers, body = _Hooks.got[-1]
        h = {k.lower(): v for k, v in headers.items()}
        assert path == "/hooks"
        assert json.loads(body)["eventType"] == "bill.created"
        for k in ("webhook-id", "webhook-timestamp", "webhook-signature"):
            assert h.get(k), headers
        assert h["webhook-signature"].startswith("v1,")
        assert h["content-type"].startswith("application/json"), headers
    finally:
        assert ln.stop() == 0
        hs.shutdown()


def client(srv, creds, *args, stdin=None, env=None):
    return labhook("client", "--data-dir", srv.data_dir, "--credentials", creds, *args,
                   stdin=stdin, env=env)


def test_client_login_and_every_command(srv):
    a = demo(srv)
    d = tempfile.mkdtemp(prefix="labhook-cli-")
    creds = os.path.join(d, "sub", "credentials.json")
    try:
        # not logged in yet
        p = client(srv, creds, "labs")
        assert p.returncode == 4 and "labhook client login" in p.stderr, p
        # a wrong secret: a clear error, no file
        p = client(srv, creds, "login", "--client-id", a["clientID"], "--client-secret", "cs_nope")
        assert p.returncode == 1 and "invalid_credentials" in p.stderr, p
        assert not os.path.exists(creds)
        # the secret from stdin
        p = client(srv, creds, "login", "--client-id", a["clientID"], "--client-secret", "-",
                   stdin=a["clientSecret"] + "\n")
        assert p.returncode == 0, p.stderr
        assert stat.S_IMODE(os.stat(creds).st_mode) == 0o600
        saved = json.load(open(creds))
        for secret in (a["clientSecret"], saved["authToken"], saved["refreshToken"]):
            assert secret not in p.stdout + p.stderr
        # and from the environment (XDG_CONFIG_HOME's default file)
        p = labhook("client", "--data-dir", srv.data_dir, "login",
                    env={"XDG_CONFIG_HOME": d, "LABHOOK_CLIENT_ID": a["clientID"],
                         "LABHOOK_CLIENT_SECRET": a["clientSecret"]})
        assert p.returncode == 0, p.stderr
        assert stat.S_IMODE(os.stat(os.path.join(d, "labhook", "credentials.json")).st_mode) == 0o600

        p = client(srv, creds, "labs")
        assert p.returncode == 0 and a["labID"] in p.stdout, p
        p = client(srv, creds, "--json", "labs")
        assert json.loads(p.stdout)["labs"][0]["labID"] == a["labID"]

        p = client(srv, creds, "--json", "subscribe", "--lab", a["labID"], "--events",
                   "bill.deleted", "--endpoint", "https://127.0.0.1:9/cli-hooks")
        assert p.returncode == 0, p.stderr
        sub = json.loads(p.stdout)["subscription"]["id"]
        p = client(srv, creds, "subscribe", "--lab", a["labID"], "--events", "bill.deleted",
                   "--endpoint", "https://127.0.0.1:9/other")
        assert p.returncode == 1 and "subscription_conflict" in p.stderr, p
        p = client(srv, creds, "subscriptions", "list")
        assert p.returncode == 0 and sub in p.stdout and "bill.deleted" in p.stdout, p
        p = client(srv, creds, "--json", "subscriptions", "list", "--lab", a["labID"],
                   "--status", "active")
        assert sub in [s["id"] for s in json.loads(p.stdout)["subscriptions"]]
        p = client(srv, creds, "subscriptions", "get", sub)
        assert p.returncode == 0 and "https://127.0.0.1:9/cli-hooks" in p.stdout, p
        p = client(srv, creds, "--json", "subscriptions", "patch", sub, "--events",
                   "bill.deleted,lead.created", "--auth-token", "tok123")
        j = json.loads(p.stdout)["subscription"]
        assert j["events"] == ["bill.deleted", "lead.created"] and j["hasAuthToken"], j
        p = client(srv, creds, "subscriptions", "pause", sub)
        assert p.returncode == 0 and "paused" in p.stdout, p
        p = client(srv, creds, "subscriptions", "resume", sub)
        assert p.returncode == 0 and "active" in p.stdout, p
        p = client(srv, creds, "secret", "get", sub)
        assert p.returncode == 0 and p.stdout.startswith("whsec_"), p
        p = client(srv, creds, "--json", "secret", "rotate", sub)
        assert json.loads(p.stdout)["signingSecret"].startswith("whsec_")
        p = client(srv, creds, "test", sub)
        assert p.returncode == 0 and "evt_" in p.stdout, p
        # the endpoint refuses connections: wait for the first attempt to be logged
        dlv = None
        for _ in range(100):
            p = client(srv, creds, "--json", "deliveries", "list", sub)
            ds = json.loads(p.stdout)["deliveries"]
            if ds and ds[0]["attempts"]:
                dlv = ds[0]
                break
            time.sleep(0.1)
        assert dlv and dlv["eventType"] == "webhook.test", ds
        p = client(srv, creds, "deliveries", "list", sub)
        assert dlv["id"] in p.stdout and "attempt 1" in p.stdout, p.stdout
        p = client(srv, creds, "retry", dlv["id"])
        assert p.returncode == 0 and "pending" in p.stdout, p
        p = client(srv, creds, "recover", sub, "--since", "2020-01-01T00:00:00Z")
        assert p.returncode == 0 and "queued again" in p.stdout, p
        p = client(srv, creds, "recover", sub, "--since", "yesterday-ish")
        assert p.returncode == 1 and "since" in p.stderr, p
        p = client(srv, creds, "subscriptions", "delete", sub)
        assert p.returncode == 0 and sub in p.stdout, p
        p = client(srv, creds, "subscriptions", "get", sub)
        assert p.returncode == 1 and "subscription_not_found" in p.stderr, p
        # usage errors and an unreachable service
        assert client(srv, creds, "subscriptions", "frobnicate").returncode == 2
        assert client(srv, creds, "labs", "--bogus", "x").returncode == 2
        p = client(srv, creds, "--url", "http://127.0.0.1:1", "labs")
        assert p.returncode == 3 and "127.0.0.1:1" in p.stderr, p
        p = client(srv, creds, "logout")
        assert p.returncode == 0 and not os.path.exists(creds)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_client_refresh_and_revoked_refresh(srv):
    a = demo(srv)
    d = tempfile.mkdtemp(prefix="labhook-cli-")
    creds = os.path.join(d, "credentials.json")
    try:
        p = client(srv, creds, "login", "--client-id", a["clientID"], "--client-secret",
                   a["clientSecret"])
        assert p.returncode == 0, p.stderr
        first = json.load(open(creds))
        # An access token the service refuses (invalid_token), though not expired by the
        # clock: refreshed once on its own, the call made again.
        bad = dict(first, authToken=first["authToken"][:-4] + "AAAA")
        json.dump(bad, open(creds, "w"))
        p = client(srv, creds, "labs")
        assert p.returncode == 0 and a["labID"] in p.stdout, p
        second = json.load(open(creds))
        assert second["refreshToken"] != first["refreshToken"]
        assert second["authToken"] != bad["authToken"]
        assert stat.S_IMODE(os.stat(creds).st_mode) == 0o600
        # An access token expired by the clock: refreshed before the call.
        json.dump(dict(second, expiresAt=0), open(creds, "w"))
        p = client(srv, creds, "labs")
        assert p.returncode == 0, p
        third = json.load(open(creds))
        assert third["refreshToken"] != second["refreshToken"]
        assert third["expiresAt"] > time.time()
        # A refresh token used before (first's) is refused and revokes its family: log in
        # again, exit 4, and nothing secret printed.
        json.dump(dict(first, expiresAt=0), open(creds, "w"))
        p = client(srv, creds, "labs")
        assert p.returncode == 4 and "log in again: labhook client login" in p.stderr, p
        assert first["refreshToken"] not in p.stderr
        # the family is gone: the newest token fails too
        json.dump(dict(third, expiresAt=0), open(creds, "w"))
        assert client(srv, creds, "labs").returncode == 4
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_lab_with_flags(srv):
    a = demo(srv)
    p = labhook("lab", "--data-dir", srv.data_dir, "create-bill", "--test", "101",
                "--package", "201", "--unmapped-test", "Glucose", "--first-name", "Asha",
                "--gender", "female", "--age", "34")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    bill = lines[0].split()[1]
    reps = [l.split()[1] for l in lines if l.startswith("report")]
    assert bill.startswith("bill_") and len(reps) == 4, p.stdout
    assert "CBC" in p.stdout and "LDL Cholesterol" in p.stdout and "Glucose" in p.stdout
    # the printed ids are the ones complete-report needs
    p = labhook("lab", "--data-dir", srv.data_dir, "complete-report", bill, reps[0])
    assert p.returncode == 0, p.stderr
    p = labhook("lab", "--data-dir", srv.data_dir, "--json", "get-bill", bill)
    j = json.loads(p.stdout)["bill"]
    assert j["clientID"] == a["clientID"] and j["labID"] == a["labID"]
    assert [t["status"] for t in j["billData"]["testData"]][:1] == ["completed"]
    p = labhook("lab", "--data-dir", srv.data_dir, "get-bill", bill)
    assert "completed" in p.stdout and reps[0] in p.stdout
    p = labhook("lab", "--data-dir", srv.data_dir, "create-bill", "--test", "999")
    assert p.returncode == 1 and "unknown_catalog_item" in p.stderr, p
    # Prices are printed as the decimals they are: 249.99 is not 249.99000000000001 (a
    # double printed to 17 significant digits).
    p = labhook("lab", "--data-dir", srv.data_dir, "catalog", "add-test", a["labID"], "T-PRICE",
                "--name", "Vitamin D", "--price", "249.99")
    assert p.returncode == 0, p
    p = labhook("lab", "--data-dir", srv.data_dir, "catalog", "list-tests", a["labID"])
    assert p.returncode == 0 and "249.99" in p.stdout, p
    assert "249.9900" not in p.stdout and "249.98999" not in p.stdout, p.stdout
    p = labhook("lab", "--data-dir", srv.data_dir, "create-lead", "--first-name", "Ravi",
                "--contact", "9876501234")
    assert p.returncode == 0 and p.stdout.startswith("lead    lead_"), p
    p = labhook("lab", "--data-dir", srv.data_dir, "create-lead", "--first-name", "Ravi",
                "--contact", "9876501234")
    assert p.returncode == 1 and "duplicate_lead" in p.stderr, p
    p = labhook("lab", "--data-dir", srv.data_dir, "get-bill", "bill_01M8QHFXX4W2SK5GX40AX8WPS7")
    assert p.returncode == 1 and "bill_not_found" in p.stderr, p
    # the raw-JSON form still works
    body = {"clientID": a["clientID"], "labID": a["labID"], "integrator_id": "RAW-1",
            "patient_details": {"first_name": "A", "gender": "other", "age": 3,
                                "age_type": "year"}, "unmapped_tests": ["X"]}
    p = labhook("lab", "--data-dir", srv.data_dir, "create-bill", "--json", json.dumps(body))
    assert p.returncode == 0 and json.loads(p.stdout)["billID"].startswith("bill_"), p
    # the lab routes the flags use, with the admin key only
    r = srv.post("/lab/leads", {"clientID": a["clientID"]}, token=demo_token(srv))
    assert r.status == 401, r
    r = srv.admin("POST", "/lab/leads", {"clientID": "cl_nobody", "branchID": a["labID"]})
    expect_error(r, 400)
    r = srv.admin("POST", "/lab/leads", {
        "clientID": "cl_01M8QHFXX4W2SK5GX40AX8WPS7", "branchID": a["labID"],
        "integratorID": "X", "first_name": "R", "contact": "9876501299", "age": 3,
        "age_type": "year"})
    expect_error(r, 404, "account_not_found", "clientID")


def test_trigger_every_event(srv):
    for ev in SIX:
        p = labhook("trigger", "--data-dir", srv.data_dir, ev)
        assert p.returncode == 0, (ev, p.stderr)
        assert any(l.startswith(ev) for l in p.stdout.splitlines()), (ev, p.stdout)
    p = labhook("trigger", "--data-dir", srv.data_dir, "--json", "bill.created")
    assert json.loads(p.stdout.splitlines()[0])["billID"].startswith("bill_")
    p = labhook("trigger", "--data-dir", srv.data_dir, "bill.exploded")
    assert p.returncode == 2 and "unknown event" in p.stderr
    e = tempfile.mkdtemp(prefix="labhook-empty-")
    try:
        p = labhook("trigger", "--data-dir", e, "bill.created")
        assert p.returncode == 2 and "serve --demo" in p.stderr, p
    finally:
        os.rmdir(e)


def test_help(srv):
    p = labhook("--help")
    for cmd in ("listen", "trigger", "client"):
        assert "labhook " + cmd in p.stdout, p.stdout
        q = labhook(cmd, "--help")
        assert q.returncode == 0 and "Usage: labhook " + cmd in q.stdout, q
    q = labhook("lab", "--help")
    assert "create-lead" in q.stdout and "get-bill" in q.stdout
    q = labhook("listen", "--data-dir", srv.data_dir, "--port", "abc")
    assert q.returncode == 2 and "--port wants 0-65535" in q.stderr, q
    # a certificate that cannot be read is a local failure (1, as docs/cli.md says), not a
    # usage error, and it says which file and what to do
    q = labhook("listen", "--data-dir", srv.data_dir, "--cert", "/nonexistent/listen.pem",
                "--key", "/nonexistent/listen.key")
    assert q.returncode == 1 and "cannot read /nonexistent/listen.pem" in q.stderr, q
    assert "--cert" in q.stderr, q


def test_production_still_refuses_loopback(_srv):
    """Without --demo nothing changes: no development CA, and loopback endpoints refused,
    so listen says what to do instead of registering."""
    srv = Server().start()
    try:
        assert not os.path.exists(os.path.join(srv.data_dir, "dev-ca.pem"))
        c = srv.client()
        for ep in ("https://127.0.0.1:8443/labhook-listen", "https://localhost/x",
                   "https://[::1]/x"):
            r = srv.post("/client/events/subscribe", {
                "labID": c["lab"], "events": ["bill.created"], "endpoint": ep,
                "protocol": "https"}, token=c["token"])
            expect_error(r, 400, "blocked_address")
        # listen with a certificate from elsewhere: the service refuses, listen explains
        _srv_dir = _srv.data_dir
        ln = subprocess.run(
            [BIN, "listen", "--data-dir", srv.data_dir, "--url", "http://127.0.0.1:%d" % srv.port,
             "--client-id", c["id"], "--client-secret", c["secret"],
             "--cert", os.path.join(_srv_dir, "dev-listen.pem"),
             "--key", os.path.join(_srv_dir, "dev-listen.key")],
            capture_output=True, text=True, timeout=30)
        assert ln.returncode == 1, ln
        assert "blocked_address" in ln.stderr and "--demo" in ln.stderr, ln.stderr
        assert srv.get("/client/events/subscriptions", token=c["token"]).json[
            "subscriptions"] == []
    finally:
        srv.cleanup()


if __name__ == "__main__":
    run([test_newcomer_listen_and_trigger, test_listen_sigterm_and_stale_subscription,
         test_second_listen_leaves_a_running_one_alone,
         test_listen_forward_to, test_client_login_and_every_command,
         test_client_refresh_and_revoked_refresh, test_lab_with_flags,
         test_trigger_every_event, test_help, test_production_still_refuses_loopback],
        server_args=("--demo",))
