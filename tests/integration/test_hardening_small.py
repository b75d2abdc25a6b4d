"""Issue 9 hardening, over real sockets: the login limiter throttles the guesser and not the
client it guesses at; proxies from the environment cannot route a delivery (or the admin
CLI) around the address policy; a PATCH racing a secret rotation loses neither; an
endpoint's answer that is not valid UTF-8 still shows in the attempt log; a NUL inside a
string is invalid_value, naming the field."""
import http.client
import json
import socket
import subprocess
import threading
import time

from harness import BIN, Response, Server, expect_error, openapi_record, run
from receiver import ANSWERS, Receiver

RECV = Receiver()
FAST = ["--ca-file", RECV.ca, "--allow-net", "127.0.0.0/8", "--retry-schedule", "0",
        "--timeout", "2s", "--connect-timeout", "1s"]


def post_from(srv, source, path, body):
    """POST from the loopback address `source`, so the service sees a distinct client."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30,
                                      source_address=(source, 0))
    try:
        conn.request("POST", path, body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        headers, data = dict((k.lower(), v) for k, v in r.getheaders()), r.read()
        openapi_record("POST", path, {"Content-Type": "application/json"}, json.dumps(body),
                       r.status, headers, data)
        return Response(r.status, headers, data.decode("utf-8", "replace"))
    finally:
        conn.close()


def login_from(srv, source, cid, secret):
    return post_from(srv, source, "/client/auth/token",
                     {"clientID": cid, "clientSecret": secret})


def subscribe(srv, c, lab, path):
    r = srv.post("/client/events/subscribe", {
        "labID": lab, "events": ["bill.created"], "protocol": "https",
        "endpoint": RECV.url(path)}, token=c["token"])
    assert r.status == 200, r
    return "/client/events/subscriptions/" + r.json["subscription"]["id"]


def first_delivery_done(srv, c, base):
    """The first delivery of a subscription once it is no longer pending (or at 15 s)."""
    deadline, ds = time.time() + 15, []
    while time.time() < deadline:
        ds = srv.get(base + "/deliveries", token=c["token"]).json["deliveries"]
        if ds and ds[0]["status"] != "pending":
            break
        time.sleep(0.1)
    assert ds, "no delivery"
    return ds[0]


def fnv(text):
    h = 1469598103934665603
    for b in text.encode():
        h = ((h ^ b) * 1099511628211) & ((1 << 64) - 1)
    return h


def test_guesser_is_throttled_not_the_client(_srv):
    srv = Server("--auth-max-failures", "3", "--auth-lockout", "60s").start()
    try:
        cid, sec = srv.new_account()
        for _ in range(3):
            expect_error(login_from(srv, "127.0.0.2", cid, "wrong"), 401)
        # The guesser's address is throttled, with the right secret too...
        r = login_from(srv, "127.0.0.2", cid, "wrong")
        expect_error(r, 429, "rate_limited")
        assert 0 < int(r.headers["retry-after"]) <= 60, r.headers
        expect_error(login_from(srv, "127.0.0.2", cid, sec), 429, "rate_limited")
        # ...the rightful client, from its own address, is not.
        r = login_from(srv, "127.0.0.3", cid, sec)
        assert r.status == 200 and r.json["authToken"], r
        # Many addresses guessing at one id are logged, and hold no one back: the
        # rightful client logs in after a slip of its own.
        for i in range(33):
            expect_error(login_from(srv, "127.0.1.%d" % (i % 11 + 1), cid, "wrong"), 401)
        expect_error(login_from(srv, "127.0.2.1", cid, "stale"), 401)
        assert login_from(srv, "127.0.2.1", cid, sec).status == 200
        time.sleep(0.2)
        assert any("failed logins from many addresses" in l for l in srv.log_lines)
        # A few failures with made-up ids from a shared address (a NAT, an office) do not
        # lock out the others behind it.
        other, osec = srv.new_account()
        for i in range(10):
            expect_error(login_from(srv, "127.0.3.1", "cl_nosuch%02d" % i, "x"), 401)
        assert login_from(srv, "127.0.3.1", other, osec).status == 200
    finally:
        srv.cleanup()


def test_limiter_table_cannot_be_flushed(_srv):
    """Ids chosen so that their keys land on the slot of the address's own entry used to
    evict it (the table's hash was plain FNV-1a), so one address guessed on for ever: the
    hash is keyed now, and an entry holding someone back is the last to be reused. With the
    default limit (10), an address is held back past 100 failures against all ids."""
    srv = Server("--auth-lockout", "60s").start()
    try:
        slot = fnv("i:127.0.0.6") % 4096
        crafted, n = [], 0
        while len(crafted) < 130:
            n += 1
            if fnv("c:cl_x%d" % n) % 4096 == slot:
                crafted.append("cl_x%d" % n)
        codes = [login_from(srv, "127.0.0.6", cid, "guess").status for cid in crafted]
        assert 429 in codes, codes
        assert codes.index(429) == 100, codes.index(429)
    finally:
        srv.cleanup()


class ConnectProxy:
    """A forward proxy on 127.0.0.2 that records every connection and forwards nothing."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.2", 0))
        self.sock.listen(16)
        self.url = "http://127.0.0.2:%d" % self.sock.getsockname()[1]
        self.seen = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.seen.append(conn.recv(4096).split(b"\r\n")[0].decode("latin-1"))
                    conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    self.seen.append("(no request line)")

    def close(self):
        self.sock.close()


def proxy_env(proxy):
    return {k: proxy.url for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                                   "http_proxy", "HTTP_PROXY")}


def test_environment_proxy_does_not_bypass_the_address_policy(_srv):
    proxy = ConnectProxy()
    srv = Server(*FAST).start()
    try:
        c = srv.client()
        base = subscribe(srv, c, c["lab"], "/ok/proxied")
        # Restart allowing only the proxy's address, with every proxy variable set.
        srv.stop()
        srv.args = ["--ca-file", RECV.ca, "--allow-net", "127.0.0.2/32", "--retry-schedule",
                    "0", "--timeout", "2s", "--connect-timeout", "1s"]
        srv.env = proxy_env(proxy)
        srv.start()
        c["token"] = srv.token(c["id"], c["secret"])
        r = srv.post("/client/billing/create", {
            "labID": c["lab"], "integrator_id": "INT-1", "unmapped_tests": ["T0"],
            "patient_details": {"first_name": "A", "gender": "male", "age": 3,
                                "age_type": "year"}}, token=c["token"])
        assert r.status == 200, r
        d = first_delivery_done(srv, c, base)
        assert proxy.seen == [], proxy.seen
        assert d["status"] == "failed", d
        assert [a["error"] for a in d["attempts"]] == ["blocked_address"], d
        assert not RECV.received("/ok/proxied")
        # The admin CLI carries the admin key: it ignores the proxies too.
        p = subprocess.run([BIN, "admin", "--data-dir", srv.data_dir, "--url",
                            "http://127.0.0.1:%d" % srv.port, "accounts", "list"],
                           capture_output=True, text=True, timeout=30,
                           env=dict(proxy_env(proxy), PATH="/usr/bin:/bin"))
        assert p.returncode == 0, p.stderr
        assert c["id"] in p.stdout, p.stdout
        assert proxy.seen == [], proxy.seen
    finally:
        srv.cleanup()
        proxy.close()


def test_patch_racing_rotation_loses_neither(srv):
    c = srv.client()
    base = subscribe(srv, c, c["lab"], "/ok/race")
    lost = []
    for i in range(40):
        go = threading.Barrier(2)
        out = {}

        def patch():
            go.wait()
            out["patch"] = srv.request("PATCH", base,
                                       {"endpoint": RECV.url("/ok/race-%d" % i)},
                                       token=c["token"])

        def rotate():
            go.wait()
            out["rotate"] = srv.post(base + "/secret/rotate", token=c["token"])

        ts = [threading.Thread(target=patch), threading.Thread(target=rotate)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert out["patch"].status == 200 and out["rotate"].status == 200, out
        secret = srv.get(base + "/secret", token=c["token"]).json["signingSecret"]
        got = srv.get(base, token=c["token"]).json["subscription"]
        if (secret != out["rotate"].json["signingSecret"] or
                got["endpoint"] != RECV.url("/ok/race-%d" % i)):
            lost.append(i)
    assert not lost, "lost updates in trials %r" % lost


def test_answer_not_utf8_is_still_logged(srv):
    c = srv.client()
    # ANSWERS["invalid"] has bytes that are not UTF-8; "straddle" has a character cut by
    # the 255-byte limit.
    want = {"invalid": "ok \ufffd\ufffd end", "straddle": "a" * 254}
    for name, text in want.items():
        base = subscribe(srv, c, srv.new_lab(c["id"], name), "/answer/" + name)
        assert srv.post(base + "/test", token=c["token"]).status == 200
        d = first_delivery_done(srv, c, base)
        assert d["status"] == "delivered", d
        assert [a["response"] for a in d["attempts"]] == [text], (name, ANSWERS[name], d)


def test_nul_in_a_string_is_invalid_value(srv):
    c = srv.client()
    body = ('{"labID": "%s", "events": ["bill.created"], "protocol": "https",'
            ' "endpoint": "https://hooks.example/a\\u0000b"}' % c["lab"])
    expect_error(srv.post("/client/events/subscribe", raw=body, token=c["token"]), 400,
                 "invalid_value", "endpoint")
    body = ('{"labID": "%s", "events": ["bill.created\\u0000"], "protocol": "https",'
            ' "endpoint": "https://hooks.example/a"}' % c["lab"])
    expect_error(srv.post("/client/events/subscribe", raw=body, token=c["token"]), 400,
                 "invalid_value", "events[0]")
    # Still not JSON: a raw control character.
    expect_error(srv.post("/client/events/subscribe", raw='{"labID": "a\x00b"}',
                          token=c["token"]), 400, "invalid_json")


if __name__ == "__main__":
    try:
        run([test_guesser_is_throttled_not_the_client, test_limiter_table_cannot_be_flushed,
             test_environment_proxy_does_not_bypass_the_address_policy,
             test_patch_racing_rotation_loses_neither,
             test_answer_not_utf8_is_still_logged,
             test_nul_in_a_string_is_invalid_value], server_args=FAST)
    finally:
        RECV.close()
