#!/usr/bin/env python3
"""labhook benchmarks: the orchestrator behind `make -C bench` (Python standard library only).

Scenarios (argument): `main` (ceiling + end-to-end + paced latency), `backlog` (a large
pending backlog across a restart, then its drain), `all` (both). Every process it starts is
registered in PROCS and stopped by `cleanup()` on any exit: normal, exception, SIGINT,
SIGTERM, SIGHUP; children also get SIGTERM if this process dies (PR_SET_PDEATHSIG). Every
wait has a timeout. Only 127.0.0.1 is ever contacted. Expects run.sh to have built
build-bench/labhook and build-bench/loadgen. Settings are environment variables (SETTINGS).
"""
import ctypes
import datetime
import json
import math
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
BUILD = os.path.join(ROOT, "build-bench")
LABHOOK = os.path.join(BUILD, "labhook")
LOADGEN = os.path.join(BUILD, "loadgen")
RESULTS = os.path.join(BENCH, "results")

# name: (default, help). Read from the environment as integers.
SETTINGS = {
    "CEIL_N": (50000, "ceiling: requests straight to nginx"),
    "CEIL_C": (16, "ceiling: concurrent connections (labhook's per-endpoint cap is 16)"),
    "N": (30000, "end to end: bills created at full speed"),
    "C": (64, "end to end: concurrent API connections"),
    "RATE": (1000, "paced run: offered bills per second"),
    "RATE_S": (10, "paced run: seconds"),
    "ROUNDS": (2, "end to end: rounds of delivery alone, each followed by a raw-client run"),
    "BACKLOG_N": (1000000, "backlog: pending deliveries to build up"),
    "BACKLOG_CHUNK": (100000, "backlog: bills per loadgen run (access tokens last 10 min)"),
    "DELIVER_TIMEOUT": (600, "seconds to wait for nginx to log every webhook of a run"),
    "DRAIN_TIMEOUT": (3600, "backlog: seconds to wait for the drain"),
    "KEEP": (0, "1 keeps the temporary directory (logs, databases) for inspection"),
}
CFG = {k: int(os.environ.get(k, d)) for k, (d, _) in SETTINGS.items()}

PROCS = []  # every Popen started here, stopped in reverse order by cleanup()


class BenchError(Exception):
    pass


def log(msg):
    print("   " + msg, file=sys.stderr, flush=True)


def step(msg):
    print("== " + msg, file=sys.stderr, flush=True)


def wait_for(what, pred, timeout, every=0.05):
    """Polls pred() until it returns a true value, which is returned; BenchError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise BenchError("timed out after %ds waiting for %s" % (timeout, what))
        time.sleep(every)


# --- processes -------------------------------------------------------------------------

def _die_with_parent():
    # Runs in the child between fork and exec: SIGTERM it when this orchestrator dies, even
    # by SIGKILL, so nothing is left listening. 1 = PR_SET_PDEATHSIG.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def spawn(args, stdout, stderr):
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                         start_new_session=True, preexec_fn=_die_with_parent)
    PROCS.append(p)
    return p


def stop(p, grace=30):
    """SIGTERM, then SIGKILL after grace seconds; returns (seconds to exit, exit code)."""
    if p.poll() is None:
        t = time.monotonic()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            log("pid %d ignored SIGTERM for %ds: SIGKILL" % (p.pid, grace))
            p.kill()
            p.wait()
        took = time.monotonic() - t
    else:
        took = 0.0
    if p in PROCS:
        PROCS.remove(p)
    return took, p.returncode


def cleanup():
    while PROCS:
        stop(PROCS[-1], grace=10)


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)  # unwinds through the finally that calls cleanup()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def cpu_threads(pid):
    """CPU seconds (user + system) used so far by each thread of pid, busiest first."""
    out = []
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue  # the thread ended
        out.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return sorted(out, reverse=True)


def cpu_use(before, after, seconds):
    """Cores used by the process and by its busiest thread between two cpu_threads()."""
    busiest = max((a - b for a, b in zip(after, before)), default=0)
    return {"cores": round((sum(after) - sum(before)) / seconds, 2),
            "busiest_thread_cores": round(busiest / seconds, 2)}


def rss_kb(pid, field="VmHWM"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


# --- HTTP (urllib, 127.0.0.1 only) -----------------------------------------------------

def http_json(method, url, body=None, token=None, timeout=10):
    """Returns (status, parsed JSON or None)."""
    req = urllib.request.Request(url, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


# --- test CA and nginx -----------------------------------------------------------------

# The same throwaway CA and server certificate for 127.0.0.1 as the integration tests use.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
from receiver import make_ca  # noqa: E402


NGINX_CONF = """\
# Generated by bench.py: one worker, HTTPS with keep-alive, answers every request with 200.
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format hook '$msec $http_webhook_id';
    access_log {prefix}/access.log hook buffer=256k flush=1s;
    keepalive_timeout 120s;
    keepalive_requests 100000000;
    client_body_buffer_size 64k;
    default_type application/json;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ return 200 '{{"ok":true}}'; }}
    }}
}}
"""


class Nginx:
    """An nginx with its own prefix directory; its access log is read as arrivals."""

    def __init__(self, tmp, name, port, cert, key):
        self.prefix = os.path.join(tmp, name)
        self.port = port
        os.makedirs(self.prefix)
        self.conf = os.path.join(self.prefix, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(NGINX_CONF.format(prefix=self.prefix, port=port, cert=cert, key=key))
        self.access_log = os.path.join(self.prefix, "access.log")
        self.proc = None
        self.arrivals = {}  # webhook-id -> first arrival (Unix seconds, ms resolution)
        self.lines = 0
        self._offset = 0

    def start(self):
        err = open(os.path.join(self.prefix, "stderr.log"), "ab")
        self.proc = spawn(["nginx", "-p", self.prefix, "-c", self.conf,
                           "-e", os.path.join(self.prefix, "error.log")], err, err)
        wait_for("nginx on port %d" % self.port,
                 lambda: self.proc.poll() is not None or port_open(self.port), 10)
        if self.proc.poll() is not None:
            raise BenchError("nginx exited: see %s/error.log" % self.prefix)

    def stop(self):
        if self.proc:
            stop(self.proc)  # SIGTERM: fast shutdown, the log buffer is flushed
            self.proc = None

    def read_log(self):
        """Reads the complete lines added since the last call; returns how many evt_ ids."""
        if not os.path.exists(self.access_log):
            return len(self.arrivals)
        with open(self.access_log, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].decode().splitlines():
            self.lines += 1
            t, _, wid = line.partition(" ")
            if wid.startswith("evt_") and wid not in self.arrivals:
                self.arrivals[wid] = float(t)
        return len(self.arrivals)

    def wait_arrivals(self, n, timeout):
        """Waits until n distinct event ids were logged; returns the seconds waited."""
        t = time.monotonic()
        wait_for("%d webhooks at nginx (have %d)" % (n, len(self.arrivals)),
                 lambda: self.read_log() >= n, timeout, every=0.25)
        return time.monotonic() - t


# --- labhook ---------------------------------------------------------------------------

class Labhook:
    def __init__(self, tmp, name, ca, extra=()):
        self.dir = os.path.join(tmp, name)
        self.data = os.path.join(self.dir, "data")
        os.makedirs(self.dir)
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self.args = [LABHOOK, "serve", "--data-dir", self.data,
                     "--listen", "127.0.0.1:%d" % self.port, "--ca-file", ca,
                     "--allow-net", "127.0.0.0/8", "--log-level", "warn"] + list(extra)
        self.proc = None
        self.creds = None
        self.starts = 0

    def start(self, demo):
        """Starts labhook; returns the seconds until /healthz answered 200. With demo, also
        reads the catch-all demo account (clientID, clientSecret, labID) from stdout."""
        self.starts += 1
        out_path = os.path.join(self.dir, "stdout.%d" % self.starts)
        out = open(out_path, "wb")
        err = open(os.path.join(self.dir, "labhook.log"), "ab")
        t = time.monotonic()
        self.proc = spawn(self.args + (["--demo"] if demo else []), out, err)

        def healthy():
            if self.proc.poll() is not None:
                raise BenchError("labhook exited with %d: see %s/labhook.log"
                                 % (self.proc.returncode, self.dir))
            try:
                return http_json("GET", self.base + "/healthz", timeout=2)[0] == 200
            except OSError:
                return False
        wait_for("labhook /healthz", healthy, 120, every=0.01)
        ready = time.monotonic() - t
        if demo:
            def demo_printed():
                with open(out_path) as f:
                    text = f.read()
                return text if "Admin key:" in text else None
            text = wait_for("the demo credentials on stdout", demo_printed, 10)
            kv = {}
            for word in text.split():
                k, _, v = word.partition("=")
                kv.setdefault(k, v)  # the first account printed is the catch-all one
            self.creds = {k: kv[k] for k in ("clientID", "clientSecret", "labID")}
        return ready

    def stop(self):
        took, rc = stop(self.proc)
        self.proc = None
        return took, rc

    def token(self):
        st, j = http_json("POST", self.base + "/client/auth/token",
                          {"clientID": self.creds["clientID"],
                           "clientSecret": self.creds["clientSecret"]})
        if st != 200 or not j or "authToken" not in j:
            raise BenchError("token: HTTP %d %s" % (st, j))
        return j["authToken"]

    def set_status(self, sub_id, status):
        st, j = http_json("PATCH", self.base + "/client/events/subscriptions/" + sub_id,
                          {"status": status}, token=self.token())
        if st != 200:
            raise BenchError("pause/resume: HTTP %d %s" % (st, j))

    def subscribe(self, endpoint):
        st, j = http_json("POST", self.base + "/client/events/subscribe",
                          {"labID": self.creds["labID"], "events": ["bill.created"],
                           "endpoint": endpoint, "protocol": "https"}, token=self.token())
        if st != 200:
            raise BenchError("subscribe: HTTP %d %s" % (st, j))
        return j

    def db(self):
        return sqlite3.connect(os.path.join(self.data, "labhook.db"), timeout=10)

    def query(self, sql, args=()):
        with self.db() as c:
            return c.execute(sql, args).fetchall()

    def bill_body(self, path):
        with open(path, "w") as f:
            json.dump({"labID": self.creds["labID"], "integrator_id": "BENCH",
                       "patient_details": {"first_name": "A", "gender": "male", "age": 30,
                                           "age_type": "year"},
                       "unmapped_tests": ["CBC"]}, f)
        return path


# --- the load generator ----------------------------------------------------------------

def profile(pid, phase):
    """With PERF_OUT=<dir> set: `perf record` of labhook during the phase, into
    <dir>/<phase>.perf.data (read with perf report -i). Returns the process or None; send
    it SIGINT to end the recording (perf writes its data then)."""
    out = os.environ.get("PERF_OUT")
    if not out:
        return None
    os.makedirs(out, exist_ok=True)
    return spawn(["perf", "record", "-q", "-F", "999", "-g", "-p", str(pid), "-o",
                  os.path.join(out, phase + ".perf.data")],
                 subprocess.DEVNULL, subprocess.DEVNULL)


def loadgen(url, body_file, count, conc, rate=0, cacert=None, headers=(), out=None):
    """Runs bench/loadgen.c; returns its summary line as a dict of floats."""
    args = [LOADGEN, "--url", url, "--body-file", body_file, "--count", str(count),
            "--concurrency", str(conc)]
    if rate:
        args += ["--rate", str(rate)]
    if cacert:
        args += ["--cacert", cacert]
    for h in headers:
        args += ["--header", h]
    if out:
        args += ["--out", out]
    # Generous: 50 requests/s would still finish.
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=60 + count / 50)
    except subprocess.TimeoutExpired:
        raise BenchError("loadgen: %d requests took over %ds" % (count, 60 + count / 50))
    if r.returncode != 0 or not r.stdout.strip():
        raise BenchError("loadgen failed (%d): %s %s" % (r.returncode, r.stdout.strip(),
                                                         r.stderr.strip()))
    return {k: float(v) for k, v in (w.split("=") for w in r.stdout.split())}


def percentile(sorted_values, p):
    """Nearest-rank percentile (p in 0..100), as loadgen.c computes it."""
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def ceiling_payload(path):
    """About 1 KB of bill.created-shaped JSON, the size of a bill with a few tests."""
    tests = [{"_id": "rep_01M8DS514XZ82RM5Z9HD6FPA%02d" % i, "name": "Test panel %d" % i,
              "status": "pending"} for i in range(10)]
    body = {"eventID": "evt_01M8DS514YE8DZC2CP4D3192H8",
            "labID": "lab_01M8DS514QEXB406XPRBA33MYV", "eventType": "bill.created",
            "eventTime": 1795758916,
            "data": {"billID": "bill_01M8DS514X1NDW1VADGBNRHB3A", "integratorID": "BENCH",
                     "billData": {"status": "pending", "testData": tests}}}
    with open(path, "w") as f:
        json.dump(body, f)
    return os.path.getsize(path)


# Headers shaped like labhook's, so nginx parses as much per request in both runs.
CEILING_HEADERS = ("webhook-id: ceiling", "webhook-timestamp: 1795758916",
                   "webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                   "User-Agent: labhook/bench")


# --- scenarios -------------------------------------------------------------------------

def delivery_summary(lh):
    """Counts deliveries by status and failed attempts by error class: what went wrong."""
    st = dict(lh.query("SELECT status, count(*) FROM deliveries GROUP BY status"))
    errs = dict(lh.query("SELECT error, count(*) FROM attempts WHERE error != '' "
                         "GROUP BY error"))
    names = {0: "pending", 1: "delivered", 2: "failed", 3: "cancelled"}
    return {"deliveries": {names.get(k, str(k)): v for k, v in st.items()},
            "failed_attempts": errs}


def scenario_main(tmp, ca, cert, key):
    r = {"settings": {k: CFG[k] for k in ("CEIL_N", "CEIL_C", "N", "C", "RATE", "RATE_S",
                                          "ROUNDS")}}
    ng = Nginx(tmp, "nginx", free_port(), cert, key)
    ng.start()
    hook_url = "https://127.0.0.1:%d/hook" % ng.port

    payload = os.path.join(tmp, "ceiling.json")
    size = ceiling_payload(payload)
    ceilings = []

    def ceiling(when):
        """The raw client against the same nginx; run before and after labhook's runs,
        so the ratio is taken against the best it reached in this run."""
        step("ceiling (%s): %d POSTs of ~1 KB straight to nginx over HTTPS, %d connections"
             % (when, CFG["CEIL_N"], CFG["CEIL_C"]))
        loadgen(hook_url, payload, min(2000, CFG["CEIL_N"]), CFG["CEIL_C"], cacert=ca,
                headers=CEILING_HEADERS)  # warm-up: handshakes, nginx's first allocations
        g = loadgen(hook_url, payload, CFG["CEIL_N"], CFG["CEIL_C"], cacert=ca,
                    headers=CEILING_HEADERS)
        ceilings.append({"when": when, "dps": g["rps"], "p50_ms": g["p50_ms"],
                         "p99_ms": g["p99_ms"]})
        log("ceiling: %.0f requests/s" % g["rps"])

    ceiling("before")

    step("both at once: %d bills at full speed, delivered as they come, %d connections"
         % (CFG["N"], CFG["C"]))
    lh = Labhook(tmp, "labhook", ca)
    lh.start(demo=True)
    sub = lh.subscribe(hook_url)
    body = lh.bill_body(os.path.join(tmp, "bill.json"))
    api = lh.base + "/client/billing/create"
    auth = "Authorization: Bearer " + lh.token()
    perf = profile(lh.proc.pid, "ingest")
    cpu0, t0 = cpu_threads(lh.proc.pid), time.monotonic()
    g = loadgen(api, body, CFG["N"], CFG["C"], headers=(auth,))
    if perf:
        perf.send_signal(signal.SIGINT)
        stop(perf, grace=60)
    log("ingest: %.0f bills/s acknowledged, API p50 %.2f ms p99 %.2f ms"
        % (g["rps"], g["p50_ms"], g["p99_ms"]))
    waited = ng.wait_arrivals(CFG["N"], CFG["DELIVER_TIMEOUT"])
    cpu = cpu_use(cpu0, cpu_threads(lh.proc.pid), time.monotonic() - t0)
    last = max(ng.arrivals.values())
    span = last - g["t_first"]
    r["ingest"] = {"while_delivering": {"bills": int(g["ok"]), "eps": g["rps"],
                                        "api_p50_ms": g["p50_ms"], "api_p99_ms": g["p99_ms"],
                                        "api_max_ms": g["max_ms"]}}
    r["delivery"] = {"webhooks": len(ng.arrivals), "span_s": span, "dps": CFG["N"] / span,
                     "drain_after_ingest_s": last - g["t_last"], "ratio": 0.0,
                     "labhook_cpu": cpu}
    log("delivery: all %d at nginx %.1f s after the first request (%.0f/s); waited %.1f s "
        "after the last API answer" % (CFG["N"], span, CFG["N"] / span, waited))

    # While ingest runs, webhooks are born at the ingest rate: the delivery rate above
    # cannot be higher. Sending alone, in ROUNDS rounds each followed by a raw-client run:
    # N more bills while the subscription is paused (their deliveries are written and wait
    # in the store: ingest with the deliveries queued), then it is resumed and the drain to
    # nginx is timed. Best drain against best raw run, both from this run.
    sub_id = sub.get("subscription", {}).get("id", "?")
    r["delivery"]["while_ingesting_dps"] = r["delivery"].pop("dps")
    drains, queued = [], []
    for k in range(CFG["ROUNDS"]):
        step("delivery alone, round %d/%d: %d bills while the subscription is paused, "
             "then resumed" % (k + 1, CFG["ROUNDS"], CFG["N"]))
        lh.set_status(sub_id, "paused")
        g = loadgen(api, body, CFG["N"], CFG["C"],
                    headers=("Authorization: Bearer " + lh.token(),))
        queued.append({"eps": g["rps"], "api_p50_ms": g["p50_ms"], "api_p99_ms": g["p99_ms"]})
        log("ingest, deliveries queued: %.0f bills/s" % g["rps"])
        perf = profile(lh.proc.pid, "alone") if k == 0 else None
        cpu0, t0 = cpu_threads(lh.proc.pid), time.monotonic()
        t_resume = time.time()
        lh.set_status(sub_id, "active")
        ng.wait_arrivals((k + 2) * CFG["N"], CFG["DELIVER_TIMEOUT"])
        if perf:
            perf.send_signal(signal.SIGINT)
            stop(perf, grace=60)
        cpu = cpu_use(cpu0, cpu_threads(lh.proc.pid), time.monotonic() - t0)
        times = sorted(ng.arrivals.values())
        span = times[-1] - t_resume
        drains.append({"webhooks": CFG["N"], "span_s": span, "dps": CFG["N"] / span,
                       "first_after_s": times[-CFG["N"]] - t_resume,
                       "arrived_while_paused":
                           sum(1 for t in times if t < t_resume) - (k + 1) * CFG["N"],
                       "labhook_cpu": cpu})
        log("delivery alone: %d webhooks in %.1f s after the resume (%.0f/s)"
            % (CFG["N"], span, CFG["N"] / span))
        ceiling("after round %d" % (k + 1))
    best = max(ceilings, key=lambda c: c["dps"])
    r["ceiling"] = dict(best, requests=CFG["CEIL_N"], payload_bytes=size, runs=ceilings)
    alone = max(drains, key=lambda x: x["dps"])
    r["delivery"]["alone"] = dict(alone, runs=drains)
    r["delivery"]["dps"] = alone["dps"]
    r["delivery"]["ratio"] = alone["dps"] / best["dps"]
    r["delivery"]["while_ingesting_ratio"] = r["delivery"]["while_ingesting_dps"] / best["dps"]
    # Each round against the raw run right after it: how much the pairing matters.
    r["delivery"]["round_ratios"] = [x["dps"] / c["dps"] for x, c in zip(drains, ceilings[1:])]
    # ingest_eps, like delivery_dps, is labhook doing that one thing: bills accepted with
    # their delivery rows written (one subscription), while nothing is being sent.
    r["ingest"].update(max(queued, key=lambda q: q["eps"]), bills=CFG["N"], runs=queued)

    n_paced = CFG["RATE"] * CFG["RATE_S"]
    step("latency: %d bills/s offered for %d s" % (CFG["RATE"], CFG["RATE_S"]))
    answers = os.path.join(tmp, "paced.txt")
    auth = "Authorization: Bearer " + lh.token()
    g = loadgen(api, body, n_paced, CFG["C"], rate=CFG["RATE"], headers=(auth,),
                out=answers)
    ng.wait_arrivals((CFG["ROUNDS"] + 1) * CFG["N"] + n_paced, CFG["DELIVER_TIMEOUT"])
    event_of = dict(lh.query("SELECT entity_id, event_id FROM events"))
    # e2e: the webhook's arrival at nginx minus the API answer's arrival at the client
    # (the figure asked for; negative when the webhook wins the race), and minus the
    # request's send time (what an integrator waits from its POST to the webhook).
    e2e, from_send = [], []
    with open(answers) as f:
        for line in f:
            answered, sent, bill = line.split()
            arrived = ng.arrivals[event_of[bill]] * 1000
            e2e.append(arrived - float(answered))
            from_send.append(arrived - float(sent))
    e2e.sort()
    from_send.sort()
    r["paced"] = {"offered_per_s": CFG["RATE"], "bills": len(e2e), "achieved_per_s": g["rps"],
                  "api_p50_ms": g["p50_ms"], "api_p99_ms": g["p99_ms"],
                  "e2e_p50_ms": percentile(e2e, 50), "e2e_p99_ms": percentile(e2e, 99),
                  "e2e_max_ms": e2e[-1], "e2e_negative": sum(1 for x in e2e if x < 0),
                  "from_send_p50_ms": percentile(from_send, 50),
                  "from_send_p99_ms": percentile(from_send, 99)}
    log("e2e: p50 %.1f ms p99 %.1f ms" % (r["paced"]["e2e_p50_ms"], r["paced"]["e2e_p99_ms"]))

    r["labhook"] = {"rss_peak_mb": rss_kb(lh.proc.pid) / 1024,
                    "rss_now_mb": rss_kb(lh.proc.pid, "VmRSS") / 1024,
                    "subscription": sub.get("subscription", {}).get("id", "?")}
    r["labhook"].update(delivery_summary(lh))
    r["labhook"]["stop_s"], r["labhook"]["exit_code"] = lh.stop()
    r["nginx_log_lines"] = ng.lines
    ng.stop()
    return r


def scenario_backlog(tmp, ca, cert, key):
    n = CFG["BACKLOG_N"]
    r = {"settings": {"BACKLOG_N": n, "C": CFG["C"]}}
    dead = free_port()  # nothing listens here until the drain starts
    # 0,1h: the few deliveries tried while the receiver is down wait an hour instead of
    # churning; they are re-sent through the API when the receiver is back (below).
    lh = Labhook(tmp, "labhook-backlog", ca, extra=["--retry-schedule", "0,1h,1h,1h"])
    lh.start(demo=True)
    lh.subscribe("https://127.0.0.1:%d/hook" % dead)
    body = lh.bill_body(os.path.join(tmp, "bill-backlog.json"))
    api = lh.base + "/client/billing/create"

    step("backlog: %d bills with the receiver down (%d per loadgen run)"
         % (n, CFG["BACKLOG_CHUNK"]))
    done, busy = 0, 0.0
    while done < n:
        k = min(CFG["BACKLOG_CHUNK"], n - done)
        g = loadgen(api, body, k, CFG["C"], headers=("Authorization: Bearer " + lh.token(),))
        done += k
        busy += g["elapsed_s"]
        log("%d/%d bills, %.0f/s in this run" % (done, n, g["rps"]))
    pending = lh.query("SELECT count(*) FROM deliveries WHERE status = 0")[0][0]
    r["ingest"] = {"bills": done, "eps": done / busy, "seconds": busy, "pending": pending,
                   "rss_peak_mb": rss_kb(lh.proc.pid) / 1024}
    r["db_mb"] = sum(os.path.getsize(os.path.join(lh.data, f)) for f in os.listdir(lh.data)
                     if f.startswith("labhook.db")) / 2**20
    r["stop_s"], r["exit_code"] = lh.stop()
    log("%d pending; labhook stopped in %.1f s (exit %d)" % (pending, r["stop_s"],
                                                              r["exit_code"]))

    step("restart with %d pending deliveries" % pending)
    r["ready_s"] = lh.start(demo=False)
    r["rss_ready_mb"] = rss_kb(lh.proc.pid, "VmRSS") / 1024
    log("ready (/healthz 200) after %.2f s, RSS %.0f MB" % (r["ready_s"], r["rss_ready_mb"]))

    step("drain: receiver up on port %d" % dead)
    ng = Nginx(tmp, "nginx-backlog", dead, cert, key)
    t_up = time.time()
    cpu0 = cpu_threads(lh.proc.pid)
    ng.start()
    # Deliveries tried while the receiver was down wait for their next attempt (1h): send
    # them again now, as an operator would. Give attempts in flight a moment to finish.
    time.sleep(1)
    token = lh.token()
    tried = [d for (d,) in lh.query("SELECT delivery_id FROM deliveries "
                                    "WHERE status IN (0, 2) AND attempts > 0")]
    for d in tried:
        st, j = http_json("POST", lh.base + "/client/events/deliveries/%s/retry" % d,
                          token=token)
        if st != 200:
            raise BenchError("retry %s: HTTP %d %s" % (d, st, j))
    r["resent_via_api"] = len(tried)
    log("re-sent %d deliveries tried while the receiver was down" % len(tried))

    polls = [0]

    def drained():
        left = lh.query("SELECT count(*) FROM deliveries WHERE status = 0")[0][0]
        polls[0] += 1
        if polls[0] % 10 == 0:
            log("%.0f s: %d pending, %d at nginx" % (time.time() - t_up, left, ng.read_log()))
        return left == 0
    wait_for("the backlog to drain", drained, CFG["DRAIN_TIMEOUT"], every=1)
    ng.wait_arrivals(pending, 30)
    first, last = min(ng.arrivals.values()), max(ng.arrivals.values())
    # Per second of sending: labhook is all but idle while the endpoint is backed off.
    r["labhook_cpu"] = cpu_use(cpu0, cpu_threads(lh.proc.pid), max(last - first, 1e-3))
    r["drain_s"] = last - t_up
    r["drain_dps"] = pending / r["drain_s"]
    # The drain splits into the wait before the first webhook (the endpoint's back-off
    # from the failures while the receiver was down) and the sending itself.
    r["first_delivery_after_s"] = first - t_up
    r["sending_dps"] = pending / max(last - first, 1e-3)
    r["rss_peak_mb"] = rss_kb(lh.proc.pid) / 1024
    r.update(delivery_summary(lh))
    r["final_stop_s"], _ = lh.stop()
    ng.stop()
    log("drained %d in %.1f s (%.0f/s), peak RSS %.0f MB"
        % (pending, r["drain_s"], r["drain_dps"], r["rss_peak_mb"]))
    return r


# --- results ---------------------------------------------------------------------------

def git_state():
    def git(*a):
        r = subprocess.run(["git", "-C", ROOT] + list(a), capture_output=True, text=True,
                           timeout=30)
        return r.stdout.strip()
    return {"rev": git("rev-parse", "--short", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def machine():
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    return {"cpus": os.cpu_count(), "mem_mb": mem, "kernel": platform.release(),
            "nginx": nginx_v.split("/")[-1], "python": platform.python_version()}


def rounded(v):
    """Floats to 3 decimals, all the way down: the results are read by people."""
    if isinstance(v, float):
        return round(v, 3)
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    return v


def save(section, data, wall_s, git):
    """Merges this scenario into bench/results/<UTC date>.json (one file per day)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    path = os.path.join(RESULTS, now.strftime("%Y-%m-%d") + ".json")
    doc = {}
    if os.path.exists(path):
        with open(path) as f:
            doc = json.load(f)
    # LABHOOK_* variables reach labhook's settings (environment layer): keep them with
    # the figures they changed.
    env = {k: v for k, v in os.environ.items() if k.startswith("LABHOOK_")}
    data = dict(data, finished_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"), wall_s=round(wall_s, 1),
                git=git, machine=machine(), labhook_env=env)
    doc[section] = rounded(data)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def table(rows):
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print("  %-*s  %s" % (w, k, v))


def report_main(r):
    p, d = r["paced"], r["delivery"]
    print("\nlabhook benchmark (%d CPUs)" % os.cpu_count())
    table([
        ("ceiling (nginx direct)", "%.0f req/s  p50 %.2f ms  p99 %.2f ms  (%d B, %d conns; "
         "best of %s)" % (r["ceiling"]["dps"], r["ceiling"]["p50_ms"], r["ceiling"]["p99_ms"],
                          r["ceiling"]["payload_bytes"], CFG["CEIL_C"],
                          " / ".join("%.0f" % c["dps"] for c in r["ceiling"]["runs"]))),
        ("ingest alone (queued)", "%.0f bills/s  p50 %.2f ms  p99 %.2f ms  (subscription "
         "paused; best of %s)" % (r["ingest"]["eps"], r["ingest"]["api_p50_ms"],
                                  r["ingest"]["api_p99_ms"],
                                  " / ".join("%.0f" % q["eps"] for q in r["ingest"]["runs"]))),
        ("delivery alone (resumed)", "%.0f webhooks/s  (%d in %.1f s, first after %.2f s; best "
         "of %s)  = %.1f%% of ceiling"
         % (d["dps"], d["alone"]["webhooks"], d["alone"]["span_s"], d["alone"]["first_after_s"],
            " / ".join("%.0f" % x["dps"] for x in d["alone"]["runs"]), 100 * d["ratio"])),
        ("  each against the next raw run", " / ".join("%.2f" % x for x in d["round_ratios"])),
        ("  labhook CPU while sending", "%.2f cores, busiest thread %.2f"
         % (d["alone"]["labhook_cpu"]["cores"],
            d["alone"]["labhook_cpu"]["busiest_thread_cores"])),
        ("ingest while delivering", "%.0f bills/s  p50 %.2f ms  p99 %.2f ms  (%d conns)"
         % (r["ingest"]["while_delivering"]["eps"], r["ingest"]["while_delivering"]["api_p50_ms"],
            r["ingest"]["while_delivering"]["api_p99_ms"], CFG["C"])),
        ("delivery while ingesting", "%.0f webhooks/s  (%d in %.1f s)  = %.1f%% of ceiling"
         % (d["while_ingesting_dps"], d["webhooks"], d["span_s"],
            100 * d["while_ingesting_ratio"])),
        ("  labhook CPU", "%.2f cores, busiest thread %.2f"
         % (d["labhook_cpu"]["cores"], d["labhook_cpu"]["busiest_thread_cores"])),
        ("paced %d/s" % p["offered_per_s"], "API p50 %.2f ms p99 %.2f ms; e2e p50 %.1f ms "
         "p99 %.1f ms max %.1f ms" % (p["api_p50_ms"], p["api_p99_ms"], p["e2e_p50_ms"],
                                      p["e2e_p99_ms"], p["e2e_max_ms"])),
        ("paced, POST to webhook", "p50 %.1f ms p99 %.1f ms"
         % (p["from_send_p50_ms"], p["from_send_p99_ms"])),
        ("labhook peak RSS", "%.1f MB" % r["labhook"]["rss_peak_mb"]),
        ("deliveries", json.dumps(r["labhook"]["deliveries"])),
        ("failed attempts", json.dumps(r["labhook"]["failed_attempts"])),
    ])


def report_backlog(b):
    print("\nbacklog")
    table([
        ("ingest, receiver down", "%d bills at %.0f/s (%.0f s); %d pending; db %.0f MB"
         % (b["ingest"]["bills"], b["ingest"]["eps"], b["ingest"]["seconds"],
            b["ingest"]["pending"], b["db_mb"])),
        ("stop with backlog", "%.2f s (exit %d)" % (b["stop_s"], b["exit_code"])),
        ("restart to /healthz", "%.2f s  (RSS then %.0f MB)" % (b["ready_s"], b["rss_ready_mb"])),
        ("drain", "%.1f s  (%.0f webhooks/s; %d re-sent via API)"
         % (b["drain_s"], b["drain_dps"], b["resent_via_api"])),
        ("  of which", "%.1f s until the first webhook, then %.0f webhooks/s"
         % (b["first_delivery_after_s"], b["sending_dps"])),
        ("labhook CPU while sending", "%.2f cores, busiest thread %.2f"
         % (b["labhook_cpu"]["cores"], b["labhook_cpu"]["busiest_thread_cores"])),
        ("peak RSS (restart+drain)", "%.1f MB" % b["rss_peak_mb"]),
        ("deliveries", json.dumps(b["deliveries"])),
        ("failed attempts", json.dumps(b["failed_attempts"])),
    ])


def main():
    scenario = sys.argv[1] if len(sys.argv) > 1 else "main"
    if scenario not in ("main", "backlog", "all"):
        sys.exit("usage: bench.py [main|backlog|all]")
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    for exe in (LABHOOK, LOADGEN):
        if not os.access(exe, os.X_OK):
            sys.exit("bench: %s is missing: run bash bench/run.sh" % exe)
    git = git_state()  # now, close to when run.sh built labhook from this tree
    tmp = tempfile.mkdtemp(prefix="labhook-bench-")
    ok = False
    try:
        ca, cert, key = make_ca(tmp)
        out = {}
        for name, fn in (("main", scenario_main), ("backlog", scenario_backlog)):
            if scenario in (name, "all"):
                t = time.monotonic()
                out[name] = fn(tmp, ca, cert, key)
                path = save(name, out[name], time.monotonic() - t, git)
                log("%s: %.0f s; results in %s" % (name, time.monotonic() - t,
                                                   os.path.relpath(path, ROOT)))
        if "backlog" in out:
            report_backlog(out["backlog"])
            b = out["backlog"]
            if "main" not in out:
                print("backlog_n=%d ready_s=%.2f rss_mb=%.1f drain_s=%.1f drain_dps=%.0f"
                      % (b["ingest"]["pending"], b["ready_s"], b["rss_peak_mb"],
                         b["drain_s"], b["drain_dps"]))
        if "main" in out:
            r = out["main"]
            report_main(r)
            print("ingest_eps=%.0f delivery_dps=%.0f ceiling_dps=%.0f delivery_ratio=%.3f "
                  "e2e_p50_ms=%.1f e2e_p99_ms=%.1f rss_mb=%.1f"
                  % (r["ingest"]["eps"], r["delivery"]["dps"], r["ceiling"]["dps"],
                     r["delivery"]["ratio"], round(r["paced"]["e2e_p50_ms"], 1) + 0.0,  # no "-0.0"
                     round(r["paced"]["e2e_p99_ms"], 1) + 0.0, r["labhook"]["rss_peak_mb"]))
        ok = True
    except BenchError as e:
        print("bench: FAILED: %s (files in %s)" % (e, tmp), file=sys.stderr)
    finally:
        cleanup()
        if CFG["KEEP"] or not ok:
            log("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
