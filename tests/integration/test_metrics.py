"""GET /metrics (issue 16): the Prometheus text exposition. After a known sequence (events
of known types, deliveries that succeed, fail with 500 and hit a blocked address) the
counters moved by exactly what happened; the admin key guards the main listener, the
metrics-listen listener needs none and serves nothing else; route labels are patterns,
never ids; and `promtool check metrics` accepts the output."""
import re
import shutil
import subprocess
import time

from harness import Server, expect_error, run
from receiver import Receiver

RECV = Receiver()
ARGS = ["--ca-file", RECV.ca, "--allow-net", "127.0.0.0/8", "--retry-schedule",
        "0,200ms,400ms", "--timeout", "2s", "--connect-timeout", "1s",
        "--metrics-listen", "127.0.0.1:0"]
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
# A label value that is an id: a type prefix and a ULID, or the receiver's paths.
ID_LIKE = re.compile(r"_[0-9A-HJKMNP-TV-Z]{26}|sub_|bill_|lab_|cl_")


def parse(text):
    """{'name{labels}': value} of every sample; the exposition's own syntax is promtool's
    to check."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        assert series not in out, "series twice: " + series
        out[series] = float(value)
    return out


def scrape(srv):
    r = srv.get("/metrics", token=srv.admin_key())
    assert r.status == 200, r
    assert r.headers["content-type"] == TEXT_FORMAT, r.headers
    return parse(r.raw), r.raw


def metrics_port(srv):
    for line in srv.log_lines:
        m = re.search(r" metrics_listen=[^ ]*:(\d+) ready", line)
        if m:
            return int(m.group(1))
    raise AssertionError("no metrics_listen in the ready line")


def promtool_check(text):
    tool = shutil.which("promtool")
    assert tool, "promtool is needed (Debian package prometheus; scripts/deps.sh --test)"
    p = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, "promtool check metrics:\n" + p.stdout + p.stderr


def bill_body(lab):
    return {"labID": lab, "integrator_id": "INT-1",
            "patient_details": {"first_name": "A", "gender": "male", "age": 3,
                                "age_type": "year"},
            "unmapped_tests": ["T0"]}


def subscribe(srv, c, lab, endpoint, events):
    r = srv.post("/client/events/subscribe", {"labID": lab, "events": events,
                                              "endpoint": endpoint, "protocol": "https"},
                 token=c["token"])
    assert r.status == 200, r
    return r.json["subscription"]["id"]


def test_counts_what_happened_exactly(_srv):
    # The blocked endpoint is registered while 10.0.0.0/8 is allowed, then the service
    # restarts without it: every attempt to it is refused before connecting.
    srv = Server(*ARGS, "--allow-net", "10.0.0.0/8").start()
    try:
        c = srv.client()
        lab_ok, lab_fail = c["lab"], srv.new_lab(c["id"], "fail")
        lab_blocked, lab_quiet = srv.new_lab(c["id"], "blocked"), srv.new_lab(c["id"], "quiet")
        sub_ok = subscribe(srv, c, lab_ok, RECV.url("/ok/metrics"),
                           ["bill.created", "bill.deleted"])
        subscribe(srv, c, lab_fail, RECV.url("/fail/metrics"), ["bill.created"])
        subscribe(srv, c, lab_blocked, "https://10.9.9.9/hook", ["bill.created"])
        srv.stop()
        srv.args = list(ARGS)
        srv.start()
        c["token"] = srv.token(c["id"], c["secret"])
        before, _ = scrape(srv)
        assert before['labhook_delivery_attempts_total{outcome="success"}'] == 0, \
            "counters start at zero with the process"

        bills = []
        for lab, n in ((lab_ok, 3), (lab_fail, 2), (lab_blocked, 1), (lab_quiet, 1)):
            for _ in range(n):
                r = srv.post("/client/billing/create", bill_body(lab), token=c["token"])
                assert r.status == 200, r
                bills.append((lab, r.json["billID"]))
        deleted = bills[0][1]
        assert srv.request("DELETE", "/lab/bills/" + deleted,
                           token=srv.admin_key()).status == 200
        assert srv.get("/client/events/subscriptions/" + sub_ok, token=c["token"]).status == 200
        expect_error(srv.get("/client/events/subscriptions/sub_01JZZZZZZZZZZZZZZZZZZZZZZZ",
                             token=c["token"]), 404)
        expect_error(srv.get("/no/such/path/" + deleted), 404)

        # Everything settles: 4 successes (3 bill.created, 1 bill.deleted), 2 x 3 answers
        # of 500 and 1 x 3 refusals (the schedule has 3 attempts), nothing pending.
        want_attempts = 4 + 6 + 3
        deadline = time.time() + 60
        while True:
            after, text = scrape(srv)
            done = after["labhook_delivery_attempt_duration_seconds_count"] - \
                before["labhook_delivery_attempt_duration_seconds_count"]
            if (done >= want_attempts and after["labhook_deliveries_pending"] == 0) \
                    or time.time() > deadline:
                break
            time.sleep(0.2)

        def moved(series):
            return after.get(series, 0) - before.get(series, 0)

        events = {t: moved('labhook_events_total{type="%s"}' % t) for t in
                  ("bill.created", "bill.completed", "bill.deleted", "report.completed",
                   "lead.created", "booking.created")}
        assert events == {"bill.created": 7, "bill.completed": 0, "bill.deleted": 1,
                          "report.completed": 0, "lead.created": 0, "booking.created": 0}, events
        outcomes = {o: moved('labhook_delivery_attempts_total{outcome="%s"}' % o) for o in
                    ("success", "http_3xx", "http_4xx", "http_5xx", "timeout", "connect",
                     "tls", "dns", "blocked_address", "other")}
        assert outcomes == {"success": 4, "http_3xx": 0, "http_4xx": 0, "http_5xx": 6,
                            "timeout": 0, "connect": 0, "tls": 0, "dns": 0,
                            "blocked_address": 3, "other": 0}, outcomes
        assert moved("labhook_delivery_attempt_duration_seconds_count") == want_attempts
        assert moved('labhook_delivery_attempt_duration_seconds_bucket{le="+Inf"}') == \
            want_attempts
        assert moved("labhook_deliveries_failed_total") == 3  # 2 failing, 1 blocked
        assert moved("labhook_delivery_lag_seconds_count") == 4
        assert after["labhook_delivery_lag_seconds_sum"] > 0
        assert after["labhook_deliveries_pending"] == 0
        assert after['labhook_subscriptions{status="active"}'] == 3
        assert after['labhook_subscriptions{status="paused"}'] == 0
        assert after['labhook_subscriptions{status="disabled"}'] == 0
        assert after["labhook_store_bytes"] > 0

        # Requests, by route pattern: 7 bills, 1 deletion, 2 lookups of one pattern.
        def req(route, method, code):
            return moved('labhook_http_requests_total{route="%s",method="%s",code="%s"}'
                         % (route, method, code))
        assert req("/client/billing/create", "POST", "200") == 7
        assert req("/lab/bills/{id}", "DELETE", "200") == 1
        assert req("/client/events/subscriptions/{id}", "GET", "200") == 1
        assert req("/client/events/subscriptions/{id}", "GET", "404") == 1
        assert req("unmatched", "GET", "404") == 1
        assert moved('labhook_http_request_duration_seconds_count{route="/client/billing/create"}') == 7
        for series in after:
            for m in re.finditer(r'(route|le|type|outcome|status|code|method|version)="([^"]*)"',
                                 series):
                assert not ID_LIKE.search(m.group(2)), "an id in a label: " + series
        assert not any("sub_" in s or "bill_" in s for s in after), "no ids as labels"

        # The group commit: every batch counted once in both histograms; the 8 event
        # jobs and the recorded outcomes are among the jobs.
        commits = moved("labhook_store_commit_duration_seconds_count")
        assert commits >= 1 and moved("labhook_store_batch_jobs_count") == commits
        assert moved("labhook_store_batch_jobs_sum") >= 8
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                     "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                     "process_start_time_seconds"):
            assert after.get(name, 0) > 0, name
        assert abs(after["process_start_time_seconds"] - time.time()) < 600
        assert after['labhook_build_info{version="0.1.0"}'] == 1
        promtool_check(text)
        print("   moved: events %s, attempts %s" % (
            {k: v for k, v in events.items() if v}, {k: v for k, v in outcomes.items() if v}))
    finally:
        srv.cleanup()


def test_admin_key_guards_the_main_listener(srv):
    before, _ = scrape(srv)
    r = srv.get("/metrics")
    expect_error(r, 401, "unauthorized")
    assert r.headers.get("www-authenticate") == "Bearer"
    expect_error(srv.get("/metrics", token="not-the-admin-key"), 401, "unauthorized")
    expect_error(srv.get("/metrics", token=srv.admin_key() + "x"), 401, "unauthorized")
    key = 'labhook_http_requests_total{route="/metrics",method="GET",code="401"}'
    # A request is counted when libmicrohttpd reports it complete, which may come just
    # after its answer reached us: wait (briefly) for the third, then it must be exactly 3.
    deadline = time.time() + 5
    while True:
        after, text = scrape(srv)
        if after.get(key, 0) - before.get(key, 0) >= 3 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert after[key] - before.get(key, 0) == 3, text[:2000]
    promtool_check(text)


def test_metrics_listener_serves_only_metrics(srv):
    port = metrics_port(srv)
    assert port != srv.port
    main_port = srv.port
    try:
        srv.port = port
        r = srv.get("/metrics")
        assert r.status == 200 and r.headers["content-type"] == TEXT_FORMAT, r
        assert "labhook_build_info" in r.raw
        promtool_check(r.raw)
        # Nothing else is here, not even with the admin key.
        expect_error(srv.get("/healthz"), 404, "not_found")
        expect_error(srv.get("/admin/accounts", token=srv.admin_key()), 404, "not_found")
        expect_error(srv.post("/metrics", {}), 405, "method_not_allowed")
        assert srv.request("HEAD", "/metrics").status == 200
    finally:
        srv.port = main_port


def test_off_unless_configured(_srv):
    srv = Server().start()
    try:
        ready = [l for l in srv.log_lines if re.search(r" ready$", l) and "listen=" in l]
        assert ready and "metrics_listen" not in ready[-1], ready
        assert srv.get("/metrics", token=srv.admin_key()).status == 200
    finally:
        srv.cleanup()


if __name__ == "__main__":
    try:
        run([test_counts_what_happened_exactly, test_admin_key_guards_the_main_listener,
             test_metrics_listener_serves_only_metrics, test_off_unless_configured],
            server_args=ARGS)
    finally:
        RECV.close()
