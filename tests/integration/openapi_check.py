"""Holds the integration suite to docs/openapi.json: the harness records every exchange it
has with labhook (record()), and at the end of the test process check() finds what the
document does not allow:

- a path no template matches, unless answered 404/400/413/501/503 (a route the document
  lacks answers something else);
- a method the path does not list, unless answered 405 (its Allow header must then list
  exactly the documented methods) or a status the server gives before routing;
- a status the operation does not list; a body of a content type it does not list; a JSON
  body that its schema refuses (draft 2020-12, python3-jsonschema);
- on a 2xx: a JSON request body the request schema refuses, an undocumented or invalid
  query parameter, a missing required one, no Authorization on a secured operation.

Requests the server refuses are not held to the request schemas: the tests send bad input on
purpose, and the answer to it is checked instead. Deliberately malformed raw-socket traffic
is not recorded. With LABHOOK_TEST_OPENAPI_LOG=<dir> the records are also written there as
JSONL, one file per process. Standard library plus jsonschema.
"""
import copy
import json
import os
import re
import threading
import urllib.parse

import jsonschema

DOC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                        "openapi.json")
BASE = "urn:labhook-openapi"
PRE_ROUTING = {400, 413, 501, 503}  # answers the server can give before it routes
# Pages, not the API: the web console (issue 11) serves HTML, CSS and JavaScript there.
NOT_API_PREFIXES = ("/console",)
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

_records = []
_lock = threading.Lock()


def record(method, target, req_headers, req_body, status, resp_headers, resp_body):
    """One exchange: target is the path with its query; headers are dicts (response names
    lower-cased); bodies are bytes or str (None: none)."""
    if isinstance(req_body, str):
        req_body = req_body.encode()
    if isinstance(resp_body, str):
        resp_body = resp_body.encode("utf-8", "surrogateescape")
    ctype = (resp_headers.get("content-type") or "").split(";")[0].strip().lower()
    rec = {"method": method.upper(), "target": target,
           "req_headers": {k.lower(): v for k, v in (req_headers or {}).items()
                           if k.lower() in ("content-type", "authorization")},
           "req_body": req_body.decode("utf-8", "replace") if req_body else None,
           "status": status, "resp_headers": dict(resp_headers),
           # Only JSON bodies are checked against schemas; a document's bytes are not kept.
           "resp_body": (resp_body.decode("utf-8", "replace")
                         if resp_body and "json" in ctype else None),
           "resp_len": len(resp_body or b"")}
    with _lock:
        _records.append(rec)


def _rewrite_refs(node):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/"):
                out[k] = BASE + "#/" + v[2:]
            else:
                out[k] = _rewrite_refs(v)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


class Document:
    def __init__(self, path=None):
        with open(path or DOC_PATH) as f:
            self.raw = json.load(f)
        self.doc = _rewrite_refs(self.raw)
        self.templates = []
        for tpl, item in self.doc["paths"].items():
            rx = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(tpl)) + "$"
            self.templates.append((re.compile(rx), tpl, item))
        self.ops = {(m.upper(), tpl) for tpl, item in self.doc["paths"].items()
                    for m in item if m in METHODS}
        self._validators = {}
        try:  # jsonschema >= 4.18
            from referencing import Registry, Resource
            from referencing.jsonschema import DRAFT202012
            self._registry = Registry().with_resource(
                BASE, Resource.from_contents(self.doc, default_specification=DRAFT202012))
            self._resolver = None
        except ImportError:  # Debian 12's 4.10
            self._registry = None
            self._resolver = jsonschema.RefResolver(BASE, self.doc, store={BASE: self.doc})

    def deref(self, node):
        while isinstance(node, dict) and "$ref" in node:
            ptr = node["$ref"].split("#", 1)[1]
            node = self.doc
            for part in ptr.strip("/").split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def errors(self, schema, instance):
        """Schema violations of instance, as short strings."""
        key = id(schema)
        v = self._validators.get(key)
        if v is None:
            cls = jsonschema.Draft202012Validator
            v = (cls(schema, registry=self._registry) if self._registry is not None
                 else cls(schema, resolver=self._resolver))
            self._validators[key] = v
        return ["%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(root)",
                            e.message[:300])
                for e in v.iter_errors(instance)]

    def match(self, path):
        for rx, tpl, item in self.templates:
            if rx.match(path):
                return tpl, item
        return None, None


def _json(text):
    try:
        return json.loads(text), None
    except ValueError as e:
        return None, str(e)


def check_one(d, r):
    """The document's objections to one record, as a list of strings."""
    errs = []
    u = urllib.parse.urlsplit(r["target"])
    path, method, status = u.path, r["method"], r["status"]
    lookup = "GET" if method == "HEAD" else method
    tpl, item = d.match(path)
    err_schema = d.doc["components"]["schemas"]["Error"]

    def body_is_error():
        if r["resp_body"] is None:
            return ["status %d without a JSON error body" % status] if method != "HEAD" else []
        inst, e = _json(r["resp_body"])
        return ["error body is not JSON: %s" % e] if e else d.errors(err_schema, inst)

    if tpl is None:
        if any(path == p or path.startswith(p + "/") for p in NOT_API_PREFIXES):
            return []
        if status in PRE_ROUTING | {404}:
            return body_is_error()
        return ["path %s matches no path of the document (answered %d)" % (path, status)]
    op = item.get(lookup.lower())
    if op is None:
        if status == 405:
            allow = {m.strip().upper() for m in r["resp_headers"].get("allow", "").split(",")
                     if m.strip()}
            want = {m.upper() for m in item if m in METHODS}
            if allow != want:
                errs.append("405 Allow %s, document lists %s for %s" %
                            (sorted(allow), sorted(want), tpl))
            return errs + body_is_error()
        if status in PRE_ROUTING:
            return body_is_error()
        return ["%s %s: the document has no such operation (answered %d)" % (method, tpl, status)]
    resp = op["responses"].get(str(status)) or op["responses"].get("default")
    if resp is None:
        return ["%s %s: status %d is not documented (documented: %s)" %
                (method, tpl, status, ", ".join(op["responses"]))]
    resp = d.deref(resp)
    if "x-request-id" not in r["resp_headers"]:
        errs.append("no X-Request-Id")
    ctype = (r["resp_headers"].get("content-type") or "").split(";")[0].strip().lower()
    content = resp.get("content") or {}
    if r["resp_len"] and method != "HEAD":
        if ctype not in content:
            errs.append("%s %s %d: Content-Type %r, document lists %s" %
                        (method, tpl, status, ctype, sorted(content) or "no body"))
        elif "json" in ctype:
            inst, e = _json(r["resp_body"] or "")
            if e:
                errs.append("%s %s %d: body is not JSON: %s" % (method, tpl, status, e))
            elif "schema" in content[ctype]:
                errs += ["%s %s %d response %s" % (method, tpl, status, x)
                         for x in d.errors(content[ctype]["schema"], inst)]
    if 200 <= status < 300:
        errs += _check_request(d, r, method, tpl, item, op, u)
    return errs


def _check_request(d, r, method, tpl, item, op, u):
    errs = []
    where = "%s %s request" % (method, tpl)
    params = [d.deref(p) for p in item.get("parameters", []) + op.get("parameters", [])]
    query = urllib.parse.parse_qs(u.query, keep_blank_values=True)
    qparams = {p["name"]: p for p in params if p["in"] == "query"}
    for name, values in query.items():
        p = qparams.get(name)
        if p is None:
            errs.append("%s: query parameter %r is not documented" % (where, name))
            continue
        for v in values:
            inst = v
            if p.get("schema", {}).get("type") == "integer" and re.fullmatch(r"-?\d+", v):
                inst = int(v)
            errs += ["%s: query %s=%r: %s" % (where, name, v, x)
                     for x in d.errors(p.get("schema", {}), inst)]
    for p in qparams.values():
        if p.get("required") and p["name"] not in query:
            errs.append("%s: required query parameter %r missing" % (where, p["name"]))
    if op.get("security") and "authorization" not in r["req_headers"]:
        errs.append("%s: succeeded without Authorization on a secured operation" % where)
    rb = d.deref(op.get("requestBody")) if op.get("requestBody") else None
    body = r["req_body"]
    if rb is None:
        return errs
    if rb.get("required") and not body:
        errs.append("%s: succeeded without the required body" % where)
    req_ct = (r["req_headers"].get("content-type") or "application/json").split(";")[0].lower()
    js = rb.get("content", {}).get("application/json")
    if body and js and "schema" in js and (req_ct == "application/json"
                                           or req_ct not in rb["content"]):
        inst, e = _json(body)
        if e is None:
            errs += ["%s body %s" % (where, x) for x in d.errors(js["schema"], inst)]
    return errs


def check(records=None):
    """(problems, (operations seen, operations documented)) for the records (default: all
    recorded in this process)."""
    d = Document()
    problems, seen = [], set()
    for r in (_records if records is None else records):
        for e in check_one(d, r):
            problems.append("%s %s -> %d: %s" % (r["method"], r["target"][:120], r["status"], e))
        tpl, item = d.match(urllib.parse.urlsplit(r["target"]).path)
        m = "GET" if r["method"] == "HEAD" else r["method"]
        if tpl and (m, tpl) in d.ops:
            seen.add((m, tpl))
    return problems, (seen, d.ops)


def dump(directory, name):
    """Writes this process's records to <directory>/<name>-<pid>.jsonl."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "%s-%d.jsonl" % (name, os.getpid())), "w") as f:
        for r in _records:
            f.write(json.dumps(r) + "\n")


def report(name):
    """Checks this process's records and prints coverage; returns the problems."""
    if not _records:
        return []
    log = os.environ.get("LABHOOK_TEST_OPENAPI_LOG")
    if log:
        dump(log, name)
    problems, (seen, ops) = check()
    print("openapi: %d exchanges checked against docs/openapi.json, %d/%d operations "
          "exercised, %d mismatches" % (len(_records), len(seen), len(ops), len(problems)),
          flush=True)
    return problems


def main(argv):
    """python3 openapi_check.py DIR: checks every JSONL file in DIR together and prints the
    suite's coverage (the operations no file exercised)."""
    recs = []
    for fn in sorted(os.listdir(argv[1])):
        if fn.endswith(".jsonl"):
            with open(os.path.join(argv[1], fn)) as f:
                recs += [json.loads(line) for line in f if line.strip()]
    problems, (seen, ops) = check(recs)
    for p in problems[:50]:
        print("MISMATCH " + p)
    print("openapi: %d exchanges, %d/%d operations exercised, %d mismatches" %
          (len(recs), len(seen), len(ops), len(problems)))
    for m, t in sorted(ops - seen, key=lambda x: (x[1], x[0])):
        print("  not exercised: %s %s" % (m, t))
    return 1 if problems else 0


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv))
