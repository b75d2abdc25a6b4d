"""The delivery engine (API.md 7, 4.2) against a real HTTPS receiver with its own test CA:
outcomes, signatures, retries, ordering, isolation, durability under SIGKILL, and the
address policy."""
import base64
import datetime
import json
import os
import shutil
import signal
import socket
import sqlite3
import threading
import time

from harness import Server, expect_error, pg_uri, private_hosts, psql, run
from receiver import Receiver, verify

RECV = Receiver()
FAST = ["--ca-file", RECV.ca, "--allow-net", "127.0.0.0/8", "--retry-schedule",
        "0,200ms,400ms", "--timeout", "1s", "--connect-timeout", "1s"]


def bill_body(lab, tests=1):
    return {"labID": lab, "integrator_id": "INT-1",
            "patient_details": {"first_name": "A", "gender": "male", "age": 3,
                                "age_type": "year"},
            "unmapped_tests": ["T%d" % i for i in range(tests)]}


def subscribe(srv, c, path, events=("bill.created",), **extra):
    b = {"labID": c["lab"], "events": list(events), "endpoint": RECV.url(path),
         "protocol": "https"}
    b.update(extra)
    r = srv.post("/client/events/subscribe", b, token=c["token"])
    assert r.status == 200, r
    return r.json["subscription"]["id"], r.json["signingSecret"]


def new_bill(srv, c, tests=1):
    r = srv.post("/client/billing/create", bill_body(c["lab"], tests), token=c["token"])
    assert r.status == 200, r
    return r.json["billID"]


def deliveries(srv, c, sub, status=None):
    q = "?limit=500" + ("&status=" + status if status else "")
    r = srv.get("/client/events/subscriptions/%s/deliveries%s" % (sub, q), token=c["token"])
    assert r.status == 200, r
    return r.json["deliveries"]


def wait_deliveries(srv, c, sub, pred, timeout=15):
    deadline = time.time() + timeout
    while True:
        ds = deliveries(srv, c, sub)
        if pred(ds) or time.time() > deadline:
            return ds
        time.sleep(0.1)


def test_success_request_shape_and_signature(srv):
    c = srv.client()
    sub, secret = subscribe(srv, c, "/ok/shape", authToken="crm-token-1")
    t0 = time.time()
    bill = new_bill(srv, c)
    assert RECV.wait_for(lambda: RECV.received("/ok/shape"), 5)
    got = RECV.received("/ok/shape")[0]
    assert got["t"] - t0 < 1.0, "the first attempt must start at once"
    h = got["headers"]
    body = json.loads(got["body"])
    assert body["eventType"] == "bill.created" and body["data"]["billID"] == bill
    assert h["webhook-id"] == body["eventID"]
    assert abs(int(h["webhook-timestamp"]) - time.time()) < 30
    assert h["user-agent"].startswith("labhook/") and h["content-type"] == "application/json"
    assert h["authorization"] == "Bearer crm-token-1"
    assert verify(secret, h, got["body"])
    assert not verify("whsec_" + base64.b64encode(b"x" * 32).decode(), h, got["body"])
    ds = wait_deliveries(srv, c, sub, lambda ds: ds and ds[0]["status"] == "delivered")
    assert ds[0]["status"] == "delivered" and ds[0]["attemptCount"] == 1, ds
    a = ds[0]["attempts"][0]
    assert a["statusCode"] == 200 and "error" not in a and "received" in a["response"], a


def test_two_signatures_during_rotation(srv):
    c = srv.client()
    sub, old = subscribe(srv, c, "/ok/rotate")
    r = srv.post("/client/events/subscriptions/%s/secret/rotate" % sub, token=c["token"])
    new = r.json["signingSecret"]
    new_bill(srv, c)
    assert RECV.wait_for(lambda: RECV.received("/ok/rotate"), 5)
    got = RECV.received("/ok/rotate")[0]
    sigs = got["headers"]["webhook-signature"].split(" ")
    assert len(sigs) == 2 and all(s.startswith("v1,") for s in sigs), sigs
    assert verify(old, got["headers"], got["body"]) and verify(new, got["headers"], got["body"])


def test_500_retries_then_fails(srv):
    c = srv.client()
    sub, _ = subscribe(srv, c, "/fail/a")
    new_bill(srv, c)
    ds = wait_deliveries(srv, c, sub, lambda ds: ds and ds[0]["status"] == "failed")
    d = ds[0]
    assert d["status"] == "failed" and d["attemptCount"] == 3, d
    assert [a["error"] for a in d["attempts"]] == ["http_500"] * 3
    assert all(a["statusCode"] == 500 and "scripted" in a["response"] for a in d["attempts"])
    times = [r["t"] for r in RECV.received("/fail/a")]
    assert len(times) == 3
    gaps = [b - a for a, b in zip(times, times[1:])]
    # 200 ms then 400 ms, each +-20% jitter (plus scheduling slack).
    assert 0.15 < gaps[0] < 0.6 and 0.3 < gaps[1] < 0.9, gaps
    # Retry now: one more attempt, still failing.
    r = srv.post("/client/events/deliveries/%s/retry" % d["id"], token=c["token"])
    assert r.status == 200, r
    assert RECV.wait_for(lambda: len(RECV.received("/fail/a")) >= 4, 5)
    other = srv.client()
    expect_error(srv.post("/client/events/deliveries/%s/retry" % d["id"],
                          token=other["token"]), 404, "delivery_not_found")


def test_410_disables_subscription(srv):
    c = srv.client()
    sub, _ = subscribe(srv, c, "/gone/x")
    new_bill(srv, c)
    ds = wait_deliveries(srv, c, sub, lambda ds: ds and ds[0]["status"] == "failed")
    assert ds[0]["attemptCount"] == 1 and ds[0]["attempts"][0]["statusCode"] == 410, ds
    s = srv.get("/client/events/subscriptions/" + sub, token=c["token"]).json["subscription"]
    assert s["status"] == "disabled", s
    # The event is free for a new registration now.
    assert srv.post("/client/events/subscribe", {
        "labID": c["lab"], "events": ["bill.created"], "endpoint": RECV.url("/ok/after-gone"),
        "protocol": "https"}, token=c["token"]).status == 200


def test_429_retry_after_is_honoured(srv):
    c = srv.client()
    sub, _ = subscribe(srv, c, "/throttle/1")
    new_bill(srv, c)
    assert RECV.wait_for(lambda: len(RECV.received("/throttle/1")) >= 2, 6)
    t = [r["t"] for r in RECV.received("/throttle/1")]
    assert t[1] - t[0] >= 0.95, "Retry-After: 1 must delay the next attempt at least 1s"


def test_redirect_not_followed(srv):
    c = srv.client()
    sub, _ = subscribe(srv, c, "/redirect/x")
    new_bill(srv, c)
    ds = wait_deliveries(srv, c, sub, lambda ds: ds and ds[0]["status"] == "failed")
    assert [a["error"] for a in ds[0]["attempts"]] == ["redirect_301"] * 3, ds
    assert not RECV.received("/ok?"), "the redirect target must never be requested"


def test_timeouts_hangs_and_resets(srv):
    c = srv.client()
    cases = {"/slow/3": "timeout", "/hang/x": "timeout", "/reset/x": None}
    subs = {}
    for path in cases:
        c2 = srv.client()
        subs[path] = (c2, subscribe(srv, c2, path)[0])
        new_bill(srv, c2)
    for path, want in cases.items():
        c2, sub = subs[path]
        ds = wait_deliveries(srv, c2, sub, lambda ds: ds and ds[0]["status"] == "failed", 20)
        errs = [a["error"] for a in ds[0]["attempts"]]
        assert ds[0]["status"] == "failed" and len(errs) == 3, (path, ds)
        if want:
            assert errs == [want] * 3, (path, errs)
            assert all(900 <= a["durationMs"] < 3000 for a in ds[0]["attempts"]), ds
        else:
            assert all(e in ("reset", "empty_reply", "network") for e in errs), errs
    assert srv.get("/healthz").status == 200


def test_paused_holds_then_sends_in_order(srv):
    c = srv.client()
    sub, _ = subscribe(srv, c, "/ok/paused", events=["bill.created", "report.completed"])
    path = "/client/events/subscriptions/" + sub
    assert srv.request("PATCH", path, {"status": "paused"}, token=c["token"]).status == 200
    bill = new_bill(srv, c, tests=2)
    time.sleep(0.5)
    assert not RECV.received("/ok/paused")
    assert srv.request("PATCH", path, {"status": "active"}, token=c["token"]).status == 200
    assert RECV.wait_for(lambda: len(RECV.received("/ok/paused")) >= 1, 5)
    assert json.loads(RECV.received("/ok/paused")[0]["body"])["data"]["billID"] == bill


def test_recover_and_test_event(srv):
    c = srv.client()
    sub, _ = subscribe(srv, c, "/fail/recover")
    new_bill(srv, c)
    new_bill(srv, c)
    wait_deliveries(srv, c, sub, lambda ds: len(ds) == 2 and
                    all(d["status"] == "failed" for d in ds))
    n = len(RECV.received("/fail/recover"))
    r = srv.post("/client/events/subscriptions/%s/recover" % sub,
                 {"since": "2020-01-01T00:00:00Z"}, token=c["token"])
    assert r.status == 200 and r.json["queued"] == 2, r
    # The endpoint failed six times in a row, so it is backed off as a whole: one probe at
    # a time, spaced out. Both still go.
    assert RECV.wait_for(lambda: len(RECV.received("/fail/recover")) >= n + 2, 20)
    expect_error(srv.post("/client/events/subscriptions/%s/recover" % sub, {"since": "x"},
                          token=c["token"]), 400, "invalid_value", "since")
    sub2, secret = subscribe(srv, c, "/ok/test", events=["lead.created"])
    r = srv.post("/client/events/subscriptions/%s/test" % sub2, token=c["token"])
    assert r.status == 200, r
    assert RECV.wait_for(lambda: RECV.received("/ok/test"), 5)
    got = RECV.received("/ok/test")[0]
    assert json.loads(got["body"])["eventType"] == "webhook.test"
    assert verify(secret, got["headers"], got["body"])
    # Only that endpoint: the failing one saw nothing new.
    assert len(RECV.received("/fail/recover")) == n + 2


def test_ordering_per_bill_and_isolation(srv):
    c = srv.client()
    flaky, _ = subscribe(srv, c, "/flaky/0.4", events=["bill.created", "report.completed",
                                                       "bill.completed"])
    lab2 = srv.new_lab(c["id"], "healthy")
    c2 = dict(c, lab=lab2)
    healthy, _ = subscribe(srv, c2, "/ok/healthy", events=["bill.created"])
    key = srv.admin_key()
    bills = []
    for i in range(15):
        b = new_bill(srv, c, tests=3)
        bills.append(b)
        reps = [t["_id"] for t in srv.get("/client/bills/" + b, token=c["token"]).json[
            "bill"]["billData"]["testData"]]
        for rep in reps:
            srv.request("POST", "/lab/bills/%s/reports/%s/complete" % (b, rep), token=key)
    t0 = time.time()
    healthy_bills = [new_bill(srv, c2) for _ in range(30)]
    assert RECV.wait_for(lambda: len(RECV.received("/ok/healthy")) >= 30, 5), \
        "the healthy endpoint was held back"
    healthy_time = time.time() - t0
    # Every bill's events reach the flaky endpoint in commit order.
    want = {}
    db = srv.db()
    for b in bills:
        want[b] = [r[0] for r in db.execute("SELECT event_id FROM events WHERE entity_id = ?"
                                            " ORDER BY seq", (b,))]
    db.close()
    # Wait until no delivery to the flaky endpoint is pending any more.
    done = wait_deliveries(srv, c, flaky, lambda ds: len(ds) == 15 * 5 and
                           all(d["status"] != "pending" for d in ds), 60)
    assert len(done) == 75 and all(d["status"] != "pending" for d in done), \
        [d["status"] for d in done]
    delivered = {d["eventID"] for d in done if d["status"] == "delivered"}
    assert delivered, "with 40% failures and 3 tries, most events must get through"
    arrived_ok = [json.loads(r["body"]) for r in RECV.received("/flaky/") if r["status"] == 200]
    assert {b["eventID"] for b in arrived_ok} == delivered
    for b in bills:
        firsts = []
        for body in arrived_ok:
            if body["data"]["billID"] == b and body["eventID"] not in firsts:
                firsts.append(body["eventID"])
        # Events that failed for good drop out; the ones that arrive, arrive in order.
        assert firsts == [e for e in want[b] if e in firsts], (b, firsts, want[b])
    print("   healthy endpoint got 30 events in %.2fs beside the flaky one" % healthy_time)


def store_sql(srv, sql):
    """Runs a statement on the server's store itself, behind its back (SQLite's file, or
    its PostgreSQL database)."""
    if srv.pg_db:
        psql(pg_uri(srv.pg_db), sql)
        return
    db = sqlite3.connect(os.path.join(srv.data_dir, "labhook.db"), timeout=10)
    try:
        db.executescript(sql)
    finally:
        db.close()


def test_outcomes_the_store_refuses_are_sent_again(srv):
    """The store refuses to record outcomes (a trigger raises as a delivery's status
    changes: an error other than a full disk): the recorder tries three times, then the
    deliveries, delivered but still pending in the store, are read back and sent again
    until an outcome is recorded (they stayed pending until a restart). While the store
    keeps refusing, the tries are twice as far apart for each batch given up (they went
    out again every two seconds), and a batch queued meanwhile does not cut a wait short
    (another tenant's steady deliveries made every wait end within milliseconds)."""
    c = srv.client()
    sub, _ = subscribe(srv, c, "/ok/refused")
    other = srv.client()  # another account and lab: its bills do not reach sub
    subscribe(srv, other, "/ok/refused-other")
    if srv.pg_db:
        refuse = ("CREATE FUNCTION lh_test_refuse() RETURNS trigger LANGUAGE plpgsql AS"
                  " $$BEGIN RAISE EXCEPTION 'refused by the test'; END$$;"
                  " CREATE TRIGGER lh_test_refuse BEFORE UPDATE ON deliveries FOR EACH ROW"
                  " WHEN (NEW.status <> OLD.status) EXECUTE FUNCTION lh_test_refuse();")
        allow = "DROP TRIGGER lh_test_refuse ON deliveries; DROP FUNCTION lh_test_refuse();"
    else:
        refuse = ("CREATE TRIGGER lh_test_refuse BEFORE UPDATE ON deliveries"
                  " WHEN NEW.status <> OLD.status"
                  " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;")
        allow = "DROP TRIGGER lh_test_refuse;"
    store_sql(srv, refuse)
    try:
        def logged(what):
            return [datetime.datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
                    for line in srv.log_lines if what in line]
        bill = new_bill(srv, c)
        # Its outcome is the first batch the store refuses: the first given up, whose
        # delivery is then read back (the other tenant's outcomes come after it, else the
        # two given up below could be theirs and its own still waiting when the store
        # takes outcomes again: recorded then, and never sent again).
        deadline = time.time() + 10
        while time.time() < deadline and not logged("outcomes wait for the store"):
            time.sleep(0.02)
        assert RECV.received("/ok/refused"), "the delivery never went out"
        # The other tenant's bills keep outcomes coming while the first batch waits: a
        # batch queued about every 100 ms.
        for _ in range(30):
            new_bill(srv, other)
            time.sleep(0.1)
        deadline = time.time() + 20
        while time.time() < deadline and len(logged("cannot record outcomes")) < 2:
            time.sleep(0.1)
        given_up = logged("cannot record outcomes")
        assert len(given_up) >= 2, "the store's refusals were not reported"
        # Each try that fails (but a batch's last) is logged, then waited out in full.
        tries = logged("outcomes wait for the store")
        short = min((b - a).total_seconds() for a, b in zip(tries, tries[1:]))
        assert short >= 0.9, "a wait between tries was cut to %.2f s" % short
        # The first batch: tries 1 s apart; the second: 2 s apart.
        gap = (given_up[1] - given_up[0]).total_seconds()
        assert gap >= 3.5, "the second batch was given up %.1f s after the first" % gap
        assert RECV.received("/ok/refused"), "the delivery never went out"
        ds = deliveries(srv, c, sub)
        assert ds and ds[0]["status"] == "pending", ds
    finally:
        store_sql(srv, allow)
    done = wait_deliveries(srv, c, sub, lambda ds: ds and ds[0]["status"] == "delivered", 20)
    assert done and done[0]["status"] == "delivered", \
        "a delivery whose outcome the store refused stays %s" % (done and done[0]["status"])
    sent = [r for r in RECV.received("/ok/refused")
            if json.loads(r["body"])["data"]["billID"] == bill]
    assert len(sent) >= 2, "it was not sent again"
    print("   sent %d times, given up %.1f s apart: recorded once the store took outcomes"
          " again" % (len(sent), gap))


def test_durability_under_repeated_sigkill(_srv):
    srv = Server("--ca-file", RECV.ca, "--allow-net", "127.0.0.0/8", "--retry-schedule",
                 "0,100ms,200ms,300ms,400ms,500ms,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s").start()
    try:
        c = srv.client()
        subscribe(srv, c, "/flaky/0.3/dur", events=["bill.created"])
        c2 = dict(c, lab=srv.new_lab(c["id"], "second"))
        subscribe(srv, c2, "/ok/dur", events=["bill.created"])
        bills = []
        for round_ in range(4):
            for _ in range(60):
                bills.append(new_bill(srv, c))
                bills.append(new_bill(srv, c2))
            time.sleep(0.05)
            srv.proc.send_signal(signal.SIGKILL)
            srv.proc.wait()
            srv.start()
            c["token"] = c2["token"] = srv.token(c["id"], c["secret"])

        def arrived(path):
            return {json.loads(r["body"])["data"]["billID"] for r in RECV.received(path)
                    if r["status"] == 200}
        ok = RECV.wait_for(lambda: len(arrived("/flaky/0.3/dur")) + len(arrived("/ok/dur"))
                           >= len(bills), 60)
        got = arrived("/flaky/0.3/dur") | arrived("/ok/dur")
        missing = [b for b in bills if b not in got]
        assert ok and not missing, "%d events never arrived" % len(missing)
        ids = [r["headers"]["webhook-id"] for p in ("/flaky/0.3/dur", "/ok/dur")
               for r in RECV.received(p) if r["status"] == 200]
        dups = len(ids) - len(set(ids))
        print("   %d events through 4 SIGKILLs: all arrived; %d duplicate deliveries (%.1f%%)"
              % (len(bills), dups, 100.0 * dups / len(bills)))
        assert dups < len(bills) * 0.2, "duplicates should stay rare"
    finally:
        srv.cleanup()


def test_address_policy_at_delivery_time(_srv):
    """Registered while allowed, delivered after a restart without --allow-net: every
    attempt is refused before connecting and logged as blocked_address."""
    # "vm": a name the system resolver turns into loopback, from an /etc/hosts of this
    # labhook's own (curl answers "localhost" without asking the resolver).
    wrap, etc = private_hosts(["127.0.0.1 vm"])
    srv = Server("--allow-net", "0.0.0.0/0", "--allow-net", "::/0",
                 "--retry-schedule", "0", wrap=wrap).start()
    try:
        c = srv.client()
        hosts = ["127.0.0.1", "10.1.2.3", "169.254.169.254", "[::1]", "[::ffff:127.0.0.1]",
                 "localhost"] + (["vm"] if wrap else [])
        subs = []
        for h in hosts:
            lab = srv.new_lab(c["id"], h)
            r = srv.post("/client/events/subscribe", {
                "labID": lab, "events": ["bill.created"], "endpoint": "https://%s/x" % h,
                "protocol": "https"}, token=c["token"])
            assert r.status == 200, (h, r)
            subs.append((lab, r.json["subscription"]["id"]))
        srv.stop()
        srv.args = ["--retry-schedule", "0"]
        srv.start()
        c["token"] = srv.token(c["id"], c["secret"])
        for lab, _ in subs:
            assert srv.post("/client/billing/create", bill_body(lab),
                            token=c["token"]).status == 200
        for (lab, sub), h in zip(subs, hosts):
            ds = wait_deliveries(srv, c, sub, lambda ds: ds and ds[0]["status"] == "failed")
            errs = [a["error"] for a in ds[0]["attempts"]]
            assert errs == ["blocked_address"], (h, ds)
            assert any("blocked_address" in l and sub in l for l in srv.log_lines), h
    finally:
        srv.cleanup()
        if etc:
            shutil.rmtree(etc, ignore_errors=True)


def test_failing_for_the_configured_span_disables(_srv):
    srv = Server(*FAST[:4], "--retry-schedule", "0,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms",
                 "--disable-after", "2s", "--disable-min-span", "0").start()
    try:
        c = srv.client()
        sub, _ = subscribe(srv, c, "/fail/span")
        new_bill(srv, c)
        deadline = time.time() + 15
        while time.time() < deadline:
            s = srv.get("/client/events/subscriptions/" + sub, token=c["token"]).json
            if s["subscription"]["status"] == "disabled":
                break
            time.sleep(0.1)
        assert s["subscription"]["status"] == "disabled", s
        times = [r["t"] for r in RECV.received("/fail/span")]
        assert times[-1] - times[0] >= 1.0, times  # whole seconds: at least 2s - 1s
    finally:
        srv.cleanup()


def test_per_endpoint_cap(_srv):
    srv = Server(*FAST, "--max-in-flight-per-endpoint", "2").start()
    try:
        c = srv.client()
        subscribe(srv, c, "/slow/0.5/cap")
        for _ in range(6):
            new_bill(srv, c)  # six bills: six lanes that could all go at once
        assert RECV.wait_for(lambda: len(RECV.received("/slow/0.5/cap")) >= 6, 10)
        t = sorted(r["t"] for r in RECV.received("/slow/0.5/cap"))
        most = max(sum(1 for x in t if a <= x < a + 0.4) for a in t)
        assert most <= 2, "at most 2 requests in flight to one endpoint: %s" % t
    finally:
        srv.cleanup()


def test_small_window_pages_the_backlog(_srv):
    """With room for 16 deliveries in memory, 150 pending ones (a paused webhook, then a
    restart) still all go, each bill's events in order."""
    srv = Server(*FAST, "--delivery-window", "16", "--timeout", "5s").start()
    try:
        c = srv.client()
        sub, _ = subscribe(srv, c, "/ok/window", events=["bill.created", "bill.deleted"])
        path = "/client/events/subscriptions/" + sub
        assert srv.request("PATCH", path, {"status": "paused"}, token=c["token"]).status == 200
        key = srv.admin_key()
        bills = [new_bill(srv, c) for _ in range(75)]
        for b in bills:
            assert srv.request("DELETE", "/lab/bills/" + b, token=key).status == 200
        srv.stop()
        srv.start()  # 150 pending, 16 at a time
        c["token"] = srv.token(c["id"], c["secret"])
        assert srv.request("PATCH", path, {"status": "active"}, token=c["token"]).status == 200
        ds = wait_deliveries(srv, c, sub, lambda ds: len(ds) == 150 and
                             all(d["status"] == "delivered" for d in ds), 60)
        assert sorted(set(d["status"] for d in ds)) == ["delivered"] and len(ds) == 150, \
            [d["status"] for d in ds]
        seen = {}
        for r in RECV.received("/ok/window"):
            if r["status"] != 200:
                continue
            body = json.loads(r["body"])
            seen.setdefault(body["data"]["billID"], []).append(body["eventType"])
        assert set(seen) == set(bills)
        for b, kinds in seen.items():
            assert kinds[:2] == ["bill.created", "bill.deleted"], (b, kinds)
    finally:
        srv.cleanup()


def test_resume_with_more_than_the_window(_srv):
    """A subscription resumed with 300 bills' events waiting and room for 16 deliveries in
    memory (the backlog comes back from disk in pages, in order): while it comes back from
    disk, the bills' newer events (their reports completed right after the resume) must not
    overtake it. Each bill's events arrive in order, all of them."""
    srv = Server(*FAST, "--delivery-window", "16").start()
    try:
        c = srv.client()
        sub, _ = subscribe(srv, c, "/ok/resume", events=["bill.created", "report.completed",
                                                          "bill.completed"])
        path = "/client/events/subscriptions/" + sub
        assert srv.request("PATCH", path, {"status": "paused"}, token=c["token"]).status == 200
        key = srv.admin_key()
        bills = [new_bill(srv, c) for _ in range(300)]
        reports = {b: srv.get("/client/bills/" + b, token=c["token"]).json[
            "bill"]["billData"]["testData"][0]["_id"] for b in bills}
        t = time.time()
        assert srv.request("PATCH", path, {"status": "active"}, token=c["token"]).status == 200

        def complete(part):
            for b in part:
                r = srv.request("POST", "/lab/bills/%s/reports/%s/complete" % (b, reports[b]),
                                token=key)
                assert r.status == 200, r
        ts = [threading.Thread(target=complete, args=(bills[i::6],)) for i in range(6)]
        [x.start() for x in ts]
        [x.join() for x in ts]
        assert RECV.wait_for(lambda: len([r for r in RECV.received("/ok/resume")
                                          if r["status"] == 200]) >= 900, 60)
        took = time.time() - t
        seen = {}
        for r in RECV.received("/ok/resume"):
            if r["status"] == 200:
                body = json.loads(r["body"])
                seen.setdefault(body["data"]["billID"], []).append(body["eventType"])
        assert set(seen) == set(bills)
        for b, kinds in seen.items():
            assert kinds == ["bill.created", "report.completed", "bill.completed"], (b, kinds)
        print("   900 deliveries through a 16-delivery window in %.2f s" % took)
    finally:
        srv.cleanup()


def test_graceful_stop_keeps_in_flight(_srv):
    srv = Server(*FAST[:-4], "--timeout", "5s").start()
    try:
        c = srv.client()
        sub, _ = subscribe(srv, c, "/slow/1")
        new_bill(srv, c)
        assert RECV.wait_for(lambda: RECV.received("/slow/1"), 5)
        assert srv.stop(signal.SIGTERM) == 0  # waits for the in-flight attempt
        srv.start()
        c["token"] = srv.token(c["id"], c["secret"])
        ds = deliveries(srv, c, sub)
        assert ds[0]["status"] == "delivered", ds
    finally:
        srv.cleanup()


def test_stop_starts_nothing_new(_srv):
    """A stop lets the attempts in flight finish and starts no other: lanes waiting under
    the endpoint's cap stay pending in the store (they once kept starting as each attempt
    finished, so a stop drained the whole backlog, or gave up at the grace period with
    attempts in flight). After the restart every bill arrives."""
    cap = 4
    srv = Server(*FAST[:-4], "--timeout", "5s", "--max-in-flight-per-endpoint",
                 str(cap)).start()
    try:
        c = srv.client()
        path = "/slow/0.3/stop"
        subscribe(srv, c, path)
        bills = {new_bill(srv, c) for _ in range(60)}  # 15 rounds of 0.3 s under the cap
        assert RECV.wait_for(lambda: len(RECV.received(path)) >= cap, 10)
        before = len(RECV.received(path))
        assert srv.stop(signal.SIGTERM) == 0
        after = len(RECV.received(path))
        assert after <= before + cap, \
            "%d attempts started after SIGTERM (at most %d, racing the signal)" % (after - before, cap)
        srv.start()

        def arrived():
            return {json.loads(r["body"])["data"]["billID"] for r in RECV.received(path)}
        assert RECV.wait_for(lambda: bills <= arrived(), 30), len(bills - arrived())
    finally:
        srv.cleanup()


def test_restart_against_a_receiver_still_down(_srv):
    """A restart sends its first attempts at once, and against a receiver still down they
    all fail within a millisecond: the endpoint is backed off for a second, not a minute
    (those started in the millisecond the back-off began counted as failed probes, each
    doubling the pause, up to 60 s). The receiver comes up right after the restart; the
    first webhook follows within a few seconds (it came after 16 or 60 s). 300 bills: each
    burst (a cap's worth, on PostgreSQL also when the lease is taken) is tried once and
    then waits the hour of this schedule, and some must be left for the restart."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing listens there until `late` starts
    srv = Server(*FAST[:4], "--retry-schedule", "0,1h,1h", "--timeout", "1s",
                 "--connect-timeout", "1s", "--max-in-flight-per-endpoint", "64").start()
    late = None
    try:
        c = srv.client()
        r = srv.post("/client/events/subscribe",
                     {"labID": c["lab"], "events": ["bill.created"], "protocol": "https",
                      "endpoint": "https://127.0.0.1:%d/late" % port}, token=c["token"])
        assert r.status == 200, r
        sub = r.json["subscription"]["id"]
        for _ in range(300):
            new_bill(srv, c)
        # Tried while down (each then waits an hour); the rest wait behind the back-off.
        assert wait_deliveries(srv, c, sub, lambda ds: any(d["attemptCount"] for d in ds))
        assert srv.stop() == 0
        srv.start()
        time.sleep(0.5)  # its first attempts have failed by now
        late = Receiver(port=port, certs_of=RECV)
        t0 = time.time()
        if not late.wait_for(lambda: late.received(), 70):
            ds = deliveries(srv, c, sub)
            raise AssertionError("no webhook within 70 s: %r" % sorted(
                {(d["status"], d["attemptCount"], d.get("nextAttemptAt")) for d in ds})[:10])
        first = min(x["t"] for x in late.received()) - t0
        assert first < 5, "the first webhook came %.1f s after the receiver was up" % first
    finally:
        if late:
            late.close()
        srv.cleanup()


if __name__ == "__main__":
    try:
        run([test_success_request_shape_and_signature, test_two_signatures_during_rotation,
             test_500_retries_then_fails, test_410_disables_subscription,
             test_429_retry_after_is_honoured, test_redirect_not_followed,
             test_timeouts_hangs_and_resets, test_paused_holds_then_sends_in_order,
             test_recover_and_test_event, test_ordering_per_bill_and_isolation,
             test_outcomes_the_store_refuses_are_sent_again,
             test_durability_under_repeated_sigkill, test_address_policy_at_delivery_time,
             test_failing_for_the_configured_span_disables, test_per_endpoint_cap,
             test_small_window_pages_the_backlog, test_resume_with_more_than_the_window,
             test_graceful_stop_keeps_in_flight, test_stop_starts_nothing_new,
             test_restart_against_a_receiver_still_down],
            server_args=FAST)
    finally:
        RECV.close()
