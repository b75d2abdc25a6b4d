"""Issue 9 hardening, over real sockets: an endpoint's answer that is not valid UTF-8 still
shows in the attempt log; a NUL inside a string is invalid_value, naming the field."""
import http.client
import json
import socket
import subprocess
import threading
import time

from harness import BIN, Response, Server, expect_error, run
from receiver import ANSWERS, Receiver

RECV = Receiver()
FAST = ["--ca-file", RECV.ca, "--allow-net", "127.0.0.0/8", "--retry-schedule", "0",
        "--timeout", "2s", "--connect-timeout", "1s"]


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
        run([test_answer_not_utf8_is_still_logged,
             test_nul_in_a_string_is_invalid_value], server_args=FAST)
    finally:
        RECV.close()
