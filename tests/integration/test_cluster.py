"""Several labhook nodes on one PostgreSQL (issue 13): a node killed with SIGKILL mid-stream
loses nothing and its subscriptions are served again within the lease time plus 5 s;
PostgreSQL restarted under load loses nothing acknowledged and the nodes recover by
themselves; a secret rotated on one node is refused by another within 1 s.

Runs only on PostgreSQL (LABHOOK_TEST_STORE=pg, as tests/pg/with_pg.py sets for the
pg_integration_* tests); on SQLite it has nothing to test and passes at once."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

from faults import (all_deliveries, arrivals, bill_body, delivery_losses, subscribe,
                    wait_all_delivered)
from harness import Server, new_db, pg_uri, run_on_pg
from receiver import Receiver

RECV = Receiver()
LEASE_S = 4
EVENTS = ("bill.created", "report.completed", "bill.completed")


def node(db, *extra):
    """A labhook node on database db, with a data directory of its own."""
    return Server("--store", pg_uri(db), "--ca-file", RECV.ca, "--allow-net", "127.0.0.0/8",
                  "--retry-schedule", "0,200ms,500ms,1s,2s,3s,5s,5s,5s,5s",
                  "--lease-time", "%ds" % LEASE_S, "--max-in-flight", "8", *extra)


def leases_of(n, db):
    """The subscriptions node n holds a lease on now (its row in nodes has its pid)."""
    from harness import PgReader
    rows = PgReader(pg_uri(db)).execute(
        "SELECT l.sub_id FROM leases l JOIN nodes n ON n.node_id = l.node_id"
        " WHERE n.pid = ? AND l.expires_at > now()", (n.proc.pid,))
    return {r[0] for r in rows}


def as_client(srv, c):
    """The same account seen through another node: a token issued there."""
    return dict(c, token=srv.token(c["id"], c["secret"]))


class Load:
    """Client threads creating bills and completing their reports through some nodes."""

    def __init__(self, nodes, clients):
        self.nodes, self.clients = nodes, clients
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.bills = {}  # acknowledged bill -> its client
        self.completed = set()
        self.threads = [threading.Thread(target=self.work, args=(i,)) for i in range(4)]

    def call(self, method, path, body, c):
        srv = random.choice(self.nodes)
        try:
            return srv.request(method, path, body, token=c["tokens"][id(srv)], timeout=5)
        except Exception:  # noqa: BLE001  that node was killed under us
            time.sleep(0.02)
            return None

    def work(self, i):
        rnd = random.Random(i)
        while not self.stop.is_set():
            c = rnd.choice(self.clients)
            r = self.call("POST", "/client/billing/create", bill_body(c["lab"]), c)
            if r is None or r.status != 200:
                continue
            bill = r.json["billID"]
            with self.lock:
                self.bills[bill] = c
            if rnd.random() < 0.5:
                continue
            r = self.call("GET", "/client/bills/" + bill, None, c)
            if r is None or r.status != 200:
                continue
            ok = True
            for t in r.json["bill"]["billData"]["testData"]:
                r2 = self.call("POST", "/lab/bills/%s/reports/%s/complete" % (bill, t["_id"]),
                               None, dict(c, tokens=c["admin"]))
                ok = ok and r2 is not None and r2.status == 200
            if ok:
                with self.lock:
                    self.completed.add(bill)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def in_order(prefix):
    """{bill: [event types in the order of their first arrival, runs of one type folded]}.
    At least once: what a killed node had sent but not yet recorded is sent again by the
    next holder (a replay of events already seen); the order that counts is the first
    arrival of each event."""
    out, seen = {}, set()
    for r in sorted(RECV.received(prefix), key=lambda r: r["t"]):
        if r["status"] != 200 or r["headers"]["webhook-id"] in seen:
            continue
        seen.add(r["headers"]["webhook-id"])
        body = json.loads(r["body"])
        seq = out.setdefault(body["data"]["billID"], [])
        if not seq or seq[-1] != body["eventType"]:
            seq.append(body["eventType"])
    return out


def check_everything_arrived(srv, load, subs, dup_limit):
    """Every acknowledged bill's events delivered, in order per bill, with few duplicates."""
    lost, dups = [], 0
    for c in load.clients:
        ds = wait_all_delivered(srv, c, subs[c["id"]], 90)
        count, _ = arrivals(RECV, c["path"])
        l, d = delivery_losses(ds, count)
        lost += l
        dups += d
        got = in_order(c["path"])
        for bill, cl in load.bills.items():
            if cl is not c:
                continue
            assert bill in got, "acknowledged bill %s never arrived" % bill
            seq = got[bill]
            assert seq[0] == "bill.created", (bill, seq)
            if bill in load.completed:
                assert "bill.completed" in seq, (bill, seq)
                assert seq.index("bill.completed") > max(
                    i for i, e in enumerate(seq) if e == "report.completed"), (bill, seq)
    assert not lost, lost[:10]
    if callable(dup_limit):  # a bound that can be known only now
        dup_limit = dup_limit()
    assert dups <= dup_limit, "%d duplicates (at most %d accounted for)" % (dups, dup_limit)
    return dups


def clients_on(nodes, admin_srv, n):
    """n accounts made through admin_srv, each with a subscription (through node 1) to an
    endpoint of its own, and a token on every node."""
    out, subs = [], {}
    for i in range(n):
        c = admin_srv.client()
        c["path"] = "/ok/cluster-%d-%s" % (i, c["id"][-6:])
        subs[c["id"]] = subscribe(admin_srv, c, RECV.url(c["path"]), EVENTS)
        c["tokens"] = {id(s): s.token(c["id"], c["secret"]) for s in nodes}
        c["admin"] = {id(s): s.admin_key() for s in nodes}
        out.append(c)
    return out, subs


def test_three_nodes_and_a_sigkill():
    db = new_db("lh_cluster_kill")
    n1 = node(db).start()
    n2 = node(db).start()
    n3 = node(db).start()
    nodes = [n1, n2, n3]
    try:
        clients, subs = clients_on(nodes, n1, 6)
        # Every node holds some: the six spread over the three.
        deadline = time.time() + 3 * LEASE_S
        while time.time() < deadline and not all(leases_of(n, db) for n in nodes):
            time.sleep(0.2)
        held = [leases_of(n, db) for n in nodes]
        assert all(held), "leases not spread over the nodes: %s" % held
        with Load([n2, n3], clients) as load:
            time.sleep(2)
            victims = leases_of(n2, db)
            n2.stop(signal.SIGKILL)
            killed_at = time.time()
            load.nodes = [n3]
            time.sleep(1)
            # A bill for each of the dead node's subscriptions: served again in time.
            probe = {}
            for c in clients:
                if subs[c["id"]] in victims:
                    r = n3.post("/client/billing/create", bill_body(c["lab"]),
                                token=c["tokens"][id(n3)])
                    assert r.status == 200, r
                    probe[r.json["billID"]] = c
                    with load.lock:
                        load.bills[r.json["billID"]] = c
            limit = killed_at + LEASE_S + 5
            for bill, c in probe.items():
                while time.time() < limit and bill not in in_order(c["path"]):
                    time.sleep(0.1)
                assert bill in in_order(c["path"]), \
                    "the dead node's subscription was not served within %d s" % (LEASE_S + 5)
            print("   the dead node's %d subscriptions served again %.1f s after the kill"
                  % (len(victims), time.time() - killed_at))
            time.sleep(2)
            n2.start()  # the same data directory: back in the cluster
            load.nodes = [n2, n3]
            for c in clients:
                c["tokens"][id(n2)] = n2.token(c["id"], c["secret"])
            time.sleep(3)
        # What the killed node had sent and not yet recorded as sent goes again: attempts in
        # flight (at most --max-in-flight, 8) and outcomes on their way to the store (made
        # in the last ~20 ms before their batch commits).
        dups = check_everything_arrived(n1, load, subs, dup_limit=32)
        print("   %d bills (%d completed) through two nodes, one killed: none lost, %d repeats"
              % (len(load.bills), len(load.completed), dups))
    finally:
        for n in nodes:
            n.cleanup()


def pg_ctl(action):
    bin_dir, top = os.environ["LABHOOK_TEST_PG_BIN"], os.environ["LABHOOK_TEST_PG_DIR"]
    cmd = [os.path.join(bin_dir, "pg_ctl"), "-D", os.path.join(top, "data"), "-m", "fast",
           "-w", action]
    if action == "start":  # as tests/pg/with_pg.py started it (restart keeps its options)
        cmd[-1:-1] = ["-l", os.path.join(top, "server.log"), "-o",
                      "-c listen_addresses='' -k %s -p %s -c max_connections=200"
                      " -c shared_buffers=128MB" % (top, os.environ["LABHOOK_TEST_PG_PORT"])]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def pg_restart():
    pg_ctl("restart")


def refused_outcomes(nodes):
    """Outcomes the store refused (the fence: the lease had passed to another node), from
    the nodes' logs. Each is a delivery its new holder sends again, so each may arrive once
    more: at least once, and the only duplicates a database outage may cause (an outcome
    waiting for the database is recorded once it is back, under the same lease)."""
    n = 0
    for srv in nodes:
        for line in srv.log_lines:
            m = re.search(r" refused=(\d+) of=\d+ outcomes not recorded", line)
            if m:
                n += int(m.group(1))
    return n


def duplicates_report(nodes, clients, t0):
    """Each duplicated event's arrivals (seconds from t0) and the nodes' store and lease
    lines: what to look at when there were more duplicates than refused outcomes."""
    out = []
    for c in clients:
        times = {}
        for r in RECV.received(c["path"]):
            if r["status"] == 200:
                times.setdefault(r["headers"]["webhook-id"], []).append(r["t"] - t0)
        out += ["  %s at %s" % (eid, " ".join("%+.3f" % t for t in sorted(ts)))
                for eid, ts in times.items() if len(ts) > 1]
    for i, srv in enumerate(nodes):
        out.append("  node %d:" % (i + 1))
        out += ["    " + line for line in srv.log_lines
                if re.search(r" (warn|error) (store|delivery) | info (store|delivery) ", line)]
    return "\n".join(out)


def test_postgres_restart_under_load():
    db = new_db("lh_cluster_restart")
    n1 = node(db).start()
    n2 = node(db).start()
    nodes = [n1, n2]
    try:
        clients, subs = clients_on(nodes, n1, 3)
        with Load(nodes, clients) as load:
            time.sleep(2)
            t0 = time.time()
            pg_restart()
            time.sleep(4)
        # Both nodes serve again without a restart of their own.
        for n in nodes:
            assert n.proc.poll() is None, "a node died with the database"
            c = clients[0]
            r = n.post("/client/billing/create", bill_body(c["lab"]), token=c["tokens"][id(n)])
            assert r.status == 200, r
            load.bills[r.json["billID"]] = c
        # The nodes go on sending while the database is away (until two thirds of a lease
        # time after their last renewal), and those outcomes wait for it. A restart that
        # outlasts a lease (a loaded machine: the restart, then the reconnection backoff)
        # lets the node that is back first take the other's subscriptions: the other's
        # waiting outcomes are then refused and those deliveries sent again. That, and only
        # that, is the bound (a node taking its own lapsed leases back keeps their epochs,
        # so its waiting outcomes count); a fixed figure was wrong either way.
        refused = []

        def bound():  # counted once every delivery is delivered: no refusal is still to come
            refused.append(refused_outcomes(nodes))
            return refused[0]

        try:
            dups = check_everything_arrived(n1, load, subs, dup_limit=bound)
        except AssertionError:
            print(duplicates_report(nodes, clients, t0))
            raise
        print("   %d bills through a PostgreSQL restart: none lost, %d repeats, %d outcomes"
              " refused" % (len(load.bills), dups, refused[0]))
    finally:
        for n in nodes:
            n.cleanup()


def test_outage_longer_than_the_lease():
    """One node, the database away for longer than a lease time while it sends: its leases
    lapse, and it takes them back when the database returns. No other node held them, so
    they keep their epochs and the outcomes made meanwhile are recorded: nothing is sent
    twice (a new epoch had the store refuse them all, and every one went out again)."""
    db = new_db("lh_cluster_outage")
    n1 = node(db).start()
    try:
        clients, subs = clients_on([n1], n1, 3)
        with Load([n1], clients) as load:
            time.sleep(2)
            t0 = time.time()
            pg_ctl("stop")
            time.sleep(LEASE_S + 1)
            pg_ctl("start")
            # Back within its reconnection backoff (at most 5 s between tries).
            deadline = time.time() + 15
            while time.time() < deadline and not any(
                    "the database is reachable again" in line for line in n1.log_lines):
                time.sleep(0.1)
            time.sleep(2)
        log = "\n".join(n1.log_lines)
        assert "the database is reachable again" in log, "the node did not reconnect"
        # What the test is about happened: outcomes waited for the database, and the leases
        # lapsed (sending stopped) before it came back.
        assert "outcomes wait for the store" in log, "nothing was sent while the database was away"
        assert "the leases were not renewed in time" in log, "the leases did not lapse"
        try:
            dups = check_everything_arrived(n1, load, subs, dup_limit=0)
        except AssertionError:
            print(duplicates_report([n1], clients, t0))
            raise
        print("   %d bills through a %d s outage on one node: none lost, %d repeats"
              % (len(load.bills), LEASE_S + 1, dups))
    finally:
        n1.cleanup()


def test_stall_longer_than_the_lease():
    """One node stopped (SIGSTOP) for longer than two thirds of its lease time while an
    attempt is on the wire and another lane waits for the endpoint's one slot. It wakes
    past its leases' deadline on its own clock: the attempt that timed out meanwhile and the
    lane that was to start let their deliveries go from memory, pending in the store for
    the lease's holder, which is this node again under the same epoch. They must be read
    back and tried to the end (they stayed pending until a restart)."""
    db = new_db("lh_cluster_stall")
    n1 = Server("--store", pg_uri(db), "--ca-file", RECV.ca, "--allow-net", "127.0.0.0/8",
                "--retry-schedule", "0,200ms,400ms", "--timeout", "1s",
                "--max-in-flight-per-endpoint", "1", "--lease-time", "%ds" % LEASE_S).start()
    try:
        c = n1.client()
        path = "/hang/stall-" + c["id"][-6:]
        sub = subscribe(n1, c, RECV.url(path), ["bill.created"])
        # Wait for the node to hold the subscription's lease (taken within 200 ms).
        deadline = time.time() + 10
        while time.time() < deadline and sub not in leases_of(n1, db):
            time.sleep(0.05)
        assert sub in leases_of(n1, db), "the node did not take the new subscription's lease"
        for _ in range(2):
            r = n1.post("/client/billing/create", bill_body(c["lab"]), token=c["token"])
            assert r.status == 200, r
        assert RECV.wait_for(lambda: RECV.received(path), 10), "no attempt went out"
        n1.proc.send_signal(signal.SIGSTOP)
        time.sleep(LEASE_S * 2 / 3 + 0.8)
        n1.proc.send_signal(signal.SIGCONT)
        # Two deliveries, three attempts each, one at a time, each ending at the 1 s timeout.
        deadline = time.time() + 30
        ds = []
        while time.time() < deadline:
            ds = all_deliveries(n1, c, sub)
            if len(ds) == 2 and all(d["status"] == "failed" for d in ds):
                break
            time.sleep(0.2)
        assert len(ds) == 2 and all(d["status"] == "failed" for d in ds), \
            "deliveries left behind after the stall: %s" % [
                (d["status"], len(d.get("attempts") or [])) for d in ds]
        assert any("the leases were not renewed in time" in line for line in n1.log_lines), \
            "the node did not find its leases lapsed: the stall proved nothing"
        print("   two deliveries tried to the end after a %.1f s stall (lease time %d s)"
              % (LEASE_S * 2 / 3 + 0.8, LEASE_S))
    finally:
        n1.cleanup()


def test_secret_rotation_reaches_every_node():
    db = new_db("lh_cluster_rotate")
    n1 = node(db).start()
    n3 = node(db).start()
    try:
        c = n1.client()
        old = n3.token(c["id"], c["secret"])
        assert n3.get("/client/labs", token=old).status == 200
        r = n1.admin("POST", "/admin/accounts/%s/secret/rotate" % c["id"])
        assert r.status == 200, r
        t0 = time.time()
        while time.time() - t0 < 1.0 and n3.get("/client/labs", token=old).status == 200:
            time.sleep(0.05)
        took = time.time() - t0
        assert n3.get("/client/labs", token=old).status == 401, \
            "node 3 still takes the old token %.1f s after the rotation" % took
        print("   node 3 refused the old token %.2f s after the rotation on node 1" % took)
    finally:
        n1.cleanup()
        n3.cleanup()


if __name__ == "__main__":
    try:
        tests = (test_secret_rotation_reaches_every_node, test_three_nodes_and_a_sigkill,
                 test_postgres_restart_under_load, test_outage_longer_than_the_lease,
                 test_stall_longer_than_the_lease)
        only = os.environ.get("LABHOOK_TEST_ONLY")  # one of them, by name, while iterating
        sys.exit(run_on_pg([t for t in tests if not only or t.__name__ == only],
                           "several nodes need a PostgreSQL store"))
    finally:
        RECV.close()
