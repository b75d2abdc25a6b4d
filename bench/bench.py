#!/usr/bin/env python3
"""labhook benchmarks: the orchestrator behind `make -C bench` (Python standard library only).

Scenarios (argument): `main` (ceiling + end-to-end + paced latency), `backlog` (a large
pending backlog across a restart, then its drain), `pg` (SQLite, one node on PostgreSQL and
two nodes on one PostgreSQL side by side, then the takeover after a SIGKILL), `all` (the
three). Every process it starts (a throwaway PostgreSQL server too) is
registered in PROCS and stopped by `cleanup()` on any exit: normal, exception, SIGINT,
SIGTERM, SIGHUP; children also get SIGTERM if this process dies (PR_SET_PDEATHSIG). Every
wait has a timeout. Only 127.0.0.1 is ever contacted. Expects run.sh to have built
build-bench/labhook and build-bench/loadgen. Settings are environment variables (SETTINGS).
"""
import array
import bisect
import collections
import ctypes
import datetime
import io
import json
import math
import os
import platform
import random
import shutil
import statistics
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
BUILD = os.path.join(ROOT, "build-bench")
# LABHOOK_BIN: another build of labhook to measure (an older commit, side by side).
LABHOOK = os.environ.get("LABHOOK_BIN") or os.path.join(BUILD, "labhook")
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
    "REPEAT": (1, "end to end: whole runs; above 1 each figure also as min/median/max"),
    "BACKLOG_N": (1000000, "backlog: pending deliveries to build up"),
    "BACKLOG_CHUNK": (100000, "backlog: bills per loadgen run (access tokens last 10 min)"),
    "DELIVER_TIMEOUT": (600, "seconds to wait for nginx to log every webhook of a run"),
    "DRAIN_TIMEOUT": (3600, "backlog: seconds to wait for the drain"),
    "KEEP": (0, "1 keeps the temporary directory (logs, databases) for inspection"),
    "PG_N": (40000, "pg: bills per round (paused ingest, then the drain), per backend"),
    "PG_ROUNDS": (2, "pg: rounds per backend, each followed by a raw-client run"),
    "PG_SUBS": (8, "pg: accounts, each with one subscription (a lease is per subscription)"),
    "STATS_N": (5000, "pg: bills measured with pg_stat_statements on (statements, WAL)"),
    "TAKEOVER_RATE": (400, "pg takeover: paced bills per second (all subscriptions)"),
    "TAKEOVER_WARM": (5, "pg takeover: seconds of paced load before the SIGKILL (plus 0-5 s)"),
    "TAKEOVER_WAIT": (60, "pg takeover: seconds to wait for the takeover"),
    "TAKEOVER_KILLS": (3, "pg takeover: SIGKILLs (takeover_s is the worst)"),
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


def spawn(args, stdout, stderr, user=None, stdin=subprocess.DEVNULL):
    """Starts args in a session of its own (as user, when given: the uid is changed before
    _die_with_parent runs, so the death signal stays set)."""
    kw = {"user": user, "group": user, "extra_groups": []} if user else {}
    p = subprocess.Popen(args, stdin=stdin, stdout=stdout, stderr=stderr,
                         start_new_session=True, preexec_fn=_die_with_parent, **kw)
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


class CpuSampler:
    """CPU time of processes' threads, sampled every `every` seconds in a thread of its own,
    so that CPU can be taken over any interval afterwards (the real span of a phase, known
    only once its last webhook is in nginx's log).

    For each watched process (watch(key, pid)): every thread's name (/proc/P/task/T/comm)
    and CPU time (/proc/P/task/T/schedstat, first field: nanoseconds of run time, where
    stat's utime + stime count 10 ms ticks), with a wall-clock timestamp (time.time(), the
    clock of nginx's $msec and loadgen's t_first/t_last). The files stay open and are re-read
    with pread (about 1 us each). Threads of the same name are added up (the MHD workers);
    a thread that ends keeps the CPU it had at its last sample in its name's total (what it
    used after that, at most `every` seconds of it, is lost); a thread that appears adds
    its whole CPU at its first sample (it had none before it existed). So each name's total
    never decreases, and cpu(key, a, b) interpolates the totals linearly at a and b."""

    def __init__(self, every=0.005):
        self.every = every
        self.lock = threading.Lock()
        self.pids = {}  # key -> pid still sampled
        self.threads = {}  # key -> {tid: [schedstat fd, comm fd, name, last ns]}
        self.dead = {}  # key -> {name: ns of the threads that ended}
        self.series = {}  # key -> (array of times, {name: array of cumulative seconds})
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.own_s = 0.0  # the sampler thread's own CPU, when it ends
        self.t0 = time.time()

    def start(self):
        self.thread.start()
        return self

    def watch(self, key, pid):
        """Samples pid under key from now on (a new series: an earlier one is dropped)."""
        with self.lock:
            self._close(key)
            self.pids[key], self.threads[key], self.dead[key] = pid, {}, {}
            self.series[key] = (array.array("d"), {})
            self._sample(key, pid)

    def unwatch(self, key):
        """Stops sampling key (its series stays readable)."""
        with self.lock:
            self._close(key)

    def _close(self, key):
        self.pids.pop(key, None)
        for th in self.threads.pop(key, {}).values():
            os.close(th[0])
            os.close(th[1])

    def _sample(self, key, pid):
        threads, dead = self.threads[key], self.dead[key]
        t_a = time.time()
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except OSError:  # the process ended: its last sample stands
            self._close(key)
            return
        seen = set()
        for tid in tids:
            th = threads.get(tid)
            try:
                if th is None:
                    base = "/proc/%d/task/%s/" % (pid, tid)
                    th = [os.open(base + "schedstat", os.O_RDONLY), None, "", 0]
                    threads[tid] = th
                    th[1] = os.open(base + "comm", os.O_RDONLY)
                # Read each time: a thread names itself just after it starts.
                th[2] = os.pread(th[1], 64, 0).decode(errors="replace").strip()
                th[3] = int(os.pread(th[0], 128, 0).split()[0])
            except (OSError, ValueError, IndexError):
                continue  # ended between listdir and the read: handled as ended below
            seen.add(tid)
        for tid in [x for x in threads if x not in seen]:
            th = threads.pop(tid)
            dead[th[2]] = dead.get(th[2], 0) + th[3]
            os.close(th[0])
            if th[1] is not None:
                os.close(th[1])
        total = dict(dead)
        for th in threads.values():
            total[th[2]] = total.get(th[2], 0) + th[3]
        times, names = self.series[key]
        for name in total:
            if name not in names:  # a new name: no CPU before (zeros, aligned)
                names[name] = array.array("d", bytes(8 * len(times)))
        for name, values in names.items():
            values.append(total.get(name, 0) / 1e9)
        times.append((t_a + time.time()) / 2)

    def run(self):
        while not self.stop_ev.wait(self.every):
            with self.lock:
                for key, pid in list(self.pids.items()):
                    self._sample(key, pid)
        self.own_s = time.thread_time()

    def stop(self):
        """Stops the thread; returns the cores it used itself (its own CPU / its lifetime)."""
        self.stop_ev.set()
        self.thread.join(5)
        with self.lock:
            for key in list(self.pids):
                self._close(key)
        return self.own_s / max(time.time() - self.t0, 1e-3)

    def _at(self, times, names, t):
        i = bisect.bisect_left(times, t)
        if i == 0 or i == len(times):
            j = 0 if i == 0 else len(times) - 1
            return {n: v[j] for n, v in names.items()}
        f = (t - times[i - 1]) / (times[i] - times[i - 1])
        return {n: v[i - 1] + f * (v[i] - v[i - 1]) for n, v in names.items()}

    def cpu(self, key, a, b):
        """{thread name: CPU seconds} of key between wall-clock times a and b. BenchError when
        the samples do not cover [a, b] (to within two periods)."""
        deadline = time.time() + 1
        while time.time() < deadline and b > time.time() - 2 * self.every:
            time.sleep(self.every)  # b is just past: let a sample after it be taken
        with self.lock:
            times, names = self.series[key]
            if not times or a < times[0] - 2 * self.every or b > times[-1] + 2 * self.every:
                raise BenchError("CPU samples of %s do not cover %.3f..%.3f" % (key, a, b))
            x, y = self._at(times, names, a), self._at(times, names, b)
        return {n: y[n] - x[n] for n in y}

    def per(self, key, a, b, count):
        """CPU of key over [a, b] per unit (count of them): {"us": µs per unit, "cores": CPU /
        (b - a), "span_s", "threads": {name: µs per unit}, busiest first; names under
        0.05 µs added up as "(rest)", shown when that reaches 0.05 µs}."""
        c = self.cpu(key, a, b)
        total = sum(c.values())
        threads, rest = {}, 0.0
        for name, v in sorted(c.items(), key=lambda x: -x[1]):
            us = v * 1e6 / max(count, 1)
            if us >= 0.05:
                threads[name] = us
            else:
                rest += us
        if rest >= 0.05:
            threads["(rest)"] = rest
        return {"us": total * 1e6 / max(count, 1), "cores": total / max(b - a, 1e-6),
                "span_s": b - a, "threads": threads}


def child_pid(pid, timeout=10):
    """The first child process of pid (nginx's worker), waited for."""
    def find():
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d) as f:
                        if int(f.read().rpartition(")")[2].split()[1]) == pid:
                            return int(d)
                except (OSError, ValueError, IndexError):
                    continue
        return None
    return wait_for("a child process of %d" % pid, find, timeout)


def spread(counts):
    """Requests per connection (a Counter of nginx's $connection) -> how they spread."""
    n = sum(counts.values())
    return {"requests": n, "connections": len(counts),
            "max_share_pct": 100.0 * max(counts.values()) / n if n else 0.0}


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
    log_format hook '$msec $http_webhook_id $uri $connection';
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
        self.path_of = {}  # webhook-id -> the request's path (one per subscription)
        self.conn_of = {}  # webhook-id -> nginx's $connection of its first arrival
        # Other webhook-ids (the raw client's runs are tagged "ceiling-<k>"): requests per
        # connection.
        self.tagged = collections.defaultdict(collections.Counter)
        self.worker = None  # the worker's pid (one worker), once started
        self.lines = 0
        self.repeats = 0  # lines of an event id already seen (duplicates)
        self._offset = 0

    def start(self):
        err = open(os.path.join(self.prefix, "stderr.log"), "ab")
        self.proc = spawn(["nginx", "-p", self.prefix, "-c", self.conf,
                           "-e", os.path.join(self.prefix, "error.log")], err, err)
        wait_for("nginx on port %d" % self.port,
                 lambda: self.proc.poll() is not None or port_open(self.port), 10)
        if self.proc.poll() is not None:
            raise BenchError("nginx exited: see %s/error.log" % self.prefix)
        self.worker = child_pid(self.proc.pid)

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
            # $msec $http_webhook_id $uri $connection: the last field is split off the
            # right, so that a path with a space stays whole.
            t, wid, rest = (line.split(" ", 2) + ["", ""])[:3]
            path, _, conn = rest.rpartition(" ")
            if not wid.startswith("evt_"):
                self.tagged[wid][conn] += 1
                continue
            if wid in self.arrivals:
                self.repeats += 1
            else:
                self.arrivals[wid] = float(t)
                self.path_of[wid] = path
                self.conn_of[wid] = conn
        return len(self.arrivals)

    def spread_of(self, wids):
        """How the first arrivals of these event ids spread over nginx's connections."""
        return spread(collections.Counter(self.conn_of[w] for w in wids))

    def wait_tagged(self, tag, n, timeout=10):
        """Waits until n requests tagged webhook-id: tag are logged (the log's buffer is
        flushed every second); returns how they spread over connections."""
        wait_for("%d requests tagged %s at nginx" % (n, tag),
                 lambda: self.read_log() is not None and sum(self.tagged[tag].values()) >= n,
                 timeout, every=0.1)
        return spread(self.tagged[tag])

    def wait_arrivals(self, n, timeout):
        """Waits until n distinct event ids were logged; returns the seconds waited."""
        t = time.monotonic()
        wait_for("%d webhooks at nginx (have %d)" % (n, len(self.arrivals)),
                 lambda: self.read_log() >= n, timeout, every=0.25)
        return time.monotonic() - t


# --- labhook ---------------------------------------------------------------------------

class Labhook:
    """One labhook node. With pg (a Postgres) and db, its store is that database; else
    SQLite in its data directory."""

    def __init__(self, tmp, name, ca, extra=(), pg=None, db=None):
        self.dir = os.path.join(tmp, name)
        self.data = os.path.join(self.dir, "data")
        os.makedirs(self.dir)
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self.args = [LABHOOK, "serve", "--data-dir", self.data,
                     "--listen", "127.0.0.1:%d" % self.port, "--ca-file", ca,
                     "--allow-net", "127.0.0.0/8", "--log-level", "warn"] + list(extra)
        self.pg, self.pg_db = pg, db
        if pg:
            self.args += ["--store", pg.uri(db)]
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

    def set_status(self, sub_id, status, token=None):
        st, j = http_json("PATCH", self.base + "/client/events/subscriptions/" + sub_id,
                          {"status": status}, token=token or self.token())
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
        """Rows of a query on this node's store (no args on PostgreSQL)."""
        if self.pg:
            assert not args
            return self.pg.query(self.pg_db, sql)
        with self.db() as c:
            return c.execute(sql, args).fetchall()

    def admin_key(self):
        with open(os.path.join(self.data, "admin.key")) as f:
            return f.read().strip()

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
    return spawn(["perf", "record", "-q", "-F", os.environ.get("PERF_FREQ", "999"),
                  "--call-graph", os.environ.get("PERF_CALL_GRAPH", "fp"), "-p", str(pid), "-o",
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


# Headers shaped like labhook's, so nginx parses as much per request in both runs. The
# webhook-id (first) tags each run's lines in nginx's log: "ceiling-<k>".
CEILING_HEADERS = ("webhook-id: ceiling", "webhook-timestamp: 1795758916",
                   "webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                   "User-Agent: labhook/bench")


def ceiling_headers(tag):
    return ("webhook-id: " + tag,) + CEILING_HEADERS[1:]


# --- scenarios -------------------------------------------------------------------------

def raw_ceiling(ng, hook_url, payload, ca, when, ceilings, sampler):
    """The raw client against the same nginx; run before and after labhook's runs, so the
    ratio is taken against the best it reached in this run. Appends to ceilings and returns
    the record: the rate, the raw client's own CPU per request (loadgen's getrusage from its
    first request to its last answer), nginx's CPU per request over that span (sampler) and
    how the requests spread over nginx's connections."""
    step("ceiling (%s): %d POSTs of ~1 KB straight to nginx over HTTPS, %d connections"
         % (when, CFG["CEIL_N"], CFG["CEIL_C"]))
    loadgen(hook_url, payload, min(2000, CFG["CEIL_N"]), CFG["CEIL_C"], cacert=ca,
            headers=ceiling_headers("ceiling-warm"))  # handshakes, nginx's first allocations
    tag = "ceiling-%d" % len(ceilings)
    g = loadgen(hook_url, payload, CFG["CEIL_N"], CFG["CEIL_C"], cacert=ca,
                headers=ceiling_headers(tag))
    c = {"when": when, "dps": g["rps"], "p50_ms": g["p50_ms"], "p99_ms": g["p99_ms"],
         "cpu_us_per_req": g["cpu_us_per_req"],
         "nginx_cpu": sampler.per("nginx", g["t_first"], g["t_last"], g["ok"]),
         "conns": ng.wait_tagged(tag, int(g["ok"]))}
    ceilings.append(c)
    log("ceiling: %.0f requests/s; raw client %.1f us CPU per request, nginx %.1f; %d "
        "connections, the busiest %.1f%%" % (g["rps"], c["cpu_us_per_req"],
                                             c["nginx_cpu"]["us"], c["conns"]["connections"],
                                             c["conns"]["max_share_pct"]))
    return c


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
    # CPU of nginx's worker and of labhook, sampled throughout: each phase's CPU is taken
    # over its real span once that is known (the last webhook's $msec in nginx's log).
    sampler = CpuSampler().start()
    sampler.watch("nginx", ng.worker)

    payload = os.path.join(tmp, "ceiling.json")
    size = ceiling_payload(payload)
    ceilings = []

    def ceiling(when):
        return raw_ceiling(ng, hook_url, payload, ca, when, ceilings, sampler)

    ceiling("before")

    step("both at once: %d bills at full speed, delivered as they come, %d connections"
         % (CFG["N"], CFG["C"]))
    lh = Labhook(tmp, "labhook", ca)
    lh.start(demo=True)
    sampler.watch("labhook", lh.proc.pid)
    sub = lh.subscribe(hook_url)
    body = lh.bill_body(os.path.join(tmp, "bill.json"))
    api = lh.base + "/client/billing/create"
    auth = "Authorization: Bearer " + lh.token()
    perf = profile(lh.proc.pid, "ingest")
    g = loadgen(api, body, CFG["N"], CFG["C"], headers=(auth,))
    if perf:
        perf.send_signal(signal.SIGINT)
        stop(perf, grace=60)
    log("ingest: %.0f bills/s acknowledged, API p50 %.2f ms p99 %.2f ms; the load generator "
        "%.1f us CPU per bill" % (g["rps"], g["p50_ms"], g["p99_ms"], g["cpu_us_per_req"]))
    waited = ng.wait_arrivals(CFG["N"], CFG["DELIVER_TIMEOUT"])
    wids = list(ng.arrivals)
    last = max(ng.arrivals.values())
    span = last - g["t_first"]
    both = sampler.per("labhook", g["t_first"], last, g["ok"])
    r["ingest"] = {"while_delivering": {"bills": int(g["ok"]), "eps": g["rps"],
                                        "api_p50_ms": g["p50_ms"], "api_p99_ms": g["p99_ms"],
                                        "api_max_ms": g["max_ms"],
                                        "loadgen_cpu_us_per_bill": g["cpu_us_per_req"],
                                        "labhook_cpu_per_bill":
                                            sampler.per("labhook", g["t_first"], g["t_last"],
                                                        g["ok"])}}
    # labhook's CPU over the real span (first request to last arrival), not until this
    # script's wait returned (nginx's log flush and a poll later).
    r["delivery"] = {"webhooks": len(ng.arrivals), "span_s": span, "dps": CFG["N"] / span,
                     "drain_after_ingest_s": last - g["t_last"], "ratio": 0.0,
                     "labhook_cpu_per_bill": both,
                     "nginx_cpu_per_webhook": sampler.per("nginx", g["t_first"], last,
                                                          len(wids)),
                     "conns": ng.spread_of(wids)}
    log("delivery: all %d at nginx %.1f s after the first request (%.0f/s); waited %.1f s "
        "after the last API answer; labhook %.1f us CPU per bill, first request to last "
        "arrival" % (CFG["N"], span, CFG["N"] / span, waited, both["us"]))

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
        ng.read_log()
        n_before = len(ng.arrivals)  # every earlier webhook is in: each phase waits for all
        g = loadgen(api, body, CFG["N"], CFG["C"],
                    headers=("Authorization: Bearer " + lh.token(),))
        cpu = sampler.per("labhook", g["t_first"], g["t_last"], g["ok"])
        queued.append({"eps": g["rps"], "api_p50_ms": g["p50_ms"], "api_p99_ms": g["p99_ms"],
                       "labhook_cpu_per_bill": cpu,
                       "loadgen_cpu_us_per_bill": g["cpu_us_per_req"]})
        log("ingest, deliveries queued: %.0f bills/s, labhook %.1f us CPU per bill, the load "
            "generator %.1f" % (g["rps"], cpu["us"], g["cpu_us_per_req"]))
        perf = profile(lh.proc.pid, "alone") if k == 0 else None
        token = lh.token()  # before the clock starts: a token costs a hash
        t_resume = time.time()
        lh.set_status(sub_id, "active", token)
        ng.wait_arrivals(n_before + CFG["N"], CFG["DELIVER_TIMEOUT"])
        if perf:
            perf.send_signal(signal.SIGINT)
            stop(perf, grace=60)
        new = list(ng.arrivals.items())[n_before:]
        times = sorted(t for _, t in new)
        span = times[-1] - t_resume
        cpu = sampler.per("labhook", t_resume, times[-1], len(new))
        drains.append({"webhooks": len(new), "span_s": span, "dps": len(new) / span,
                       "first_after_s": times[0] - t_resume,
                       "arrived_while_paused": sum(1 for t in times if t < t_resume),
                       "labhook_cpu_per_webhook": cpu,
                       "nginx_cpu_per_webhook": sampler.per("nginx", t_resume, times[-1],
                                                            len(new)),
                       "conns": ng.spread_of([w for w, _ in new])})
        log("delivery alone: %d webhooks in %.2f s after the resume (%.0f/s), the first after "
            "%.1f ms; labhook %.1f us CPU per webhook; %d connections, the busiest %.1f%%"
            % (len(new), span, len(new) / span, 1000 * (times[0] - t_resume), cpu["us"],
               drains[-1]["conns"]["connections"], drains[-1]["conns"]["max_share_pct"]))
        c = ceiling("after round %d" % (k + 1))
        # labhook's CPU per webhook against the raw client's per request, the run right after.
        drains[-1]["cpu_ratio"] = cpu["us"] / c["cpu_us_per_req"]
        drains[-1]["round_ratio"] = drains[-1]["dps"] / c["dps"]
    best = max(ceilings, key=lambda c: c["dps"])
    r["ceiling"] = dict(best, requests=CFG["CEIL_N"], payload_bytes=size, runs=ceilings)
    alone = max(drains, key=lambda x: x["dps"])
    r["delivery"]["alone"] = dict(alone, runs=drains)
    r["delivery"]["dps"] = alone["dps"]
    r["delivery"]["ratio"] = alone["dps"] / best["dps"]
    r["delivery"]["while_ingesting_ratio"] = r["delivery"]["while_ingesting_dps"] / best["dps"]
    # Each round against the raw run right after it: how much the pairing matters.
    r["delivery"]["round_ratios"] = [x["round_ratio"] for x in drains]
    r["delivery"]["cpu_ratios"] = [x["cpu_ratio"] for x in drains]
    r["delivery"]["cpu_ratio"] = statistics.median(r["delivery"]["cpu_ratios"])
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
    r["sampler_cores"] = sampler.stop()
    summarize_main(r)
    return r


MAIN_TARGETS = (  # (figure, comparison, bound, what the issue asks); issue 15
    ("cpu_ratio", "<=", 1.2, "labhook CPU per delivered webhook / raw client CPU per request "
     "(median of the rounds)"),
    ("min_round_ratio", ">=", 0.8, "delivery_ratio in every round (against the next raw run)"),
    ("both_ratio", ">=", 0.45, "both at once: bills accepted and delivered per second / "
     "ceiling"),
    ("conn_max_share", "<=", 15, "busiest receiver connection's share of webhooks, % (16 "
     "connections; the worst phase)"),
    ("ingest_eps", ">=", 25000, "bills accepted per second, subscription paused"),
    ("first_ms", "<=", 10, "first webhook after a resume, ms (the slowest round)"),
)


def check_targets(summary, targets):
    out = []
    for name, op, bound, what in targets:
        v = summary[name]
        met = v is not None and (v >= bound if op == ">=" else v <= bound)
        out.append({"figure": name, "target": "%s %s" % (op, bound), "value": v, "met": met,
                    "what": what})
    return out


def summarize_main(r):
    """The figures of the summary line and the issue's targets, into r."""
    d = r["delivery"]
    drains = d["alone"]["runs"]
    s = {"ingest_eps": r["ingest"]["eps"], "delivery_dps": d["dps"],
         "ceiling_dps": r["ceiling"]["dps"], "delivery_ratio": d["ratio"],
         "e2e_p50_ms": r["paced"]["e2e_p50_ms"], "e2e_p99_ms": r["paced"]["e2e_p99_ms"],
         "rss_mb": r["labhook"]["rss_peak_mb"], "cpu_ratio": d["cpu_ratio"],
         # The worst of labhook's phases: each drain and both at once.
         "conn_max_share": max(x["conns"]["max_share_pct"] for x in drains + [d]),
         "both_ratio": d["while_ingesting_ratio"],
         "min_round_ratio": min(d["round_ratios"]),
         "first_ms": 1000 * max(x["first_after_s"] for x in drains),
         "cpu_us_per_bill": r["ingest"]["labhook_cpu_per_bill"]["us"]}
    r["summary"] = s
    r["targets"] = check_targets(s, MAIN_TARGETS)


def summary_line(r):
    s = r["summary"]
    return ("ingest_eps=%.0f delivery_dps=%.0f ceiling_dps=%.0f delivery_ratio=%.3f "
            "e2e_p50_ms=%.1f e2e_p99_ms=%.1f rss_mb=%.1f cpu_ratio=%.2f conn_max_share=%.1f "
            "both_ratio=%.3f min_round_ratio=%.3f first_ms=%.1f cpu_us_per_bill=%.1f"
            % (s["ingest_eps"], s["delivery_dps"], s["ceiling_dps"], s["delivery_ratio"],
               round(s["e2e_p50_ms"], 1) + 0.0, round(s["e2e_p99_ms"], 1) + 0.0,  # no "-0.0"
               s["rss_mb"], s["cpu_ratio"], s["conn_max_share"], s["both_ratio"],
               s["min_round_ratio"], s["first_ms"], s["cpu_us_per_bill"]))


def scenario_main_repeated(tmp, ca, cert, key):
    """scenario_main, REPEAT times (each run in a directory of its own, with its own nginx
    and labhook). The result is the last run's, as with REPEAT=1, plus under "repeats"
    every run's summary and the spread of each figure: one run on a machine whose speed
    drifts by a fifth within minutes says little about a target near its bound."""
    if CFG["REPEAT"] <= 1:
        return scenario_main(tmp, ca, cert, key)
    runs = []
    for k in range(CFG["REPEAT"]):
        step("end to end, run %d of %d" % (k + 1, CFG["REPEAT"]))
        sub = os.path.join(tmp, "run-%d" % (k + 1))
        os.makedirs(sub)
        runs.append(scenario_main(sub, ca, cert, key))
        log(summary_line(runs[-1]))
    r = runs[-1]
    summaries = [x["summary"] for x in runs]
    spread = {}
    for k in summaries[0]:
        v = sorted(x[k] for x in summaries if x[k] is not None)
        spread[k] = {"min": v[0], "median": statistics.median(v), "max": v[-1]} if v else None
    met = {t["figure"]: sum(1 for x in runs for u in x["targets"]
                            if u["figure"] == t["figure"] and u["met"]) for t in r["targets"]}
    r["repeats"] = {"runs": len(runs), "summaries": summaries, "spread": spread,
                    "targets_met_in": met}
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


# --- PostgreSQL ------------------------------------------------------------------------

def pg_bindir():
    """Where PostgreSQL 15's programs are: the tests' own lookup (tests/pg/with_pg.py)."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "pg"))
    import with_pg  # noqa: E402  (a module of the repository, found by path)
    try:
        return with_pg.bindir()
    except SystemExit as e:  # it exits with its message when PostgreSQL is missing
        raise BenchError(str(e))


def _value(v):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


class Postgres:
    """A throwaway PostgreSQL 15 started as tests/pg/with_pg.py starts one: initdb in a
    directory of its own under /tmp, a Unix socket only (no TCP port), trust, the `postgres`
    user when run as root. Durable: fsync, synchronous_commit and full_page_writes keep their
    defaults (on). The server runs in the foreground as one of PROCS, so cleanup() stops it.
    pg_stat_statements is loaded with tracking off; stats(True) turns it on for a measured
    batch (postgresql.auto.conf and a reload: the backends pick it up at their next
    statement)."""

    def __init__(self):
        self.bin = pg_bindir()
        self.user = "postgres" if os.geteuid() == 0 else None
        self.dir = tempfile.mkdtemp(prefix="labhook-bench-pg-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        if self.user:
            shutil.chown(self.dir, self.user, self.user)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()  # only names the socket
        self.proc = None
        lib = subprocess.run([os.path.join(self.bin, "pg_config"), "--pkglibdir"],
                             capture_output=True, text=True).stdout.strip() \
            if os.path.exists(os.path.join(self.bin, "pg_config")) else \
            os.path.join(os.path.dirname(self.bin), "lib")
        self.has_statements = os.path.exists(os.path.join(lib, "pg_stat_statements.so"))

    def uri(self, db):
        return "postgresql://labhook@/%s?host=%s&port=%d" % (db, self.dir, self.port)

    def start(self):
        r = subprocess.run([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "labhook",
                            "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync",
                            "--no-instructions"], user=self.user, group=self.user,
                           extra_groups=[] if self.user else None,
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise BenchError("initdb: %s" % r.stderr.strip())
        # In postgresql.conf rather than on the command line, so that ALTER SYSTEM (stats())
        # can override the tracking setting.
        conf = ["listen_addresses = ''", "unix_socket_directories = '%s'" % self.dir,
                "port = %d" % self.port, "max_connections = 200", "shared_buffers = 128MB"]
        if self.has_statements:
            conf += ["shared_preload_libraries = 'pg_stat_statements'",
                     "pg_stat_statements.track = none", "pg_stat_statements.max = 1000"]
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# bench.py\n" + "\n".join(conf) + "\n")
        out = open(os.path.join(self.dir, "server.log"), "ab")
        self.proc = spawn([os.path.join(self.bin, "postgres"), "-D", self.data], out, out,
                          user=self.user)

        def up():
            if self.proc.poll() is not None:
                raise BenchError("postgres exited: see %s/server.log" % self.dir)
            return self.psql("postgres", "SELECT 1", check=False).returncode == 0
        wait_for("PostgreSQL", up, 60, every=0.1)
        if self.has_statements:
            self.query("postgres", "CREATE EXTENSION pg_stat_statements")
        settings = dict(self.query("postgres", "SELECT name, setting FROM pg_settings WHERE "
                                   "name IN ('fsync', 'synchronous_commit', "
                                   "'full_page_writes', 'wal_level', 'shared_buffers', "
                                   "'max_wal_size', 'checkpoint_timeout', 'server_version')"))
        log("PostgreSQL %s in %s (socket only): fsync=%s synchronous_commit=%s"
            % (settings.get("server_version"), self.dir, settings.get("fsync"),
               settings.get("synchronous_commit")))
        return settings

    def stop(self, keep):
        if self.proc:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)  # fast shutdown
            stop(self.proc)
            self.proc = None
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def psql(self, db, sql, check=True):
        r = subprocess.run([os.path.join(self.bin, "psql"), "-h", self.dir, "-p",
                            str(self.port), "-U", "labhook", "-d", db, "-v", "ON_ERROR_STOP=1",
                            "-XAtq", "-F", "\x1f", "-R", "\x1e", "-c", sql],
                           capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise BenchError("psql %s: %s" % (sql[:60], r.stderr.strip()))
        return r

    def query(self, db, sql):
        out = self.psql(db, sql).stdout.rstrip("\n")
        return [tuple(_value(v) for v in row.split("\x1f")) for row in out.split("\x1e") if row]

    def create_db(self, name):
        self.query("postgres", "CREATE DATABASE " + name)
        return name

    def wal_lsn(self):
        return int(self.query("postgres", "SELECT pg_current_wal_lsn() - '0/0'")[0][0])

    def stats(self, on):
        self.query("postgres", "ALTER SYSTEM SET pg_stat_statements.track = '%s'"
                   % ("top" if on else "none"))
        self.query("postgres", "SELECT pg_reload_conf()")
        time.sleep(0.5)

    def cpu_seconds(self):
        """{pid: CPU seconds used so far} of the server: the postmaster and its children."""
        out = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(d) == self.proc.pid or int(fields[1]) == self.proc.pid:
                out[int(d)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return out


# --- the pg scenario: SQLite, one node on PostgreSQL, two nodes, takeover -----------------

def write_bill_body(path, lab):
    with open(path, "w") as f:
        json.dump({"labID": lab, "integrator_id": "BENCH",
                   "patient_details": {"first_name": "A", "gender": "male", "age": 30,
                                       "age_type": "year"},
                   "unmapped_tests": ["CBC"]}, f)
    return path


def api_ok(what, st, j):
    if st != 200 or not j:
        raise BenchError("%s: HTTP %d %s" % (what, st, j))
    return j


def make_accounts(node, label, hook_base, n, tmp):
    """n catch-all accounts made with the admin key, each with a lab and one subscription
    (bill.created) to its own path on the one nginx: hook_base/<label>/<i>."""
    key = node.admin_key()
    out = []
    for i in range(n):
        j = api_ok("account", *http_json("POST", node.base + "/admin/accounts",
                                         {"name": "bench %s %d" % (label, i),
                                          "mode": "catch-all"}, token=key))
        a = {"i": i, "id": j["clientID"], "secret": j["clientSecret"],
             "path": "/%s/%d" % (label, i)}
        a["lab"] = api_ok("lab", *http_json("POST", node.base + "/admin/accounts/%s/labs"
                                            % a["id"], {"name": "Lab %d" % i},
                                            token=key))["labID"]
        j = api_ok("subscribe", *http_json("POST", node.base + "/client/events/subscribe",
                                           {"labID": a["lab"], "events": ["bill.created"],
                                            "endpoint": hook_base + a["path"],
                                            "protocol": "https"}, token=account_token(node, a)))
        a["sub"] = j["subscription"]["id"]
        a["body"] = write_bill_body(os.path.join(tmp, "bill-%s-%d.json" % (label, i)), a["lab"])
        out.append(a)
    return out


def account_token(node, a):
    return api_ok("token", *http_json("POST", node.base + "/client/auth/token",
                                      {"clientID": a["id"],
                                       "clientSecret": a["secret"]}))["authToken"]


def set_subs(node, accts, status, tokens=None):
    """Pauses or resumes the accounts' subscriptions (tokens: one per account, made
    beforehand, so that a timed resume does not include a token's hash each)."""
    for i, a in enumerate(accts):
        api_ok("pause/resume", *http_json("PATCH", node.base + "/client/events/subscriptions/"
                                          + a["sub"], {"status": status},
                                          token=tokens[i] if tokens else
                                          account_token(node, a)))


def loadgen_args(url, body_file, count, conc, rate=0, headers=()):
    args = [LOADGEN, "--url", url, "--body-file", body_file, "--count", str(count),
            "--concurrency", str(conc)]
    if rate:
        args += ["--rate", "%g" % rate]
    for h in headers:
        args += ["--header", h]
    return args


def start_loadgens(nodes, accts, n, conc, rate=0):
    """One loadgen per account, all at once: account i's bills through node i % len(nodes),
    n bills and conc connections in all (split evenly), rate bills/s in all when given."""
    procs = []
    for a in accts:
        node = nodes[a["i"] % len(nodes)]
        args = loadgen_args(node.base + "/client/billing/create", a["body"],
                            max(1, n // len(accts)), max(1, conc // len(accts)),
                            rate=rate / len(accts) if rate else 0,
                            headers=("Authorization: Bearer " + account_token(node, a),))
        procs.append(spawn(args, subprocess.PIPE, subprocess.PIPE))
    return procs


def finish_loadgens(procs, timeout):
    """Waits for the loadgens of start_loadgens(); their summaries, combined: bills answered
    200 per second from the first request of any to the last answer of any."""
    deadline = time.monotonic() + timeout
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise BenchError("loadgen took over %ds" % timeout)
        stop(p)
        if p.returncode != 0 or not out.strip():
            raise BenchError("loadgen failed (%d): %s %s" % (p.returncode, out.strip(),
                                                             err.strip()))
        out, err = out.decode(), err.decode()
        outs.append({k: float(v) for k, v in (w.split("=") for w in out.split())})
    t0, t1 = min(o["t_first"] for o in outs), max(o["t_last"] for o in outs)
    ok = sum(o["ok"] for o in outs)
    p50 = sorted(o["p50_ms"] for o in outs)[len(outs) // 2]
    return {"ok": ok, "fail": sum(o["fail"] for o in outs), "span_s": t1 - t0,
            "eps": ok / max(t1 - t0, 1e-3), "api_p50_ms": p50,
            "api_p99_ms": max(o["p99_ms"] for o in outs),
            "per_loadgen_rps": [round(o["rps"]) for o in outs], "t_first": t0, "t_last": t1}


def lease_holders(pg, db, nodes):
    """{sub_id: index of the node in nodes that holds its lease now}."""
    pid_to = {n.proc.pid: i for i, n in enumerate(nodes) if n.proc}
    rows = pg.query(db, "SELECT l.sub_id, n.pid FROM leases l JOIN nodes n"
                        " ON n.node_id = l.node_id WHERE l.expires_at > now()")
    return {sub: pid_to.get(pid) for sub, pid in rows}


def wait_spread(pg, db, nodes, accts, timeout):
    """Until every subscription is leased and each node holds its even share."""
    want = math.ceil(len(accts) / len(nodes))

    def spread():
        h = lease_holders(pg, db, nodes)
        counts = [list(h.values()).count(i) for i in range(len(nodes))]
        return counts if len(h) == len(accts) and all(c >= len(accts) // len(nodes)
                                                       and c <= want for c in counts) else None
    counts = wait_for("the leases spread over %d nodes" % len(nodes), spread, timeout,
                      every=0.2)
    log("leases: %s subscriptions per node" % counts)


def thread_cpu(pid):
    """{thread name: CPU seconds} of a process (threads of one name added up)."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                head, _, rest = f.read().rpartition(")")
        except OSError:
            continue
        fields = rest.split()
        name = head.partition("(")[2]
        out[name] = out.get(name, 0) + (int(fields[11]) + int(fields[12])) / \
            os.sysconf("SC_CLK_TCK")
    return out


def proc_title(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


class ActivitySampler:
    """Samples pg_stat_activity of one database every `every` seconds through one psql
    session (no process per sample), in a thread: what each labhook connection is doing.
    The writer connection (the one that runs the batches) is told apart by its statements;
    its samples say where a batch's time goes: executing, flushing the WAL at COMMIT,
    waiting for the advisory lock, or waiting for labhook's next statement (a round trip)."""

    WRITER = ("SAVEPOINT", "RELEASE", "WITH B AS (INSERT", "WITH EV AS (INSERT", "COMMIT",
              "BEGIN", "SELECT PG_ADVISORY_XACT_LOCK", "ROLLBACK")

    def __init__(self, pg, db, every=0.01):
        self.pg, self.db, self.every = pg, db, every
        self.counts = {}
        self.samples = 0
        self.stop_ev = threading.Event()
        self.proc = spawn([os.path.join(pg.bin, "psql"), "-h", pg.dir, "-p", str(pg.port),
                           "-U", "labhook", "-d", "postgres", "-XAtq", "-F", "|"],
                          subprocess.PIPE, subprocess.DEVNULL, stdin=subprocess.PIPE)
        self.w = io.TextIOWrapper(self.proc.stdin)
        self.r = io.TextIOWrapper(self.proc.stdout)
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def run(self):
        sql = ("SELECT pid, state, coalesce(wait_event_type, ''), coalesce(wait_event, ''),"
               " upper(left(ltrim(query), 30)) FROM pg_stat_activity"
               " WHERE datname = '%s' AND backend_type = 'client backend';\n\\echo @@\n"
               % self.db)
        while not self.stop_ev.is_set():
            self.w.write(sql)
            self.w.flush()
            rows = []
            for line in self.r:
                line = line.rstrip("\n")
                if line == "@@":
                    break
                rows.append(line.split("|", 4))
            else:
                return
            self.samples += 1
            for pid, state, wtype, wev, q in rows:
                kind = "writer" if q.startswith(self.WRITER) else \
                    "listener" if q.startswith("LISTEN") else "pool"
                if state == "active":
                    what = "active: " + (wev or "CPU")
                elif state.startswith("idle in transaction"):
                    what = "in a transaction, waiting for labhook"
                else:
                    what = "idle"
                key = (kind, what)
                self.counts[key] = self.counts.get(key, 0) + 1
            time.sleep(self.every)

    def finish(self):
        self.stop_ev.set()
        self.thread.join(10)
        stop(self.proc)
        out = {}
        for (kind, what), c in sorted(self.counts.items(), key=lambda x: -x[1]):
            out.setdefault(kind, {})[what] = c
        # Fractions of the samples for the writer connection: where a batch's time goes.
        w = out.get("writer", {})
        tot = sum(w.values()) or 1
        return {"samples": self.samples, "writer": {k: round(v / tot, 3) for k, v in w.items()},
                "all_connections": out}


class CpuMeter:
    """CPU of each labhook node (and its busiest threads) and of the PostgreSQL server (and
    its busiest backends) over an interval, in cores."""

    def __init__(self, nodes, pg):
        self.nodes, self.pg = nodes, pg
        self.t = time.monotonic()
        self.n0 = [thread_cpu(n.proc.pid) for n in nodes]
        self.pg0 = pg.cpu_seconds() if pg else {}

    def read(self):
        dt = max(time.monotonic() - self.t, 1e-3)
        r = {"nodes_cores": [], "node_threads": []}
        for n, c0 in zip(self.nodes, self.n0):
            c1 = thread_cpu(n.proc.pid)
            r["nodes_cores"].append(round((sum(c1.values()) - sum(c0.values())) / dt, 2))
            d = sorted(((c1[k] - c0.get(k, 0)) / dt, k) for k in c1)[::-1]
            r["node_threads"].append({k: round(v, 2) for v, k in d[:3] if v >= 0.01})
        if self.pg:
            c1 = self.pg.cpu_seconds()
            r["postgres_cores"] = round((sum(c1.values()) - sum(self.pg0.values())) / dt, 2)
            d = sorted(((c1[k] - self.pg0.get(k, 0)) / dt, k) for k in c1)[::-1]
            r["postgres_top"] = [[proc_title(k)[:60], round(v, 2)] for v, k in d[:3]
                                 if v >= 0.01]
        return r


def node_cpu(sampler, nodes, a, b, count):
    """CPU of each node over [a, b] per unit (count: all the nodes' units, so the nodes'
    figures add up to "us")."""
    per = [sampler.per("node%d" % i, a, b, count) for i in range(len(nodes))]
    return {"us": sum(x["us"] for x in per), "nodes": per}


def throughput(label, nodes, accts, ng, ceiling, sampler, pg=None, db=None):
    """PG_ROUNDS rounds of: every subscription paused, PG_N bills through the nodes (ingest
    alone), then all resumed and the drain to nginx timed (delivery alone); a raw-client run
    after each round. Returns the rounds and the best of each. The nodes' CPU per bill and
    per webhook is taken over the real spans (first request to last answer; resume to last
    arrival) from sampler."""
    n, rounds = CFG["PG_N"], []
    for i, node in enumerate(nodes):
        sampler.watch("node%d" % i, node.proc.pid)
    for k in range(CFG["PG_ROUNDS"]):
        step("%s, round %d/%d: %d bills through %d node(s), %d subscriptions paused; then "
             "resumed" % (label, k + 1, CFG["PG_ROUNDS"], n, len(nodes), len(accts)))
        set_subs(nodes[0], accts, "paused")
        ng.read_log()
        n_before = len(ng.arrivals)
        cpu = CpuMeter(nodes, pg)
        lsn0 = pg.wal_lsn() if pg else 0
        procs = start_loadgens(nodes, accts, n, CFG["C"])
        g = finish_loadgens(procs, 60 + n / 50)
        ingest = dict(g, cpu=cpu.read(),
                      labhook_cpu_per_bill=node_cpu(sampler, nodes, g["t_first"], g["t_last"],
                                                    g["ok"]))
        if pg:
            ingest["wal_bytes_per_event"] = (pg.wal_lsn() - lsn0) / max(g["ok"], 1)
        if g["fail"]:
            log("%d bills failed" % g["fail"])
        log("ingest: %.0f bills/s (p50 %.2f ms p99 %.2f ms), CPU %s"
            % (g["eps"], g["api_p50_ms"], g["api_p99_ms"], json.dumps(ingest["cpu"])))

        holders = lease_holders(pg, db, nodes) if len(nodes) > 1 else {}
        node_of_path = {a["path"]: holders.get(a["sub"], 0) for a in accts}
        tokens = [account_token(nodes[0], a) for a in accts]
        cpu = CpuMeter(nodes, pg)
        t_resume = time.time()
        set_subs(nodes[0], accts, "active", tokens)
        ng.wait_arrivals(n_before + int(g["ok"]), CFG["DELIVER_TIMEOUT"])
        drain = {"cpu": cpu.read()}
        new = list(ng.arrivals.items())[n_before:]
        last = max(t for _, t in new)
        drain.update(webhooks=len(new), span_s=last - t_resume,
                     dps=len(new) / (last - t_resume),
                     first_after_s=min(t for _, t in new) - t_resume,
                     labhook_cpu_per_webhook=node_cpu(sampler, nodes, t_resume, last,
                                                      len(new)),
                     nginx_cpu_per_webhook=sampler.per("nginx", t_resume, last, len(new)),
                     conns=ng.spread_of([w for w, _ in new]))
        if len(nodes) > 1:
            per = []
            for i in range(len(nodes)):
                ts = [t for w, t in new if node_of_path.get(ng.path_of[w]) == i]
                per.append({"subscriptions": list(node_of_path.values()).count(i),
                            "webhooks": len(ts),
                            "span_s": (max(ts) - t_resume) if ts else 0.0,
                            "dps": len(ts) / (max(ts) - t_resume) if ts else 0.0})
            drain["per_node"] = per
            for p, c in zip(per, drain["labhook_cpu_per_webhook"]["nodes"]):
                # The node's CPU per webhook it sent itself.
                p["cpu_us_per_webhook"] = c["us"] * len(new) / max(p["webhooks"], 1)
        log("delivery: %d webhooks in %.2f s after the resume (%.0f/s; first after %.2f s), "
            "CPU %s%s" % (len(new), drain["span_s"], drain["dps"], drain["first_after_s"],
                          json.dumps(drain["cpu"]),
                          "; per node " + " / ".join("%d in %.2f s" % (p["webhooks"], p["span_s"])
                                                     for p in drain["per_node"])
                          if "per_node" in drain else ""))
        log("CPU: %.1f us per bill (ingest), %.1f us per webhook (drain), labhook"
            % (ingest["labhook_cpu_per_bill"]["us"], drain["labhook_cpu_per_webhook"]["us"]))
        c = ceiling("after %s round %d" % (label, k + 1))
        drain["cpu_ratio"] = drain["labhook_cpu_per_webhook"]["us"] / c["cpu_us_per_req"]
        drain["round_ratio"] = drain["dps"] / c["dps"]
        rounds.append({"ingest": ingest, "delivery": drain})
    for i in range(len(nodes)):
        sampler.unwatch("node%d" % i)
    best_i = max(rounds, key=lambda x: x["ingest"]["eps"])["ingest"]
    best_d = max(rounds, key=lambda x: x["delivery"]["dps"])["delivery"]
    med = statistics.median
    return {"nodes": len(nodes), "subscriptions": len(accts), "bills_per_round": n,
            "ingest_eps": best_i["eps"], "delivery_dps": best_d["dps"],
            "ingest": best_i, "delivery": best_d, "rounds": rounds,
            # Medians of the rounds: CPU per unit varies less than the rates.
            "cpu_us_per_bill": med(x["ingest"]["labhook_cpu_per_bill"]["us"] for x in rounds),
            "cpu_us_per_webhook": med(x["delivery"]["labhook_cpu_per_webhook"]["us"]
                                      for x in rounds),
            "cpu_ratio": med(x["delivery"]["cpu_ratio"] for x in rounds)}


def statement_stats(pg, db, nodes, accts):
    """The labhook node's statements and WAL per event: STATS_N more bills (subscriptions
    paused) with pg_stat_statements tracking on, the WAL position before and after."""
    n = CFG["STATS_N"]
    step("PostgreSQL statements and WAL per event: %d bills, pg_stat_statements on" % n)
    set_subs(nodes[0], accts, "paused")
    pg.stats(True)
    try:
        pg.query("postgres", "SELECT pg_stat_statements_reset()")
        tables = ("bills", "reports", "events", "deliveries")
        count = "SELECT " + ", ".join("(SELECT count(*) FROM %s)" % t for t in tables)
        rows0 = pg.query(db, count)[0]
        lsn0 = pg.wal_lsn()
        sampler = ActivitySampler(pg, db).start()
        g = finish_loadgens(start_loadgens(nodes, accts, n, CFG["C"]), 60 + n / 50)
        activity = sampler.finish()
        lsn1 = pg.wal_lsn()
        rows1 = pg.query(db, count)[0]
        rows = pg.query("postgres", "SELECT regexp_replace(s.query, '\\s+', ' ', 'g'), s.calls,"
                        " s.rows, s.wal_bytes, s.wal_fpi, s.total_exec_time"
                        " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
                        " WHERE d.datname = '%s' ORDER BY s.calls DESC" % db)
    finally:
        pg.stats(False)
    ev = max(g["ok"], 1)
    calls = sum(r[1] for r in rows)
    commits = sum(r[1] for r in rows if r[0].strip().upper().startswith("COMMIT"))
    inserted = {t: (b - a) / ev for t, a, b in zip(tables, rows0, rows1)}
    top = [{"statement": r[0][:110], "per_event": round(r[1] / ev, 3),
            "rows_per_event": round(r[2] / ev, 3), "wal_bytes_per_event": round(r[3] / ev, 1),
            "exec_us_per_event": round(r[5] * 1000 / ev, 1)} for r in rows[:15]]
    out = {"bills": int(g["ok"]), "eps_with_tracking": g["eps"],
           "wal_bytes_per_event": (lsn1 - lsn0) / ev,
           "wal_fpi_per_event": sum(r[4] for r in rows) / ev,
           "statements_per_event": calls / ev, "commits_per_event": commits / ev,
           "events_per_commit": ev / max(commits, 1),
           "rows_inserted_per_event": inserted,
           "server_exec_us_per_event": sum(r[5] for r in rows) * 1000 / ev,
           "top_statements": top, "activity": activity}
    log("%.0f WAL bytes, %.2f statements, %.3f commits (%.1f events per commit) per event"
        % (out["wal_bytes_per_event"], out["statements_per_event"], out["commits_per_event"],
           out["events_per_commit"]))
    log("the writer's connection (%d samples): %s" % (activity["samples"],
                                                      json.dumps(activity["writer"])))
    return out


def one_kill(k, pg, db, ng, a, b, accts):
    """A steady paced load through node B, SIGKILL node A after TAKEOVER_WARM s; for each
    subscription A held, the time from the kill to its first webhook at nginx after it."""
    rate, warm, wait = CFG["TAKEOVER_RATE"], CFG["TAKEOVER_WARM"], CFG["TAKEOVER_WAIT"]
    # The takeover depends on where the nodes' lease renewals (every third of the lease)
    # stand at the kill: a random extra wait over one such period samples them all.
    warm += random.uniform(0, 5)
    step("takeover %d/%d: %d bills/s through node B; SIGKILL node A after %.1f s"
         % (k + 1, CFG["TAKEOVER_KILLS"], rate, warm))
    procs = start_loadgens([b], accts, rate * (warm + wait + 10), CFG["C"], rate=rate)
    time.sleep(warm)
    held = lease_holders(pg, db, [a, b])
    victims = {x["path"] for x in accts if held.get(x["sub"]) == 0}
    ng.read_log()
    n_kill = len(ng.arrivals)
    a.proc.send_signal(signal.SIGKILL)
    t_kill = time.time()
    a.proc.wait()
    stop(a.proc)
    a.proc = None
    log("node A killed; it held %d of %d subscriptions" % (len(victims), len(accts)))
    # A request nginx had fully read before the kill may be logged a few ms after it: the
    # first webhook "again" is the first one later than half a second after the kill.
    again = {}

    def all_back():
        ng.read_log()
        for w, t in list(ng.arrivals.items())[n_kill:]:
            p = ng.path_of[w]
            if p in victims and t > t_kill + 0.5 and p not in again:
                again[p] = t - t_kill
        return len(again) == len(victims)
    deadline = time.monotonic() + wait
    while not all_back() and time.monotonic() < deadline:
        time.sleep(0.25)
    time.sleep(1.5)  # a little more of the load after the takeover, then nginx's log buffer
    ng.read_log()
    # The survivor's own subscriptions: the longest pause in their webhooks around the kill.
    gap = 0.0
    for p in {x["path"] for x in accts} - victims:
        ts = sorted(t for w, t in ng.arrivals.items() if ng.path_of.get(w) == p
                    and t_kill - 2 <= t <= t_kill + wait)
        gap = max([gap] + [y - x for x, y in zip(ts, ts[1:])])
    last_before = max((t for w, t in ng.arrivals.items()
                       if ng.path_of.get(w) in victims and t <= t_kill + 0.5), default=0)
    for p in procs:
        stop(p)  # the paced load
    r = {"victims": len(victims), "killed_after_s": warm,
         "per_subscription_s": {p: round(again[p], 2) if p in again else None
                                for p in sorted(victims)},
         "takeover_s": max(again.values()) if victims and len(again) == len(victims) else None,
         "first_s": min(again.values()) if again else None, "survivor_max_gap_s": gap,
         "victims_last_webhook_before_kill_s": t_kill - last_before if last_before else None}
    log("takeover: %s (per subscription %s); the survivor's longest pause %.2f s"
        % ("%.1f s" % r["takeover_s"] if r["takeover_s"] is not None else "NONE within %d s"
           % wait, sorted(v for v in r["per_subscription_s"].values() if v is not None), gap))
    return r


def takeover(pg, ng, hook_base, tmp, ca):
    """Two nodes at the default lease (15 s), PG_SUBS subscriptions spread over them;
    TAKEOVER_KILLS times: a paced load through node B, SIGKILL node A, time until A's
    subscriptions are served again (one_kill), A restarted and the leases spread again.
    takeover_s is the worst kill. Then nothing acknowledged may be missing at nginx."""
    db = pg.create_db("lh_takeover")
    a = Labhook(tmp, "pg-takeover-a", ca, pg=pg, db=db)
    b = Labhook(tmp, "pg-takeover-b", ca, pg=pg, db=db)
    a.start(demo=False)
    b.start(demo=False)
    accts = make_accounts(a, "takeover", hook_base, CFG["PG_SUBS"], tmp)
    wait_spread(pg, db, [a, b], accts, 60)
    repeats0 = ng.repeats
    kills = []
    for k in range(CFG["TAKEOVER_KILLS"]):
        kills.append(one_kill(k, pg, db, ng, a, b, accts))
        a.start(demo=False)  # the same data directory: back in the cluster
        wait_spread(pg, db, [a, b], accts, 60)
    times = [x["takeover_s"] for x in kills]
    r = {"lease_s": 15, "rate": CFG["TAKEOVER_RATE"], "subscriptions": len(accts),
         "kills": kills,
         "takeover_s": None if None in times else max(times),
         "survivor_max_gap_s": max(x["survivor_max_gap_s"] for x in kills)}

    def drained():
        return b.query("SELECT count(*) FROM deliveries WHERE status = 0")[0][0] == 0
    wait_for("the takeover database's deliveries to drain", drained, 120, every=0.5)
    events = b.query("SELECT count(*) FROM events")[0][0]
    paths = {x["path"] for x in accts}
    time.sleep(1.2)  # nginx's log buffer
    ng.read_log()
    arrived = sum(1 for w in ng.arrivals if ng.path_of.get(w) in paths)
    r.update(events=events, arrived=arrived, lost=events - arrived,
             duplicates=ng.repeats - repeats0)
    r.update(delivery_summary(b))
    a.stop()
    b.stop()
    log("takeover: worst %s of %s; %d events, %d lost, %d duplicates"
        % (r["takeover_s"], times, events, r["lost"], r["duplicates"]))
    return r


PG_TARGETS = (  # (figure, comparison, bound, what the issue asks)
    ("pg_ingest_eps", ">=", 5000, "one node on PostgreSQL ingests at least 5,000 events/s"),
    ("pg_delivery_ratio", ">=", 0.5, "...and delivers at least 0.5 of the raw client's rate"),
    ("pg2_vs_pg1", ">=", 1.0, "two nodes deliver no less than one"),
    ("takeover_s", "<=", 20, "takeover within 20 s at the default lease (15 s)"),
)


def scenario_pg(tmp, ca, cert, key):
    r = {"settings": {k: CFG[k] for k in ("CEIL_N", "CEIL_C", "PG_N", "C", "PG_ROUNDS",
                                          "PG_SUBS", "STATS_N", "TAKEOVER_RATE",
                                          "TAKEOVER_WARM", "TAKEOVER_WAIT",
                                          "TAKEOVER_KILLS")}}
    ng = Nginx(tmp, "nginx-pg", free_port(), cert, key)
    ng.start()
    hook_base = "https://127.0.0.1:%d" % ng.port
    payload = os.path.join(tmp, "ceiling-pg.json")
    size = ceiling_payload(payload)
    ceilings = []

    sampler = CpuSampler().start()
    sampler.watch("nginx", ng.worker)

    def ceiling(when):
        return raw_ceiling(ng, hook_base + "/hook", payload, ca, when, ceilings, sampler)
    ceiling("before")

    pg = Postgres()
    try:
        r["postgres"] = pg.start()
        r["postgres"]["pg_stat_statements"] = pg.has_statements

        # SQLite, one node (the main scenario's setup, with PG_SUBS accounts).
        lh = Labhook(tmp, "sqlite-1", ca)
        lh.start(demo=False)
        accts = make_accounts(lh, "sqlite", hook_base, CFG["PG_SUBS"], tmp)
        r["sqlite"] = throughput("SQLite, one node", [lh], accts, ng, ceiling, sampler)
        r["sqlite"].update(delivery_summary(lh))
        lh.stop()

        # PostgreSQL, one node, a database of its own.
        db = pg.create_db("lh_pg1")
        lh = Labhook(tmp, "pg-1", ca, pg=pg, db=db)
        lh.start(demo=False)
        accts = make_accounts(lh, "pg1", hook_base, CFG["PG_SUBS"], tmp)
        r["pg1"] = throughput("PostgreSQL, one node", [lh], accts, ng, ceiling, sampler, pg,
                              db)
        r["pg1"].update(delivery_summary(lh))
        if pg.has_statements:
            r["pg1"]["statements"] = statement_stats(pg, db, [lh], accts)
        lh.stop()

        # PostgreSQL, two nodes on one database.
        db = pg.create_db("lh_pg2")
        nodes = [Labhook(tmp, "pg-2%s" % x, ca, pg=pg, db=db) for x in "ab"]
        for node in nodes:
            node.start(demo=False)
        accts = make_accounts(nodes[0], "pg2", hook_base, CFG["PG_SUBS"], tmp)
        wait_spread(pg, db, nodes, accts, 60)
        r["pg2"] = throughput("PostgreSQL, two nodes", nodes, accts, ng, ceiling, sampler, pg,
                              db)
        r["pg2"].update(delivery_summary(nodes[0]))
        if pg.has_statements:
            r["pg2"]["statements"] = statement_stats(pg, db, nodes, accts)
        for node in nodes:
            node.stop()

        if CFG["TAKEOVER_KILLS"]:
            r["takeover"] = takeover(pg, ng, hook_base, tmp, ca)
        else:
            r["takeover"] = {"takeover_s": None, "kills": [], "skipped": True}
    finally:
        pg.stop(keep=CFG["KEEP"])
    best = max(ceilings, key=lambda c: c["dps"])
    r["ceiling"] = dict(best, requests=CFG["CEIL_N"], payload_bytes=size, runs=ceilings)
    for k in ("sqlite", "pg1", "pg2"):
        r[k]["delivery_ratio"] = r[k]["delivery_dps"] / best["dps"]
    r["nginx_log_lines"] = ng.lines
    ng.stop()
    r["sampler_cores"] = sampler.stop()
    s = {"sqlite_ingest_eps": r["sqlite"]["ingest_eps"], "pg_ingest_eps": r["pg1"]["ingest_eps"],
         "pg2_ingest_eps": r["pg2"]["ingest_eps"],
         "sqlite_delivery_dps": r["sqlite"]["delivery_dps"],
         "pg_delivery_dps": r["pg1"]["delivery_dps"],
         "pg2_delivery_dps": r["pg2"]["delivery_dps"], "ceiling_dps": best["dps"],
         "pg_delivery_ratio": r["pg1"]["delivery_ratio"],
         "pg2_vs_pg1": r["pg2"]["delivery_dps"] / r["pg1"]["delivery_dps"],
         "takeover_s": r["takeover"]["takeover_s"]}
    for k in ("sqlite", "pg", "pg2"):
        x = r["pg1" if k == "pg" else k]
        s[k + "_cpu_us_per_webhook"] = x["cpu_us_per_webhook"]
        s[k + "_cpu_us_per_bill"] = x["cpu_us_per_bill"]
    s["pg_cpu_ratio"] = r["pg1"]["cpu_ratio"]
    r["summary"] = s
    r["targets"] = check_targets(s, PG_TARGETS)
    return r


def fmt_cpu(c):
    """A CpuMeter reading, short: cores of each node and of PostgreSQL."""
    out = "labhook " + " + ".join("%.2f" % x for x in c["nodes_cores"])
    if "postgres_cores" in c:
        out += ", postgres %.2f" % c["postgres_cores"]
    return out + " cores"


def report_pg(r):
    c = r["ceiling"]
    print("\nlabhook on PostgreSQL (%d CPUs; %d subscriptions, one per account, %d bills per "
          "round, best of %d rounds)" % (os.cpu_count(), r["settings"]["PG_SUBS"],
                                         r["settings"]["PG_N"], r["settings"]["PG_ROUNDS"]))
    rows = [("ceiling (nginx direct)", "%.0f req/s  (best of %s)"
             % (c["dps"], " / ".join("%.0f" % x["dps"] for x in c["runs"]))),
            ("  raw client CPU", "%s us/request (each run); nginx %s"
             % (" / ".join("%.1f" % x["cpu_us_per_req"] for x in c["runs"]),
                " / ".join("%.1f" % x["nginx_cpu"]["us"] for x in c["runs"])))]
    for k, name in (("sqlite", "SQLite, 1 node"), ("pg1", "PostgreSQL, 1 node"),
                    ("pg2", "PostgreSQL, 2 nodes")):
        x = r[k]
        i, d = x["ingest"], x["delivery"]
        rows.append(("%s: ingest" % name, "%.0f bills/s  p50 %.2f ms p99 %.2f ms  (rounds %s)"
                     "  %s" % (x["ingest_eps"], i["api_p50_ms"], i["api_p99_ms"],
                                 " / ".join("%.0f" % y["ingest"]["eps"] for y in x["rounds"]),
                                 fmt_cpu(i["cpu"]))))
        rows.append(("%s: delivery" % name, "%.0f webhooks/s = %.1f%% of ceiling  (rounds %s)"
                     "  %s" % (x["delivery_dps"], 100 * x["delivery_ratio"],
                                 " / ".join("%.0f" % y["delivery"]["dps"]
                                            for y in x["rounds"]), fmt_cpu(d["cpu"]))))
        if "per_node" in d:
            rows.append(("  per node", " / ".join("%d subs: %d in %.2f s (%.0f/s), %.1f us "
                                                  "CPU per own webhook"
                                                  % (p["subscriptions"], p["webhooks"],
                                                     p["span_s"], p["dps"],
                                                     p["cpu_us_per_webhook"])
                                                  for p in d["per_node"])))
        for j, y in enumerate(x["rounds"]):
            yi, yd = y["ingest"]["labhook_cpu_per_bill"], y["delivery"]
            for m, (ci, cd) in enumerate(zip(yi["nodes"], yd["labhook_cpu_per_webhook"]["nodes"])):
                node = " node %s" % "ab"[m] if len(yi["nodes"]) > 1 else ""
                rows.append(("  round %d%s, CPU" % (j + 1, node), fmt_per(ci, "bill")))
                rows.append(("", fmt_per(cd, "webhook")))
            rows.append(("  round %d" % (j + 1), "labhook %.1f us/bill, %.1f us/webhook; nginx "
                         "%.1f us/webhook; %s; cpu_ratio %.2f; %.2f of the next raw run"
                         % (yi["us"], yd["labhook_cpu_per_webhook"]["us"],
                            yd["nginx_cpu_per_webhook"]["us"], fmt_conns(yd["conns"]),
                            yd["cpu_ratio"], yd["round_ratio"])))
        rows.append(("  CPU, median of rounds", "%.1f us/bill, %.1f us/webhook, cpu_ratio %.2f"
                     % (x["cpu_us_per_bill"], x["cpu_us_per_webhook"], x["cpu_ratio"])))
        if "wal_bytes_per_event" in i:
            rows.append(("  WAL per bill (timed)", "%.0f bytes" % i["wal_bytes_per_event"]))
    for k, name in (("pg1", "1 node"), ("pg2", "2 nodes")):
        st = r[k].get("statements")
        if not st:
            continue
        rows.append(("PostgreSQL per bill, %s" % name,
                     "%.0f WAL bytes (%.3f full-page images), %.2f statements, %.3f commits "
                     "(%.1f bills per commit), %s rows, %.0f us executing"
                     % (st["wal_bytes_per_event"], st["wal_fpi_per_event"],
                        st["statements_per_event"], st["commits_per_event"],
                        st["events_per_commit"],
                        " + ".join("%.2f %s" % (v, t) for t, v in
                                   st["rows_inserted_per_event"].items()),
                        st["server_exec_us_per_event"])))
        rows.append(("  the writers' connections", ", ".join(
            "%.0f%% %s" % (100 * v, w) for w, v in st["activity"]["writer"].items())))
        if k == "pg1":
            for t in st["top_statements"][:8]:
                rows.append(("  %.3f/bill %4.0f us" % (t["per_event"], t["exec_us_per_event"]),
                             t["statement"][:80]))
    t = r["takeover"]
    for k, x in enumerate(t["kills"]):
        rows.append(("takeover after SIGKILL %d" % (k + 1), "%s  (lease 15 s; %d of %d "
                     "subscriptions: %s; the survivor's longest pause %.2f s)"
                     % ("%.1f s" % x["takeover_s"] if x["takeover_s"] is not None
                        else "NONE within %d s" % r["settings"]["TAKEOVER_WAIT"], x["victims"],
                        t["subscriptions"], " ".join(
                            "%.1f" % v for v in sorted(v for v in
                                                       x["per_subscription_s"].values()
                                                       if v is not None)),
                        x["survivor_max_gap_s"])))
    rows.append(("CPU sampler (bench.py)", "%.3f cores" % r["sampler_cores"]))
    if not t.get("skipped"):
        rows.append(("  afterwards", "%d events, %d lost, %d duplicates; %s"
                     % (t["events"], t["lost"], t["duplicates"], json.dumps(t["deliveries"]))))
    table(rows + target_rows(r["targets"]))


def pg_summary_line(r):
    s = r["summary"]
    tk = s["takeover_s"]
    return ("sqlite_ingest_eps=%.0f pg_ingest_eps=%.0f pg2_ingest_eps=%.0f "
            "sqlite_delivery_dps=%.0f pg_delivery_dps=%.0f pg2_delivery_dps=%.0f "
            "ceiling_dps=%.0f pg_delivery_ratio=%.3f pg2_vs_pg1=%.3f takeover_s=%s "
            "targets_met=%d/%d sqlite_cpu_us_per_webhook=%.1f pg_cpu_us_per_webhook=%.1f "
            "pg2_cpu_us_per_webhook=%.1f pg_cpu_ratio=%.2f sqlite_cpu_us_per_bill=%.1f "
            "pg_cpu_us_per_bill=%.1f pg2_cpu_us_per_bill=%.1f"
            % (s["sqlite_ingest_eps"], s["pg_ingest_eps"], s["pg2_ingest_eps"],
               s["sqlite_delivery_dps"], s["pg_delivery_dps"], s["pg2_delivery_dps"],
               s["ceiling_dps"], s["pg_delivery_ratio"], s["pg2_vs_pg1"],
               "%.1f" % tk if tk is not None else "none",
               sum(1 for x in r["targets"] if x["met"]), len(r["targets"]),
               s["sqlite_cpu_us_per_webhook"], s["pg_cpu_us_per_webhook"],
               s["pg2_cpu_us_per_webhook"], s["pg_cpu_ratio"], s["sqlite_cpu_us_per_bill"],
               s["pg_cpu_us_per_bill"], s["pg2_cpu_us_per_bill"]))


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
    if isinstance(v, list):
        return [rounded(x) for x in v]
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


def fmt_per(p, unit):
    """A CpuSampler.per() reading: total µs per unit, then each thread name's."""
    return "%.1f us/%s (%s)" % (p["us"], unit, ", ".join("%s %.1f" % (k, v)
                                                         for k, v in p["threads"].items()))


def fmt_conns(c):
    return "%d conns, busiest %.1f%%" % (c["connections"], c["max_share_pct"])


def target_rows(targets):
    return [("target %s %s" % (x["figure"], x["target"]),
             "%s (%s)  %s" % ("MET" if x["met"] else "MISSED",
                              "-" if x["value"] is None else "%.3g" % x["value"], x["what"]))
            for x in targets]


def report_main(r):
    p, d = r["paced"], r["delivery"]
    w = r["ingest"]["while_delivering"]
    print("\nlabhook benchmark (%d CPUs)" % os.cpu_count())
    rows = [
        ("ceiling (nginx direct)", "%.0f req/s  p50 %.2f ms  p99 %.2f ms  (%d B, %d conns; "
         "best of %s)" % (r["ceiling"]["dps"], r["ceiling"]["p50_ms"], r["ceiling"]["p99_ms"],
                          r["ceiling"]["payload_bytes"], CFG["CEIL_C"],
                          " / ".join("%.0f" % c["dps"] for c in r["ceiling"]["runs"])))]
    for c in r["ceiling"]["runs"]:
        rows.append(("  raw client, %s" % c["when"],
                     "%.0f req/s; CPU per request: raw client %.1f us, nginx %.1f us; %s"
                     % (c["dps"], c["cpu_us_per_req"], c["nginx_cpu"]["us"],
                        fmt_conns(c["conns"]))))
    rows.append(("ingest alone (queued)", "%.0f bills/s  p50 %.2f ms  p99 %.2f ms  "
                 "(subscription paused; best of %s)"
                 % (r["ingest"]["eps"], r["ingest"]["api_p50_ms"], r["ingest"]["api_p99_ms"],
                    " / ".join("%.0f" % q["eps"] for q in r["ingest"]["runs"]))))
    for k, q in enumerate(r["ingest"]["runs"]):
        rows.append(("  round %d, labhook CPU" % (k + 1),
                     fmt_per(q["labhook_cpu_per_bill"], "bill")))
    rows += [
        ("delivery alone (resumed)", "%.0f webhooks/s  (%d in %.2f s; best of %s)  = %.1f%% "
         "of ceiling" % (d["dps"], d["alone"]["webhooks"], d["alone"]["span_s"],
                         " / ".join("%.0f" % x["dps"] for x in d["alone"]["runs"]),
                         100 * d["ratio"])),
        ("  each against the next raw run", " / ".join("%.2f" % x for x in d["round_ratios"])),
    ]
    for k, x in enumerate(d["alone"]["runs"]):
        rows += [
            ("  round %d" % (k + 1), "%.0f webhooks/s, first after %.1f ms; %s; %.2f of the "
             "next raw run" % (x["dps"], 1000 * x["first_after_s"], fmt_conns(x["conns"]),
                               x["round_ratio"])),
            ("    labhook CPU", fmt_per(x["labhook_cpu_per_webhook"], "webhook")
             + "  %.2f cores" % x["labhook_cpu_per_webhook"]["cores"]),
            ("    nginx CPU", "%.1f us/webhook" % x["nginx_cpu_per_webhook"]["us"]),
            ("    cpu_ratio", "%.2f  (labhook per webhook / raw client per request, next run)"
             % x["cpu_ratio"]),
        ]
    rows += [
        ("  cpu_ratio, median", "%.2f  (rounds %s)"
         % (d["cpu_ratio"], " / ".join("%.2f" % x for x in d["cpu_ratios"]))),
        ("ingest while delivering", "%.0f bills/s  p50 %.2f ms  p99 %.2f ms  (%d conns)"
         % (w["eps"], w["api_p50_ms"], w["api_p99_ms"], CFG["C"])),
        ("delivery while ingesting", "%.0f webhooks/s  (%d in %.1f s, first request to last "
         "arrival)  = %.1f%% of ceiling (both_ratio)" % (d["while_ingesting_dps"],
                                                          d["webhooks"], d["span_s"],
                                                          100 * d["while_ingesting_ratio"])),
        ("  labhook CPU, ingest span", fmt_per(w["labhook_cpu_per_bill"], "bill")),
        ("  labhook CPU, to last arrival", fmt_per(d["labhook_cpu_per_bill"], "bill")
         + "  %.2f cores" % d["labhook_cpu_per_bill"]["cores"]),
        ("  nginx CPU", "%.1f us/webhook; %s" % (d["nginx_cpu_per_webhook"]["us"],
                                                fmt_conns(d["conns"]))),
        ("paced %d/s" % p["offered_per_s"], "API p50 %.2f ms p99 %.2f ms; e2e p50 %.1f ms "
         "p99 %.1f ms max %.1f ms" % (p["api_p50_ms"], p["api_p99_ms"], p["e2e_p50_ms"],
                                      p["e2e_p99_ms"], p["e2e_max_ms"])),
        ("paced, POST to webhook", "p50 %.1f ms p99 %.1f ms"
         % (p["from_send_p50_ms"], p["from_send_p99_ms"])),
        ("labhook peak RSS", "%.1f MB" % r["labhook"]["rss_peak_mb"]),
        ("deliveries", json.dumps(r["labhook"]["deliveries"])),
        ("failed attempts", json.dumps(r["labhook"]["failed_attempts"])),
        ("CPU sampler (bench.py)", "%.3f cores" % r["sampler_cores"]),
    ]
    table(rows + target_rows(r["targets"]))
    rep = r.get("repeats")
    if rep:
        print("\nover %d runs (the table above is the last): min / median / max" % rep["runs"])
        goals = {t["figure"]: t for t in r["targets"]}

        def num(v):
            return "%.0f" % v if abs(v) >= 100 else "%.3g" % v
        rows = []
        for k, v in rep["spread"].items():
            t = goals.get(k)
            rows.append((k, "%s / %s / %s%s" % (
                num(v["min"]), num(v["median"]), num(v["max"]),
                "  (target %s: met in %d of %d)" % (t["target"], rep["targets_met_in"][k],
                                                    rep["runs"]) if t else "")
                         if v else "n/a"))
        table(rows)


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
    if scenario not in ("main", "backlog", "pg", "all"):
        sys.exit("usage: bench.py [main|backlog|pg|all]")
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
        for name, fn in (("main", scenario_main_repeated), ("backlog", scenario_backlog),
                         ("pg", scenario_pg)):
            if scenario in (name, "all"):
                t = time.monotonic()
                out[name] = fn(tmp, ca, cert, key)
                path = save(name, out[name], time.monotonic() - t, git)
                log("%s: %.0f s; results in %s" % (name, time.monotonic() - t,
                                                   os.path.relpath(path, ROOT)))
        if "pg" in out:
            report_pg(out["pg"])
            # Alone, its summary is the last line; with `all`, main's stays the last.
            print(pg_summary_line(out["pg"]))
        if "backlog" in out:
            report_backlog(out["backlog"])
            b = out["backlog"]
            if "main" not in out:
                print("backlog_n=%d ready_s=%.2f rss_mb=%.1f drain_s=%.1f drain_dps=%.0f"
                      % (b["ingest"]["pending"], b["ready_s"], b["rss_peak_mb"],
                         b["drain_s"], b["drain_dps"]))
        if "main" in out:
            report_main(out["main"])
            print(summary_line(out["main"]))
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
