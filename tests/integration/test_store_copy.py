"""`labhook store copy` (issue 13, part 7): a single SQLite node's store, with pending
deliveries, copied into PostgreSQL; two nodes started on it deliver them, in order per bill,
and the old access and refresh tokens, client secrets, webhook signing secrets and the admin
key keep working. The copy is refused while the node runs, and into a database that is not
empty.

Runs only on PostgreSQL (LABHOOK_TEST_STORE=pg, as tests/pg/with_pg.py sets for the
pg_integration_* tests); on SQLite it has nothing to copy into and passes at once. (The
data directory's lock itself is tested on SQLite too, in test_service.py.)"""
import json
import os
import re
import subprocess
import sys

from faults import all_deliveries, arrivals, bill_body, wait_all_delivered
from harness import BIN, PgReader, Server, new_db, pg_uri, run_on_pg
from receiver import Receiver, verify

RECV = Receiver()
EVENTS = ("bill.created", "report.completed", "bill.completed")


def store_copy(data_dir, db):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABHOOK_")}
    return subprocess.run([BIN, "store", "copy", "--data-dir", data_dir, "--to", pg_uri(db)],
                          capture_output=True, text=True, timeout=120, env=env)


def node(*store):
    return Server(*store, "--ca-file", RECV.ca, "--allow-net", "127.0.0.0/8",
                  "--lease-time", "4s")


def set_status(srv, c, status):
    r = srv.request("PATCH", "/client/events/subscriptions/" + c["sub"], {"status": status},
                    token=c["token"])
    assert r.status == 200, r


def new_bill(srv, c, complete):
    """A bill of two tests, `complete` of whose reports the lab completes (both: the bill
    completes too). Returns its id."""
    r = srv.post("/client/billing/create", bill_body(c["lab"], 2), token=c["token"])
    assert r.status == 200, r
    bill = r.json["billID"]
    r = srv.get("/client/bills/" + bill, token=c["token"])
    assert r.status == 200, r
    for t in r.json["bill"]["billData"]["testData"][:complete]:
        r = srv.post("/lab/bills/%s/reports/%s/complete" % (bill, t["_id"]),
                     token=srv.admin_key())
        assert r.status == 200, r
    return bill


def arrived_per_bill(path):
    """{bill: [event types in the order they first arrived]} at path."""
    out, seen = {}, set()
    for r in sorted(RECV.received(path), key=lambda r: r["t"]):
        if r["status"] != 200 or r["headers"]["webhook-id"] in seen:
            continue
        seen.add(r["headers"]["webhook-id"])
        body = json.loads(r["body"])
        out.setdefault(body["data"]["billID"], []).append(body["eventType"])
    return out


def test_sqlite_node_moves_to_two_postgres_nodes():
    old = node("--store", "sqlite").start()
    nodes = []
    db = new_db("lh_store_copy")
    try:
        clients = []
        for i in range(2):
            c = old.client()
            c["path"] = "/ok/copy-%d-%s" % (i, c["id"][-6:])
            r = old.post("/client/events/subscribe",
                         {"labID": c["lab"], "events": list(EVENTS),
                          "endpoint": RECV.url(c["path"]), "protocol": "https"},
                         token=c["token"])
            assert r.status == 200, r
            c["sub"], c["whsec"] = r.json["subscription"]["id"], r.json["signingSecret"]
            # Two refresh tokens (two families): one to present to each new node.
            c["refresh"] = []
            for _ in range(2):
                r = old.post("/client/auth/token", {"clientID": c["id"],
                                                     "clientSecret": c["secret"]})
                assert r.status == 200, r
                c["refresh"].append(r.json["refreshToken"])
            # One bill delivered before: its history moves too, and it is not sent again.
            first = new_bill(old, c, 0)
            ds = wait_all_delivered(old, c, c["sub"], 10)
            assert [d["status"] for d in ds] == ["delivered"], ds
            set_status(old, c, "paused")
            c["want"] = {first: ["bill.created"],
                         new_bill(old, c, 2): ["bill.created", "report.completed",
                                               "report.completed", "bill.completed"],
                         new_bill(old, c, 1): ["bill.created", "report.completed"],
                         new_bill(old, c, 0): ["bill.created"]}
            c["pending"] = {d["eventID"] for d in all_deliveries(old, c, c["sub"])
                            if d["status"] == "pending"}
            assert len(c["pending"]) == 7, c["pending"]
            clients.append(c)
        admin_key = old.admin_key()

        # While the node runs, the copy is refused before it touches anything.
        p = store_copy(old.data_dir, db)
        assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
        assert "stop the node first" in p.stderr and "pid %d" % old.proc.pid in p.stderr, \
            p.stderr
        assert PgReader(pg_uri(db)).execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")[0][0] == 0
        assert old.stop() == 0

        p = store_copy(old.data_dir, db)
        assert p.returncode == 0, (p.stdout, p.stderr)
        rows = {m.group(1): int(m.group(2))
                for m in re.finditer(r"^  (\w+) +(\d+)$", p.stdout, re.M)}
        assert rows["accounts"] == 2 and rows["subscriptions"] == 2, rows
        assert rows["events"] == 16 and rows["deliveries"] == 16, rows
        assert rows["attempts"] >= 2 and rows["meta"] == 3, rows  # token, admin, report link keys
        last = p.stdout.strip().splitlines()[-1]
        assert last.startswith("done:") and "--store" in last, last
        print("   " + last[:100] + "...")

        nodes = [node("--store", pg_uri(db)).start(), node("--store", pg_uri(db)).start()]
        for k, n in enumerate(nodes):
            assert n.admin_key() == admin_key  # written from the store into its data dir
            assert n.admin("GET", "/admin/accounts").status == 200
            for c in clients:
                assert n.get("/client/labs", token=c["token"]).status == 200  # old token
                r = n.post("/client/auth/token/refresh",
                           {"clientID": c["id"], "refreshToken": c["refresh"][k]})
                assert r.status == 200, r
                assert n.get("/client/labs", token=r.json["authToken"]).status == 200
                n.token(c["id"], c["secret"])  # the client secret
        for c in clients:
            set_status(nodes[1], c, "active")
        for c in clients:
            ds = wait_all_delivered(nodes[0], c, c["sub"], 60)
            assert all(d["status"] == "delivered" for d in ds), ds
            count, _ = arrivals(RECV, c["path"])
            assert c["pending"] <= set(count), c["pending"] - set(count)
            assert all(v == 1 for v in count.values()), count  # nothing sent twice
            got = arrived_per_bill(c["path"])
            assert got == c["want"], (got, c["want"])
            for r in RECV.received(c["path"]):
                assert verify(c["whsec"], r["headers"], r["body"]), r["headers"]
        print("   14 pending deliveries of 2 accounts delivered by 2 nodes, in order per bill")

        # The database holds a store now: a second copy is refused, nothing changed.
        p = store_copy(old.data_dir, db)
        assert p.returncode == 1 and "not empty" in p.stderr, (p.returncode, p.stderr)
        assert PgReader(pg_uri(db)).execute("SELECT count(*) FROM accounts")[0][0] == 2
    finally:
        for n in nodes + [old]:
            n.cleanup()


if __name__ == "__main__":
    try:
        sys.exit(run_on_pg((test_sqlite_node_moves_to_two_postgres_nodes,),
                           "the copy goes into a PostgreSQL store"))
    finally:
        RECV.close()
