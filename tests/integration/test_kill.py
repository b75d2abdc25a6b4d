"""SIGKILLs at random moments under a mixed load: bills created, reports completed (which
complete bills) and deliveries to flaky receivers. The service is restarted after each
kill; after the last one every acknowledged change (the client got a 2xx) must have its
events, and every event its deliveries delivered, as both the API and the receiver see
them. Prints the count lost (must be 0) and the duplicates (at least once allows them).

LABHOOK_KILLS sets the number of kills: the suite runs a few, `make soak` a hundred."""
import os
import random
import signal
import sys
import threading
import time

from faults import arrivals, bill_body, delivery_losses, subscribe, wait_all_delivered
from harness import Server, report_of
from receiver import Receiver

KILLS = int(os.environ.get("LABHOOK_KILLS", "6"))
RECV = Receiver()
# Two endpoints that fail at random, so kills also land between attempts and retries.
FLAKY_A, FLAKY_B = "/flaky/0.3/kill-a", "/flaky/0.1/kill-b"
EVENTS = ("bill.created", "report.completed", "bill.completed")


class Load:
    """Client threads that keep changing data and note what was acknowledged."""

    def __init__(self, srv, a, b):
        self.srv, self.a, self.b = srv, a, b
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.bills = {}          # acknowledged bill -> the sub that must get bill.created
        self.open_bills = []     # acknowledged bills of lab A with reports to complete
        self.reports = set()     # acknowledged report completions
        self.completed = set()   # bills whose completion was acknowledged
        self.refused = 0         # answers other than 2xx while the service was up
        self.threads = [threading.Thread(target=self.biller) for _ in range(3)] + \
            [threading.Thread(target=self.completer) for _ in range(2)]

    def call(self, method, path, body=None, token=None):
        try:
            return self.srv.request(method, path, body, token=token, timeout=5)
        except Exception:  # noqa: BLE001  killed under us, or not up yet
            time.sleep(0.02)
            return None

    def biller(self):
        while not self.stop.is_set():
            c = random.choice((self.a, self.b))
            r = self.call("POST", "/client/billing/create", bill_body(c["lab"]), c["token"])
            if r is None:
                continue
            if r.status != 200:
                with self.lock:
                    self.refused += 1
                continue
            with self.lock:
                self.bills[r.json["billID"]] = c["sub"]
                if c is self.a:
                    self.open_bills.append(r.json["billID"])

    def completer(self):
        while not self.stop.is_set():
            with self.lock:
                bill = random.choice(self.open_bills) if self.open_bills else None
            if bill is None:
                time.sleep(0.01)
                continue
            r = self.call("GET", "/client/bills/" + bill, token=self.a["token"])
            if r is None or r.status != 200:
                continue
            todo = [t["_id"] for t in r.json["bill"]["billData"]["testData"]
                    if t["status"] == "pending"]
            if not todo:
                with self.lock:
                    if bill in self.open_bills:
                        self.open_bills.remove(bill)
                continue
            rep = random.choice(todo)
            r = self.call("POST", "/lab/bills/%s/reports/%s/complete" % (bill, rep),
                          token=self.srv.admin_key())
            if r is None or r.status != 200:
                continue
            if r.json.get("changed"):
                with self.lock:
                    self.reports.add(rep)
                    if r.json.get("billStatus") == "completed":
                        self.completed.add(bill)


def main():
    srv = Server("--ca-file", RECV.ca, "--allow-net", "127.0.0.0/8", "--retry-schedule",
                 "0,50ms,100ms,200ms,300ms,500ms,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s",
                 "--timeout", "2s").start()
    failed = False
    try:
        a = srv.client()
        a["sub"] = subscribe(srv, a, RECV.url(FLAKY_A), EVENTS)
        b = dict(a, lab=srv.new_lab(a["id"], "second"))
        b["sub"] = subscribe(srv, b, RECV.url(FLAKY_B), ("bill.created",))
        load = Load(srv, a, b)
        [t.start() for t in load.threads]
        t0 = time.time()
        for _ in range(KILLS):
            time.sleep(random.uniform(0.2, 1.0))
            srv.proc.send_signal(signal.SIGKILL)
            srv.proc.wait()
            srv.start()
        time.sleep(0.5)
        load.stop.set()
        [t.join() for t in load.threads]
        load_s = time.time() - t0

        lost, dups = [], 0
        for sub, prefix in ((a["sub"], FLAKY_A), (b["sub"], FLAKY_B)):
            ds = wait_all_delivered(srv, a, sub, 120)
            count, bodies = arrivals(RECV, prefix)
            missing, extra = delivery_losses(ds, count)
            lost += missing
            dups += extra
            seen = {(d["eventType"], v) for d in ds if d["eventID"] in bodies
                    for k, v in bodies[d["eventID"]]["data"].items()
                    if k in ("billID", "reportID")}
            lost += ["bill.created of %s" % x for x, s in load.bills.items()
                     if s == sub and ("bill.created", x) not in seen]
            if sub == a["sub"]:
                lost += ["report.completed of %s" % x for x in load.reports
                         if ("report.completed", x) not in seen]
                lost += ["bill.completed of %s" % x for x in load.completed
                         if ("bill.completed", x) not in seen]
        for x in load.bills:
            r = srv.get("/client/bills/" + x, token=a["token"])
            if r.status != 200:
                lost.append("bill %s: %r" % (x, r))
        print("   %d SIGKILLs in %.1fs: %d bills, %d report completions (%d completing their "
              "bill) acknowledged; %d refused; lost %d; duplicates %d"
              % (KILLS, load_s, len(load.bills), len(load.reports), len(load.completed),
                 load.refused, len(lost), dups), flush=True)
        assert len(load.bills) >= KILLS and load.reports, "too little load to mean anything"
        assert not lost, "lost: %s" % lost[:5]
        assert load.refused == 0, "changes refused while up: %d" % load.refused
        rc = srv.stop()
        assert rc == 0, "exit %s on SIGTERM\n%s" % (rc, report_of(srv.log_lines))
        print("ok   test_sigkills_under_mixed_load")
    except Exception:  # noqa: BLE001
        failed = True
        import traceback
        traceback.print_exc()
        print("---- last log lines ----\n" + "\n".join(srv.log_lines[-20:]))
    finally:
        srv.cleanup()
        RECV.close()
    print("%d passed, %d failed" % (0 if failed else 1, 1 if failed else 0))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
