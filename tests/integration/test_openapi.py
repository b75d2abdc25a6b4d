"""docs/openapi.json: served at GET /openapi.json as kept in the repository, naming every
route of the route table, and the check that holds the suite's traffic to it (openapi_check,
run at the exit of every integration file) able to fail."""
import hashlib
import json
import os
import re

import openapi_check
from harness import Server, run

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DOC = os.path.join(ROOT, "docs", "openapi.json")


def test_served_as_kept_in_the_repository(srv):
    with open(DOC, "rb") as f:
        want = f.read()
    r = srv.get("/openapi.json", headers={"Content-Type": ""})  # no credentials needed
    assert r.status == 200, r
    assert r.headers["content-type"] == "application/json", r.headers
    assert r.raw.encode() == want, "the binary serves another document than docs/openapi.json"
    assert json.loads(r.raw)["openapi"] == "3.1.0"
    etag = '"%s"' % hashlib.sha256(want).hexdigest()
    assert r.headers["etag"] == etag, r.headers
    assert r.headers["cache-control"] == "no-cache", r.headers
    assert r.headers.get("x-request-id"), r.headers
    again = srv.get("/openapi.json", headers={"If-None-Match": etag})
    assert again.status == 304 and again.raw == "", again
    other = srv.get("/openapi.json", headers={"If-None-Match": '"0000"'})
    assert other.status == 200 and other.raw.encode() == want
    head = srv.request("HEAD", "/openapi.json")
    assert head.status == 200 and head.raw == "", head
    assert head.headers["content-length"] == str(len(want)), head.headers
    r = srv.post("/openapi.json", {})
    assert r.status == 405 and r.headers["allow"] == "GET", r


def test_every_route_of_the_binary_is_documented(srv):
    """The route table in src/api.c against the document's paths, both ways (a route
    without traffic in the suite is still found)."""
    with open(os.path.join(ROOT, "src", "api.c")) as f:
        src = f.read()
    table = src[src.index("static const struct route routes[]"):]
    table = table[:table.index("};")]
    routes = {(m, p) for m, p in re.findall(r'\{"([A-Z]+)",\s*"([^"]+)"', table)}
    assert len(routes) > 40, routes
    doc = openapi_check.Document().raw
    documented = {(m.upper(), re.sub(r"\{[^}]+\}", "*", p))
                  for p, item in doc["paths"].items() for m in item
                  if m in openapi_check.METHODS}
    missing = routes - documented
    assert not missing, "routes the document lacks: %s" % sorted(missing)
    extra = documented - routes
    assert not extra, "documented routes the binary does not have: %s" % sorted(extra)


def _rec(method, target, status, body=None, req_body=None, ctype="application/json",
         headers=None):
    h = {"content-type": ctype, "x-request-id": "t"}
    h.update(headers or {})
    return {"method": method, "target": target, "req_headers": {"authorization": "Bearer x"},
            "req_body": json.dumps(req_body) if req_body is not None else None,
            "status": status, "resp_headers": h,
            "resp_body": json.dumps(body) if body is not None else None,
            "resp_len": len(json.dumps(body)) if body is not None else 0}


def test_the_check_fails_on_mismatches(srv):
    """Each record here breaks the document in one way: the check must say so."""
    ok_labs = {"success": True, "message": "Labs fetched successfully",
               "labs": [{"labID": "lab_01ABC", "name": "Lab"}]}
    err = {"success": False, "error": {"code": "not_found", "message": "no"}}
    good = [_rec("GET", "/client/labs", 200, ok_labs),
            _rec("GET", "/nope", 404, err),
            _rec("POST", "/client/labs", 405, err, headers={"allow": "GET"})]
    problems, _ = openapi_check.check(good)
    assert problems == [], problems
    # why -> (a record broken that one way, what the check must say about it). Every
    # problem reported must be that one, so that a record broken some other way as well
    # (a response off its schema where the request's body was meant) cannot pass.
    bad = {
        "undocumented route": (_rec("GET", "/client/secret-route", 200, ok_labs),
                               "matches no path of the document"),
        "undocumented method": (_rec("PUT", "/client/labs", 200, ok_labs),
                                "the document has no such operation"),
        "wrong Allow": (_rec("POST", "/client/labs", 405, err, headers={"allow": "GET, POST"}),
                        "405 Allow ['GET', 'POST'], document lists ['GET']"),
        "undocumented status": (_rec("GET", "/client/labs", 409, err),
                                "status 409 is not documented"),
        "body off its schema": (_rec("GET", "/client/labs", 200,
                                     dict(ok_labs, labs=[{"labID": 7, "name": "Lab"}])),
                                "200 response labs/0/labID: 7 is not of type 'string'"),
        "missing field": (_rec("GET", "/client/labs", 200, {"success": True, "message": "m"}),
                          "200 response (root): 'labs' is a required property"),
        "error body off its schema": (_rec("GET", "/client/labs", 401,
                                           {"success": False, "error": "bad"}),
                                      "401 response error: 'bad' is not of type 'object'"),
        "undocumented content type": (_rec("GET", "/client/labs", 200, ok_labs,
                                           ctype="text/html"),
                                      "Content-Type 'text/html'"),
        "request body off its schema": (_rec(
            "POST", "/admin/accounts", 200,
            {"success": True, "message": "m", "clientID": "cl_1", "name": "n",
             "mode": "catch-all", "createdAt": "2026-01-01T00:00:00Z", "clientSecret": "cs_1"},
            req_body={"name": "n", "unknown": 1}),
            "POST /admin/accounts request body (root): Additional properties"),
        "undocumented query parameter": (_rec("GET", "/client/labs?x=1", 200, ok_labs),
                                         "query parameter 'x' is not documented"),
    }
    for why, (rec, says) in bad.items():
        problems, _ = openapi_check.check([rec])
        assert problems, "the check let through: " + why
        assert all(says in p for p in problems), (why, says, problems)


if __name__ == "__main__":
    run([test_served_as_kept_in_the_repository, test_every_route_of_the_binary_is_documented,
         test_the_check_fails_on_mismatches])
