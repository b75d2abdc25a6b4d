"""A full disk: the data directory lives on a small tmpfs that a filler file fills up.
Changes then answer 503 storage_full with Retry-After, nothing acknowledged is lost, reads
keep working, and once the filler is gone the service takes changes again and delivers
everything, without a restart. Needs root (mount); CI runs the tests as root."""
import errno
import os
import shutil
import subprocess
import sys
import tempfile
import time

from faults import (all_deliveries, arrivals, bill_body, delivery_losses, subscribe,
                    wait_all_delivered)
from harness import Server, expect_error, report_of, skip_on_pg
from receiver import Receiver

EVENTS = ("bill.created", "report.completed", "bill.completed")
SLOW = "/slow/0.5/disk"


def fill(path):
    """Writes zeros to path until the filesystem is full; returns the bytes written."""
    n = 0
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            while True:
                try:
                    n += f.write(b"\0" * size)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    return n


def complete_report(srv, bill, rep):
    return srv.request("POST", "/lab/bills/%s/reports/%s/complete" % (bill, rep),
                       token=srv.admin_key())


def reports(srv, c, bill):
    r = srv.get("/client/bills/" + bill, token=c["token"])
    assert r.status == 200, r
    return [t["_id"] for t in r.json["bill"]["billData"]["testData"]]


def scenario(mnt, recv):
    data = os.path.join(mnt, "data")
    srv = Server("--ca-file", recv.ca, "--allow-net", "127.0.0.0/8", "--retry-schedule",
                 "0,100ms,200ms,400ms,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s",
                 data_dir=data).start()
    try:
        c = srv.client()
        # Slow answers: the first outcomes are recorded while the disk is full.
        sub = subscribe(srv, c, recv.url(SLOW), EVENTS)
        acked = [srv.post("/client/billing/create", bill_body(c["lab"]),
                          token=c["token"]).json["billID"] for _ in range(20)]
        filler = os.path.join(mnt, "filler")
        filled = fill(filler)

        # Changes until the disk refuses one: each is either kept (200) or refused (503).
        refused = None
        for _ in range(3000):
            r = srv.post("/client/billing/create", bill_body(c["lab"]), token=c["token"])
            if r.status == 200:
                acked.append(r.json["billID"])
                continue
            refused = r
            break
        assert refused is not None, "3000 bills fit on a full disk?"
        expect_error(refused, 503, "storage_full")
        assert refused.headers.get("retry-after", "").isdigit(), refused.headers
        assert "full" in refused.json["error"]["message"], refused
        full_at = len(acked)

        # While full: more changes of each kind are refused the same way ...
        for r in (srv.post("/client/billing/create", bill_body(c["lab"]), token=c["token"]),
                  complete_report(srv, acked[0], reports(srv, c, acked[0])[0]),
                  srv.post("/client/events/subscribe",
                           {"labID": c["lab"], "events": ["bill.deleted"],
                            "endpoint": recv.url("/ok/disk2"), "protocol": "https"},
                           token=c["token"])):
            expect_error(r, 503, "storage_full")
        # ... and reads answer.
        assert srv.get("/client/labs", token=c["token"]).status == 200
        assert srv.get("/client/events/subscriptions", token=c["token"]).status == 200
        assert srv.get("/client/bills/" + acked[-1], token=c["token"]).status == 200
        assert len(all_deliveries(srv, c, sub)) >= full_at
        # The slow answers come in (and cannot be recorded) while the disk stays full.
        time.sleep(1.5)

        # Space comes back: the service takes changes again on its own.
        os.unlink(filler)
        deadline = time.time() + 15
        while True:
            r = srv.post("/client/billing/create", bill_body(c["lab"]), token=c["token"])
            if r.status == 200 or time.time() > deadline:
                break
            expect_error(r, 503, "storage_full")
            time.sleep(0.2)
        assert r.status == 200, "no change taken after space came back: %r" % r
        acked.append(r.json["billID"])
        bill = acked[-1]
        for rep in reports(srv, c, bill):
            r = complete_report(srv, bill, rep)
            assert r.status == 200, r

        # Nothing acknowledged lost, and every event delivered (the API and the receiver).
        for b in acked:
            assert srv.get("/client/bills/" + b, token=c["token"]).status == 200, b
        ds = wait_all_delivered(srv, c, sub, 30)
        count, bodies = arrivals(recv, SLOW)
        lost, dups = delivery_losses(ds, count)
        assert not lost, "%d deliveries lost: %s" % (len(lost), lost[:3])
        created = {bodies[d["eventID"]]["data"]["billID"] for d in ds
                   if d["eventType"] == "bill.created"}
        lost = [b for b in acked if b not in created]
        assert not lost, "acknowledged bills without their bill.created: %s" % lost[:5]
        assert [d["eventType"] for d in ds].count("bill.completed") == 1, ds[:3]
        assert not any(" status=500 " in line for line in srv.log_lines), \
            [line for line in srv.log_lines if " status=500 " in line][:3]
        print("   %d bytes filled the disk after %d bills; %d acknowledged bills kept and "
              "delivered after space came back (%d duplicates)"
              % (filled, full_at, len(acked), dups))
        assert srv.stop() == 0, report_of(srv.log_lines)
    finally:
        srv.cleanup()


def main():
    if os.geteuid() != 0:
        print("SKIP test_disk: mounting a tmpfs needs root")
        return 0
    recv = Receiver()
    mnt = tempfile.mkdtemp(prefix="labhook-disk-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt], check=True)
    try:
        scenario(mnt, recv)
        print("ok   test_full_disk\n1 passed, 0 failed")
        return 0
    finally:
        subprocess.run(["umount", "-l", mnt], check=False)
        shutil.rmtree(mnt, ignore_errors=True)
        recv.close()


if __name__ == "__main__":
    skip_on_pg("the data directory's disk holds no database there (PostgreSQL's own disk "
               "is its operator's)")
    sys.exit(main())
