"""Report documents (API.md 9, issue 12): completing a report with a PDF, report.completed
delivered to a real HTTPS receiver with a signed, expiring reportURL, fetching that link
(and the client route with a token), what is refused (a changed signature or report id, an
expired or unsigned link, another account), range requests, replacing a document, the
upload caps, the CLI's --file, and the memory a popular document costs while it is served
to 50 clients at once (streamed a chunk at a time, not copied per client)."""
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

from harness import BIN, Server, expect_error, openapi_record, run
from receiver import Receiver

RECV = Receiver()
FAST = ["--ca-file", RECV.ca, "--allow-net", "127.0.0.0/8", "--retry-schedule",
        "0,200ms,400ms", "--timeout", "2s", "--connect-timeout", "1s"]
CHUNK = 256 * 1024  # REPORT_CHUNK in store.h


def pdf(n, seed=b"x"):
    """n bytes starting as a PDF does, the rest derived from seed (so two seeds differ)."""
    head = b"%PDF-1.7\n"
    out = bytearray(head)
    block = hashlib.sha256(seed).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def call(srv, method, path, body=None, headers=None, token=None):
    """A request with a raw byte body; returns (status, lower-cased headers, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    h = dict(headers or {})
    if token:
        h["Authorization"] = "Bearer " + token
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        st, hd, data = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        openapi_record(method, path, h, body, st, hd, data)
        return st, hd, data
    finally:
        conn.close()


def complete(srv, bill, rep, doc=None, ctype="application/pdf"):
    h = {"Content-Type": ctype} if doc is not None else {}
    st, hd, body = call(srv, "POST", "/lab/bills/%s/reports/%s/complete" % (bill, rep), doc,
                        h, token=srv.admin_key())
    return st, json.loads(body or b"null")


def new_bill(srv, c, tests=2, **extra):
    b = {"labID": c["lab"], "integrator_id": "INT-7",
         "patient_details": {"first_name": "A", "gender": "female", "age": 30,
                             "age_type": "year"},
         "unmapped_tests": ["T%d" % i for i in range(tests)]}
    b.update(extra)
    r = srv.post("/client/billing/create", b, token=c["token"])
    assert r.status == 200, r
    bill = r.json["billID"]
    g = srv.get("/client/bills/" + bill, token=c["token"])
    return bill, [t["_id"] for t in g.json["bill"]["billData"]["testData"]]


def subscribe(srv, c, path):
    b = {"labID": c["lab"], "events": ["report.completed", "bill.completed"],
         "endpoint": RECV.url(path), "protocol": "https"}
    r = srv.post("/client/events/subscribe", b, token=c["token"])
    assert r.status == 200, r


def received(path, rep, event="report.completed"):
    out = []
    for rec in RECV.received(path):
        p = json.loads(rec["body"])
        if p["eventType"] == event and p["data"].get("reportID", rep) == rep:
            out.append(p)
    return out


def path_of(url):
    u = urllib.parse.urlsplit(url)
    return u.path + ("?" + u.query if u.query else "")


def events_of(srv, bill, kind):
    types = {"bill.completed": 1, "report.completed": 3}
    with srv.db() as d:
        return [json.loads(p) for (p,) in d.execute(
            "SELECT payload FROM events WHERE entity_id = ? AND type = ? ORDER BY seq",
            (bill, types[kind]))]


def link_of(srv, bill, rep):
    """The reportURL of the newest report.completed of rep, from the outbox."""
    ev = [e for e in events_of(srv, bill, "report.completed") if e["data"]["reportID"] == rep]
    return ev[-1]["data"]["reportURL"]


def with_query(url, **changes):
    u = urllib.parse.urlsplit(url)
    q = dict(urllib.parse.parse_qsl(u.query))
    for k, v in changes.items():
        if v is None:
            q.pop(k, None)
        else:
            q[k] = v
    return u.path + "?" + urllib.parse.urlencode(q)


# ---- the path of a document ----

def test_complete_with_pdf_delivers_a_working_link(srv):
    c = srv.client()
    path = "/ok/reports-%d" % time.time_ns()
    subscribe(srv, c, path)
    bill, (r1, r2) = new_bill(srv, c)
    doc = pdf(CHUNK + 12345, b"first")  # two chunks
    st, j = complete(srv, bill, r1, doc)
    assert st == 200 and j["changed"] is True, j
    d = j["document"]
    assert d == {"contentType": "application/pdf", "size": len(doc),
                 "sha256": hashlib.sha256(doc).hexdigest(), "version": 1, "changed": True}, d
    assert RECV.wait_for(lambda: received(path, r1)), RECV.received(path)
    p = received(path, r1)[0]
    assert p["data"]["document"] == {"contentType": "application/pdf", "size": len(doc),
                                     "sha256": hashlib.sha256(doc).hexdigest(),
                                     "version": 1}, p
    url = p["data"]["reportURL"]
    assert url.startswith("http://127.0.0.1:%d/reports/%s/%s?expires=" % (srv.port, bill, r1))
    st, h, body = call(srv, "GET", path_of(url))  # no token: the link is the credential
    assert st == 200 and body == doc, (st, h, body[:200])
    assert h["content-type"] == "application/pdf"
    assert h["content-disposition"] == 'inline; filename="%s-%s.pdf"' % (bill, r1)
    assert h["cache-control"].startswith("private"), h
    assert h["x-content-type-options"] == "nosniff"
    assert h["etag"] == '"%s"' % hashlib.sha256(doc).hexdigest()
    assert h["accept-ranges"] == "bytes" and h["content-length"] == str(len(doc))
    st, h2, body = call(srv, "HEAD", path_of(url))
    assert st == 200 and body == b"" and h2["content-length"] == str(len(doc)), (st, h2)
    # the bill's account with its token gets the same bytes
    st, h, body = call(srv, "GET", "/client/bills/%s/reports/%s" % (bill, r1), token=c["token"])
    assert st == 200 and body == doc and h["cache-control"].startswith("private"), (st, h)


def test_links_that_fail(srv):
    c = srv.client()
    bill, (r1, r2) = new_bill(srv, c)
    assert complete(srv, bill, r1, pdf(1000))[0] == 200
    url = link_of(srv, bill, r1)
    sig = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["sig"]
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    for bad in (with_query(url, sig=flipped), with_query(url, sig=None),
                with_query(url, sig=sig.upper()), with_query(url, expires=None),
                with_query(url, expires=str(int(time.time()) + 10 ** 6)),
                path_of(url).replace(r1, r2),               # another report of the bill
                "/reports/%s/%s" % (bill, r1)):             # no query at all
        st, h, body = call(srv, "GET", bad)
        j = json.loads(body)
        assert st == 403 and j["error"]["code"] == "invalid_signature", (bad, st, body)
        assert j["error"]["message"]
    # a report of the bill completed without a document: its link is valid, no document yet
    assert complete(srv, bill, r2)[0] == 200
    st, h, body = call(srv, "GET", path_of(link_of(srv, bill, r2)))
    assert st == 404 and json.loads(body)["error"]["code"] == "report_not_ready", body
    # a malformed id is not found, before any signature is looked at
    st, _, _ = call(srv, "GET", "/reports/%s/bad%%20id?expires=1&sig=00" % bill)
    assert st == 404


def test_client_route_is_the_bill_accounts_alone(srv):
    c, other = srv.client(), srv.client()
    bill, (r1, r2) = new_bill(srv, c)
    doc = pdf(5000, b"client")
    assert complete(srv, bill, r1, doc)[0] == 200
    route = "/client/bills/%s/reports/%s" % (bill, r1)
    st, h, body = call(srv, "GET", route, token=other["token"])
    assert st == 404 and json.loads(body)["error"]["code"] == "report_not_found", body
    st, h, body = call(srv, "GET", route)
    assert st == 401, body
    st, h, body = call(srv, "GET", "/client/bills/%s/reports/%s" % (bill, r2), token=c["token"])
    assert st == 404 and json.loads(body)["error"]["code"] == "report_not_ready", body
    st, h, body = call(srv, "GET", "/client/bills/%s/reports/rep_NOPE" % bill, token=c["token"])
    assert st == 404 and json.loads(body)["error"]["code"] == "report_not_found", body
    # party-scoped: the same rule as GET /client/bills/{id}, the bill's account
    p = srv.client("party-scoped")
    pbill, (p1, _) = new_bill(srv, p, corporateUser=p["cu"])
    assert complete(srv, pbill, p1, doc)[0] == 200
    st, h, body = call(srv, "GET", "/client/bills/%s/reports/%s" % (pbill, p1),
                       token=p["token"])
    assert st == 200 and body == doc, st
    st, h, body = call(srv, "GET", "/client/bills/%s/reports/%s" % (pbill, p1),
                       token=c["token"])
    assert st == 404, st


def test_range_requests(srv):
    c = srv.client()
    bill, (r1, _) = new_bill(srv, c)
    doc = pdf(2 * CHUNK + 777, b"ranges")
    size = len(doc)
    assert complete(srv, bill, r1, doc)[0] == 200
    link = path_of(link_of(srv, bill, r1))
    etag = '"%s"' % hashlib.sha256(doc).hexdigest()
    cases = [("bytes=0-99", 0, 99), ("bytes=100-", 100, size - 1), ("bytes=-50", size - 50,
             size - 1), ("bytes=%d-%d" % (CHUNK - 10, CHUNK + 10), CHUNK - 10, CHUNK + 10),
             ("bytes=5-%d" % (size * 3), 5, size - 1), ("bytes=-%d" % (size * 2), 0, size - 1)]
    for rng, a, b in cases:
        st, h, body = call(srv, "GET", link, headers={"Range": rng})
        assert st == 206 and body == doc[a:b + 1], (rng, st, len(body))
        assert h["content-security-policy"] == "sandbox", h
        assert h["content-range"] == "bytes %d-%d/%d" % (a, b, size), (rng, h)
        assert h["content-length"] == str(b - a + 1)
    for rng in ("bytes=%d-" % size, "bytes=%d-%d" % (size + 5, size + 9), "bytes=-0"):
        st, h, body = call(srv, "GET", link, headers={"Range": rng})
        assert st == 416 and h["content-range"] == "bytes */%d" % size, (rng, st, h)
        # an error answer: none of the document's caching headers (no ETag, one
        # Cache-Control, the error's)
        assert "etag" not in h and "accept-ranges" not in h, (rng, h)
        assert json.loads(body)["error"]["code"] == "range_not_satisfiable"
    for rng in ("bytes=9-3", "bytes=0-1,5-9", "items=0-5", "bytes=x-"):
        st, h, body = call(srv, "GET", link, headers={"Range": rng})
        assert st == 200 and body == doc, (rng, st)  # ignored: the whole document
    st, h, body = call(srv, "GET", link, headers={"If-None-Match": etag})
    assert st == 304 and body == b"" and h["etag"] == etag, (st, h)
    st, h, body = call(srv, "GET", link, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert st == 206 and body == doc[:10]
    st, h, body = call(srv, "GET", link, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert st == 200 and body == doc  # the document changed since: the whole of it
    # If-Range compares strongly (RFC 9110 13.1.5): a weak tag or a list is no match
    for weak in ("W/" + etag, etag + ', "other"', "*"):
        st, h, body = call(srv, "GET", link, headers={"Range": "bytes=0-9", "If-Range": weak})
        assert st == 200 and body == doc, (weak, st)
    # the client route takes ranges too
    st, h, body = call(srv, "GET", "/client/bills/%s/reports/%s" % (bill, r1),
                       headers={"Range": "bytes=-3"}, token=c["token"])
    assert st == 206 and body == doc[-3:]


def test_replacing_the_document(srv):
    c = srv.client()
    path = "/ok/replace-%d" % time.time_ns()
    subscribe(srv, c, path)
    bill, (r1,) = new_bill(srv, c, tests=1)
    first, second = pdf(3000, b"v1"), pdf(4000, b"v2")
    assert complete(srv, bill, r1, first)[0] == 200
    old_link = link_of(srv, bill, r1)
    st, j = complete(srv, bill, r1, first)  # the same bytes: nothing changes
    assert st == 200 and j["changed"] is False and j["document"]["changed"] is False, j
    assert j["document"]["version"] == 1
    assert len(events_of(srv, bill, "report.completed")) == 1
    st, j = complete(srv, bill, r1)  # completing again without a document: a no-op
    assert st == 200 and j["changed"] is False, j
    st, j = complete(srv, bill, r1, second)
    assert st == 200 and j["changed"] is True and j["document"]["version"] == 2, j
    ev = events_of(srv, bill, "report.completed")
    assert len(ev) == 2 and ev[1]["data"]["document"]["version"] == 2, ev
    assert ev[1]["data"]["document"]["sha256"] == hashlib.sha256(second).hexdigest()
    assert len(events_of(srv, bill, "bill.completed")) == 1  # once, whatever follows
    assert RECV.wait_for(lambda: len(received(path, r1)) == 2), RECV.received(path)
    time.sleep(0.3)
    assert len(received(path, r1)) == 2 and len(received(path, r1, "bill.completed")) == 1
    # a link names the report, not a version: the older link serves the new document
    st, h, body = call(srv, "GET", path_of(old_link))
    assert st == 200 and body == second, st


def headers_only(srv, bill, rep, ctype, length):
    """Sends a completion's headers alone (a body of length announced); returns the answer."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(("POST /lab/bills/%s/reports/%s/complete HTTP/1.1\r\nHost: x\r\n"
               "Authorization: Bearer %s\r\nContent-Type: %s\r\n"
               "Content-Length: %d\r\n\r\n" % (bill, rep, srv.admin_key(), ctype, length))
              .encode())
    answer = s.recv(4096).decode()
    s.close()
    return answer


def test_upload_limits_and_media_types(srv):
    c = srv.client()
    bill, (r1, r2) = new_bill(srv, c)
    # over report-max-size (10 MiB): refused on its Content-Length, before the body is read
    answer = headers_only(srv, bill, r1, "application/pdf", 10 * 1024 * 1024 + 1)
    assert answer.startswith("HTTP/1.1 413") and "payload_too_large" in answer, answer
    # exactly the cap is fine
    st, j = complete(srv, bill, r1, pdf(10 * 1024 * 1024, b"max"))
    assert st == 200 and j["document"]["size"] == 10 * 1024 * 1024, j
    # a JSON body over max-body on the same route is still capped by max-body (1 MiB)
    answer = headers_only(srv, bill, r2, "application/json", 1024 * 1024 + 1)
    assert answer.startswith("HTTP/1.1 413"), answer
    st, j = complete(srv, bill, r2, b"not a pdf at all")
    assert st == 400 and j["error"]["code"] == "invalid_document", j
    st, j = complete(srv, bill, r2, b"%PDF-1.4 but sent as text", "text/plain")
    assert st == 415 and j["error"]["code"] == "unsupported_media_type", j
    st, j = complete(srv, bill, r2, b"", "application/pdf")
    assert st == 400 and j["error"]["code"] == "invalid_document", j
    st, j = complete(srv, bill, r2, b"{}", "application/json")  # as before documents
    assert st == 200 and j["changed"] is True and "document" not in j, j


def test_cli_file(srv):
    c = srv.client()
    bill, (r1, _) = new_bill(srv, c)
    doc = pdf(CHUNK * 3, b"cli")
    with tempfile.NamedTemporaryFile(suffix=".pdf", delete=False) as f:
        f.write(doc)
    try:
        p = subprocess.run([BIN, "lab", "--data-dir", srv.data_dir, "--url",
                            "http://127.0.0.1:%d" % srv.port, "complete-report", bill, r1,
                            "--file", f.name], capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(f.name)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["document"]["sha256"] == hashlib.sha256(doc).hexdigest()
    st, h, body = call(srv, "GET", "/client/bills/%s/reports/%s" % (bill, r1), token=c["token"])
    assert st == 200 and body == doc
    p = subprocess.run([BIN, "lab", "--data-dir", srv.data_dir, "--url",
                        "http://127.0.0.1:%d" % srv.port, "complete-report", bill, r1,
                        "--file", "/nonexistent.pdf"], capture_output=True, text=True)
    assert p.returncode != 0 and "cannot open" in p.stderr, p.stderr


# ---- servers of their own ----

def test_expired_link_and_upload_slots():
    srv = Server("--report-link-ttl", "1s", "--report-max-uploads", "1").start()
    try:
        c = srv.client()
        bill, (r1, r2) = new_bill(srv, c)
        assert complete(srv, bill, r1, pdf(2000))[0] == 200
        link = path_of(link_of(srv, bill, r1))
        st, _, _ = call(srv, "GET", link)
        assert st == 200
        time.sleep(2.2)
        st, h, body = call(srv, "GET", link)
        j = json.loads(body)
        assert st == 403 and j["error"]["code"] == "link_expired", body
        assert "/client/bills/%s/reports/%s" % (bill, r1) in j["error"]["message"]
        # one upload at a time: a second one while the first is being received waits
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(("POST /lab/bills/%s/reports/%s/complete HTTP/1.1\r\nHost: x\r\n"
                   "Authorization: Bearer %s\r\nContent-Type: application/pdf\r\n"
                   "Content-Length: 2000000\r\n\r\n%%PDF-" % (bill, r2, srv.admin_key()))
                  .encode())
        time.sleep(0.3)
        st, h, body = call(srv, "POST", "/lab/bills/%s/reports/%s/complete" % (bill, r2),
                           pdf(1000), {"Content-Type": "application/pdf"},
                           token=srv.admin_key())
        assert st == 503 and json.loads(body)["error"]["code"] == "too_many_uploads", body
        assert h.get("retry-after"), h
        s.close()  # the first gives up: its slot is free again
        deadline = time.time() + 5
        while time.time() < deadline:
            st, _, body = call(srv, "POST", "/lab/bills/%s/reports/%s/complete" % (bill, r2),
                               pdf(1000), {"Content-Type": "application/pdf"},
                               token=srv.admin_key())
            if st != 503:
                break
            time.sleep(0.1)
        assert st == 200, body
    finally:
        srv.cleanup()


def vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_memory_50_clients_one_document():
    """A 10 MiB document to 50 clients at once must not cost 50 copies (500 MiB): each
    response holds one chunk. Peak RSS (VmHWM) before and after, printed."""
    # An ASan build keeps freed blocks in a quarantine (256 MiB by default) that would count
    # as our memory here, though each chunk read is freed at once; other builds ignore it.
    env = {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") +
                            ":quarantine_size_mb=8").lstrip(":")}
    srv = Server("--max-connections-per-ip", "512", env=env).start()
    try:
        c = srv.client()
        bill, (r1, _) = new_bill(srv, c)
        doc = pdf(10 * 1024 * 1024, b"popular")
        want = hashlib.sha256(doc).hexdigest()
        assert complete(srv, bill, r1, doc)[0] == 200
        link = path_of(link_of(srv, bill, r1))
        st, _, body = call(srv, "GET", link)  # warm: the first reading of every page
        assert st == 200 and hashlib.sha256(body).hexdigest() == want
        del body, doc
        before = vm_hwm_kib(srv.proc.pid)
        results, errors = [], []
        start = threading.Barrier(50)

        def client():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
                start.wait()
                conn.request("GET", link)
                r = conn.getresponse()
                h, n = hashlib.sha256(), 0
                while True:
                    piece = r.read(64 * 1024)
                    if not piece:
                        break
                    h.update(piece)
                    n += len(piece)
                    time.sleep(0.002)  # slow readers: all 50 responses stay open together
                results.append((r.status, n, h.hexdigest()))
                conn.close()
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        threads = [threading.Thread(target=client) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        after = vm_hwm_kib(srv.proc.pid)
        assert not errors, errors[:3]
        assert len(results) == 50 and all(r == (200, 10 * 1024 * 1024, want) for r in results)
        growth = (after - before) / 1024.0
        print("peak RSS (VmHWM): before %.1f MiB, after 50 x 10 MiB served %.1f MiB, growth "
              "%.1f MiB (50 full copies would be 500 MiB)" % (before / 1024.0, after / 1024.0,
                                                               growth), flush=True)
        assert growth < 150, growth
    finally:
        srv.cleanup()


if __name__ == "__main__":
    failed = 0
    for t in (test_expired_link_and_upload_slots, test_memory_50_clients_one_document):
        try:
            t()
            print("ok   %s" % t.__name__, flush=True)
        except Exception:  # noqa: BLE001
            failed += 1
            print("FAIL %s" % t.__name__, flush=True)
            traceback.print_exc()
    code = 0
    try:
        run([test_complete_with_pdf_delivers_a_working_link, test_links_that_fail,
             test_client_route_is_the_bill_accounts_alone, test_range_requests,
             test_replacing_the_document, test_upload_limits_and_media_types, test_cli_file],
            server_args=FAST)
    except SystemExit as e:
        code = e.code
    finally:
        RECV.close()
    if failed:
        print("%d tests on servers of their own failed" % failed)
    sys.exit(1 if failed or code else 0)
