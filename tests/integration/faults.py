"""What the fault tests (test_kill.py, test_disk.py) share: the requests of the mixed load
and the checks that nothing acknowledged was lost, read through the API and the receiver."""
import json
import time


def bill_body(lab, tests=2):
    return {"labID": lab, "integrator_id": "INT-F",
            "patient_details": {"first_name": "F", "gender": "female", "age": 30,
                                "age_type": "year"},
            "unmapped_tests": ["T%d" % i for i in range(tests)]}


def subscribe(srv, c, url, events):
    r = srv.post("/client/events/subscribe",
                 {"labID": c["lab"], "events": list(events), "endpoint": url,
                  "protocol": "https"}, token=c["token"])
    assert r.status == 200, r
    return r.json["subscription"]["id"]


def all_deliveries(srv, c, sub):
    """Every delivery of a subscription, through the API's pages."""
    out, cursor = [], ""
    while True:
        r = srv.get("/client/events/subscriptions/%s/deliveries?limit=500%s"
                    % (sub, "&cursor=" + cursor if cursor else ""), token=c["token"])
        assert r.status == 200, r
        out += r.json["deliveries"]
        cursor = r.json.get("nextCursor")
        if not cursor:
            return out


def wait_all_delivered(srv, c, sub, timeout):
    """Waits until no delivery of sub is pending; returns them all."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = srv.get("/client/events/subscriptions/%s/deliveries?status=pending&limit=1"
                    % sub, token=c["token"])
        assert r.status == 200, r
        if not r.json["deliveries"]:
            break
        time.sleep(0.2)
    return all_deliveries(srv, c, sub)


def arrivals(recv, prefix):
    """{event id: times answered 2xx} and the bodies of the events that arrived at prefix."""
    count, bodies = {}, {}
    for r in recv.received(prefix):
        if r["status"] == 200:
            eid = r["headers"]["webhook-id"]
            count[eid] = count.get(eid, 0) + 1
            bodies[eid] = json.loads(r["body"])
    return count, bodies


def delivery_losses(ds, count):
    """What was lost of deliveries ds, given the receiver's arrivals: each delivery not
    delivered, and each delivered one whose event never arrived. Also returns the number
    of extra arrivals (duplicates)."""
    lost = ["%s %s is %s" % (d["id"], d["eventType"], d["status"]) for d in ds
            if d["status"] != "delivered"]
    lost += ["%s %s never arrived" % (d["id"], d["eventID"]) for d in ds
             if d["status"] == "delivered" and d["eventID"] not in count]
    return lost, sum(count.get(d["eventID"], 1) - 1 for d in ds)
