"""A lab's test catalog (API.md 9, issue 12): the lab side keeps tests, packages and party
rates (admin API, `labhook lab catalog ...`); integrators read them at GET /client/crm/tests
and /client/crm/packages with the party's price; bills that name catalog ids get the
catalog's names, in GET /client/bills and in bill.created at a real HTTPS receiver."""
import json
import os
import subprocess
import tempfile
import threading

from harness import BIN, expect_error, run
from receiver import Receiver

RECV = Receiver()
FAST = ["--ca-file", RECV.ca, "--allow-net", "127.0.0.0/8", "--retry-schedule",
        "0,200ms,400ms", "--timeout", "2s", "--connect-timeout", "1s"]


def put(srv, path, body):
    r = srv.admin("PUT", path, body)
    assert r.status == 200, r
    return r.json


def catalog(srv, lab):
    """Tests T1..T3, package P1 (T2, T3), rates of no one yet."""
    base = "/admin/labs/%s/catalog" % lab
    put(srv, base + "/tests/T1", {"name": "Complete Blood Count", "price": 350})
    put(srv, base + "/tests/T2", {"name": "LDL Cholesterol", "price": 249.5})
    put(srv, base + "/tests/T3", {"name": "HDL Cholesterol", "price": 0.75})
    put(srv, base + "/packages/P1", {"name": "Lipid Profile", "price": 450, "tests": ["T2", "T3"]})
    return base


def crm(srv, c, kind, **q):
    query = "&".join("%s=%s" % kv for kv in q.items())
    return srv.get("/client/crm/%s?%s" % (kind, query), token=c["token"])


def prices(r):
    assert r.status == 200, r
    return {t["_id"]: (t["price"], t.get("partyPrice")) for t in r.json["data"]}


def test_prices_with_and_without_each_party_kind(srv):
    c = srv.client("party-scoped")
    base = catalog(srv, c["lab"])
    put(srv, base + "/tests/T1/rates/" + c["cu"], {"price": 300})
    put(srv, base + "/packages/P1/rates/" + c["cu"], {"price": 399.99})
    put(srv, base + "/tests/T2/rates/" + c["org"], {"price": 200})

    # No party: the lab's prices, as numbers the way Flabs shows them.
    assert prices(crm(srv, c, "tests", branchID=c["lab"])) == {
        "T1": (350, None), "T2": (249.5, None), "T3": (0.75, None)}
    # A corporate user: its rate where set, the lab's price elsewhere.
    assert prices(crm(srv, c, "tests", branchID=c["lab"], corporateUser=c["cu"])) == {
        "T1": (300, 300), "T2": (249.5, None), "T3": (0.75, None)}
    # An organization: its own rates, not the corporate user's.
    assert prices(crm(srv, c, "tests", branchID=c["lab"], organization=c["org"])) == {
        "T1": (350, None), "T2": (200, 200), "T3": (0.75, None)}
    r = crm(srv, c, "packages", branchID=c["lab"], corporateUser=c["cu"])
    assert prices(r) == {"P1": (399.99, 399.99)}
    # The wire shows the decimal as written, not a binary float's 17 digits.
    raw = r.raw.decode() if isinstance(r.raw, bytes) else r.raw
    assert '"price":399.99,' in raw and "399.9900" not in raw, raw[:400]
    p = r.json["data"][0]
    assert p["name"] == "Lipid Profile" and p["labPrice"] == 450, p
    assert p["tests"] == [{"_id": "T2", "name": "LDL Cholesterol"},
                          {"_id": "T3", "name": "HDL Cholesterol"}], p
    assert crm(srv, c, "packages", branchID=c["lab"], organization=c["org"]).json["data"][0][
        "price"] == 450
    # The admin view of one party's rates, of both kinds.
    r = srv.admin("GET", base.replace("/catalog", "/catalog/rates/") + c["cu"])
    assert r.status == 200, r
    assert [(x["kind"], x["_id"], x["price"]) for x in r.json["data"]] == [
        ("test", "T1", 300), ("package", "P1", 399.99)], r
    # A rate removed: the lab's price again.
    assert srv.admin("DELETE", base + "/tests/T1/rates/" + c["cu"]).status == 200
    assert prices(crm(srv, c, "tests", branchID=c["lab"], corporateUser=c["cu"]))["T1"] == (
        350, None)
    expect_error(srv.admin("DELETE", base + "/tests/T1/rates/" + c["cu"]), 404,
                 "rate_not_found")


def test_party_and_branch_errors(srv):
    c = srv.client("party-scoped")
    other = srv.client("party-scoped")
    catalog(srv, c["lab"])
    catalog(srv, other["lab"])
    expect_error(crm(srv, c, "tests"), 400, "missing_field", "branchID")
    expect_error(crm(srv, c, "tests", branchID=""), 400, "missing_field", "branchID")
    expect_error(crm(srv, c, "tests", branchID=other["lab"]), 404, "lab_not_found", "branchID")
    expect_error(crm(srv, c, "packages", branchID="lab_nope"), 404, "lab_not_found")
    expect_error(crm(srv, c, "tests", branchID=c["lab"], corporateUser=c["cu"],
                     organization=c["org"]), 400, "too_many_parties")
    expect_error(crm(srv, c, "tests", branchID=c["lab"], corporateUser=other["cu"]), 404,
                 "party_not_found", "corporateUser")
    expect_error(crm(srv, c, "packages", branchID=c["lab"], organization=other["org"]), 404,
                 "party_not_found", "organization")
    expect_error(crm(srv, c, "tests", branchID=c["lab"], corporateUser="cu_unknown"), 404,
                 "party_not_found")
    # The right party under the wrong kind is not that party.
    expect_error(crm(srv, c, "tests", branchID=c["lab"], organization=c["cu"]), 404,
                 "party_not_found", "organization")
    expect_error(crm(srv, c, "tests", branchID=c["lab"], limit=501), 400, "invalid_value",
                 "limit")
    expect_error(crm(srv, c, "tests", branchID=c["lab"], page=0), 400, "invalid_value", "page")
    expect_error(srv.get("/client/crm/tests?branchID=" + c["lab"]), 401)
    # The admin side refuses a party of another account for a rate.
    expect_error(srv.admin("PUT", "/admin/labs/%s/catalog/tests/T1/rates/%s" %
                           (c["lab"], other["cu"]), {"price": 1}), 404, "party_not_found")


def test_paging_over_a_large_catalog(srv):
    c = srv.client()
    ids = ["T%05d" % i for i in range(1200)]
    r = srv.admin("POST", "/admin/labs/%s/catalog" % c["lab"],
                  {"tests": [{"id": t, "name": "Test " + t, "price": i % 1000}
                             for i, t in enumerate(reversed(ids))]})
    assert r.status == 200 and r.json["tests"] == 1200, r
    seen, page = [], 1
    while True:
        r = crm(srv, c, "tests", branchID=c["lab"], page=page, limit=500)
        assert r.status == 200, r
        assert r.json["total"] == 1200 and r.json["page"] == page and r.json["limit"] == 500
        seen += [t["_id"] for t in r.json["data"]]
        if not r.json["hasMore"]:
            assert "nextPage" not in r.json, r
            break
        assert r.json["nextPage"] == page + 1, r
        page += 1
    assert page == 3 and seen == ids, (page, len(seen))
    # The default page is 100 items; past the end is an empty page, not an error.
    r = crm(srv, c, "tests", branchID=c["lab"])
    assert len(r.json["data"]) == 100 and r.json["limit"] == 100, r
    r = crm(srv, c, "tests", branchID=c["lab"], page=99, limit=500)
    assert r.status == 200 and r.json["data"] == [] and not r.json["hasMore"], r


def bill(lab, **kw):
    b = {"labID": lab, "integrator_id": "INT-7",
         "patient_details": {"first_name": "Asha", "gender": "female", "age": 34,
                             "age_type": "year"}}
    b.update(kw)
    return b


def test_bill_gets_the_catalog_names(srv):
    c = srv.client()
    catalog(srv, c["lab"])
    r = srv.post("/client/events/subscribe",
                 {"labID": c["lab"], "events": ["bill.created"], "protocol": "https",
                  "endpoint": RECV.url("/catalog/bill")}, token=c["token"])
    assert r.status == 200, r
    r = srv.post("/client/billing/create",
                 bill(c["lab"], mapped_tests=[{"flabs_id": "T1", "name": "what I call it"},
                                              {"id": "T3"}],
                      unmapped_tests=["Free Text Test"], mapped_packages=[{"id": "P1"}]),
                 token=c["token"])
    assert r.status == 200, r
    bill_id = r.json["billID"]
    want = ["Complete Blood Count", "HDL Cholesterol", "Free Text Test", "LDL Cholesterol",
            "HDL Cholesterol"]
    r = srv.get("/client/bills/" + bill_id, token=c["token"])
    assert r.status == 200, r
    tests = r.json["bill"]["billData"]["testData"]
    assert [t["name"] for t in tests] == want, tests
    assert len({t["_id"] for t in tests}) == 5, tests
    assert RECV.wait_for(lambda: RECV.received("/catalog/bill")), "no bill.created delivered"
    payload = json.loads(RECV.received("/catalog/bill")[0]["body"])
    assert payload["data"]["billID"] == bill_id, payload
    assert payload["data"]["billData"]["testData"] == tests, payload
    # Completing the package's first test works on the ids the payload carried.
    r = srv.request("POST", "/lab/bills/%s/reports/%s/complete" % (bill_id, tests[3]["_id"]),
                    token=srv.admin_key())
    assert r.status == 200, r


def test_unknown_catalog_ids_are_refused(srv):
    c = srv.client()
    catalog(srv, c["lab"])
    r = srv.post("/client/billing/create",
                 bill(c["lab"], mapped_tests=[{"flabs_id": "T1"}, {"id": "T2"},
                                              {"flabs_id": "T123"}]), token=c["token"])
    expect_error(r, 400, "unknown_catalog_item", "mapped_tests[2].flabs_id")
    assert "'T123'" in r.json["error"]["message"], r
    r = srv.post("/client/billing/create",
                 bill(c["lab"], mapped_packages=[{"id": "P404"}]), token=c["token"])
    expect_error(r, 400, "unknown_catalog_item", "mapped_packages[0].id")
    # A test id is not a package id.
    expect_error(srv.post("/client/billing/create",
                          bill(c["lab"], mapped_packages=[{"id": "T1"}]), token=c["token"]),
                 400, "unknown_catalog_item", "mapped_packages[0].id")
    # The lab's front desk gets the same rule.
    r = srv.request("POST", "/lab/bills", dict(bill(c["lab"], mapped_tests=[{"id": 42}]),
                                               clientID=c["id"]), token=srv.admin_key())
    expect_error(r, 400, "unknown_catalog_item", "mapped_tests[0].id")
    # Nothing of a refused bill was kept.
    with srv.db() as db:
        n = db.execute("SELECT count(*) FROM bills WHERE lab_id = ?", (c["lab"],)).fetchone()
    assert n[0] == 0, n
    # Emptied, the lab takes any id again, from the next bill on.
    base = "/admin/labs/%s/catalog" % c["lab"]
    for path in ("/packages/P1", "/tests/T1", "/tests/T2", "/tests/T3"):
        assert srv.admin("DELETE", base + path).status == 200
    r = srv.post("/client/billing/create", bill(c["lab"], mapped_tests=[{"flabs_id": "T123"}]),
                 token=c["token"])
    assert r.status == 200, r
    put(srv, base + "/tests/T1", {"name": "CBC", "price": 1})
    expect_error(srv.post("/client/billing/create",
                          bill(c["lab"], mapped_tests=[{"flabs_id": "T123"}]), token=c["token"]),
                 400, "unknown_catalog_item", "mapped_tests[0].flabs_id")
    # A lab whose catalog is empty keeps today's rule: any id, named as sent.
    d = srv.client()
    r = srv.post("/client/billing/create", bill(d["lab"], mapped_tests=[{"flabs_id": "T123"}]),
                 token=d["token"])
    assert r.status == 200, r
    r = srv.get("/client/bills/" + r.json["billID"], token=d["token"])
    assert r.json["bill"]["billData"]["testData"][0]["name"] == "T123", r


def test_leads_name_catalog_ids(srv):
    c = srv.client()
    catalog(srv, c["lab"])
    r = srv.post("/client/events/subscribe",
                 {"labID": c["lab"], "events": ["lead.created"], "protocol": "https",
                  "endpoint": RECV.url("/catalog/lead")}, token=c["token"])
    assert r.status == 200, r
    lead = {"branchID": c["lab"], "integratorID": "INT-L", "first_name": "Ravi",
            "contact": "9876500001", "age": 41, "age_type": "year"}
    r = srv.post("/client/crm/lead/create", dict(lead, tests=["T1", "T404"]), token=c["token"])
    expect_error(r, 400, "unknown_catalog_item", "tests[1]")
    r = srv.post("/client/crm/lead/create", dict(lead, packages=["T1"]), token=c["token"])
    expect_error(r, 400, "unknown_catalog_item", "packages[0]")
    r = srv.post("/client/crm/lead/create", dict(lead, tests=["T3", "T1"], packages=["P1"]),
                 token=c["token"])
    assert r.status == 200, r
    assert RECV.wait_for(lambda: RECV.received("/catalog/lead")), "no lead.created delivered"
    data = json.loads(RECV.received("/catalog/lead")[0]["body"])["data"]
    assert data["tests"] == ["T3", "T1"], data
    assert data["testDetails"] == [{"_id": "T3", "name": "HDL Cholesterol"},
                                   {"_id": "T1", "name": "Complete Blood Count"}], data
    assert data["packageDetails"] == [{"_id": "P1", "name": "Lipid Profile"}], data
    # A lab without a catalog: tests stay free text, as before.
    d = srv.client()
    r = srv.post("/client/crm/lead/create", dict(lead, branchID=d["lab"], tests=["CBC"]),
                 token=d["token"])
    assert r.status == 200, r


def test_admin_validation(srv):
    c = srv.client()
    other = srv.client()
    base = catalog(srv, c["lab"])
    cases = [
        ("PUT", "/tests/X", {"name": "X", "price": -1}, 400, "invalid_value", "price"),
        ("PUT", "/tests/X", {"name": "X", "price": 1.005}, 400, "invalid_value", "price"),
        ("PUT", "/tests/X", {"name": "X", "price": "10"}, 400, "invalid_type", "price"),
        ("PUT", "/tests/X", {"name": "X", "price": 1e12}, 400, "invalid_value", "price"),
        ("PUT", "/tests/X", {"price": 1}, 400, "missing_field", "name"),
        ("PUT", "/tests/X", {"name": "", "price": 1}, 400, None, "name"),
        ("PUT", "/tests/X", {"name": "X", "price": 1, "tests": []}, 400, "unknown_field", None),
        ("PUT", "/tests/X", {"id": "Y", "name": "X", "price": 1}, 400, "unknown_field", "id"),
        ("PUT", "/packages/PX", {"name": "X", "price": 1, "tests": ["T1", "T404"]}, 400,
         "unknown_catalog_item", "tests[1]"),
        ("PUT", "/packages/PX", {"name": "X", "price": 1, "tests": ["T1", "T1"]}, 400,
         "duplicate_value", "tests[1]"),
        ("PUT", "/packages/PX", {"name": "X", "price": 1, "tests": ["bad id!"]}, 400,
         "invalid_value", "tests[0]"),
        ("DELETE", "/tests/T2", None, 409, "test_in_package", None),
        ("DELETE", "/tests/T404", None, 404, "catalog_item_not_found", None),
        ("PUT", "/tests/T404/rates/" + other["id"], {"price": 1}, 404, None, None),
        ("PUT", "/tests/" + "A" * 48, {"name": "X", "price": 1}, 404, "not_found", None),
        ("POST", "", {"tests": [{"id": "A", "name": "A", "price": 1},
                                {"id": "A", "name": "B", "price": 2}]}, 400,
         "duplicate_value", "tests[1].id"),
        ("POST", "", {"tests": [{"name": "A", "price": 1}]}, 400, "missing_field", "tests[0].id"),
        ("POST", "", {"packages": [{"id": "PA", "name": "A", "price": 1, "tests": ["T1"]},
                                   {"id": "PB", "name": "B", "price": 1,
                                    "tests": ["T1", "TZ"]}]}, 400,
         "unknown_catalog_item", "packages[1].tests[1]"),
        ("POST", "", {}, 400, "missing_field", "tests"),
        ("POST", "", {"tests": [], "extra": 1}, 400, "unknown_field", None),
    ]
    for method, path, body, status, code, field in cases:
        r = srv.admin(method, base + path, body)
        try:
            expect_error(r, status, code, field)
        except AssertionError as e:
            raise AssertionError("%s %s %r: %s" % (method, path, body, e))
    expect_error(srv.admin("PUT", "/admin/labs/lab_nope/catalog/tests/T1",
                           {"name": "X", "price": 1}), 404, "lab_not_found")
    # Nothing of the refused puts was kept; an import that refers to a test it adds works.
    r = crm(srv, c, "tests", branchID=c["lab"])
    assert [t["_id"] for t in r.json["data"]] == ["T1", "T2", "T3"], r
    r = srv.admin("POST", base, {"tests": [{"id": "T4", "name": "Vitamin D", "price": 1200}],
                                 "packages": [{"id": "P2", "name": "Wellness", "price": 1500,
                                               "tests": ["T4", "T1"]}]})
    assert r.status == 200 and (r.json["tests"], r.json["packages"]) == (1, 1), r
    r = crm(srv, c, "packages", branchID=c["lab"])
    assert [(p["_id"], [t["_id"] for t in p["tests"]]) for p in r.json["data"]] == [
        ("P1", ["T2", "T3"]), ("P2", ["T4", "T1"])], r
    # A package put again replaces its tests; then a test it no longer holds can go.
    put(srv, base + "/packages/P1", {"name": "Lipid Profile", "price": 450, "tests": ["T3"]})
    assert srv.admin("DELETE", base + "/tests/T2").status == 200
    assert srv.admin("DELETE", base + "/packages/P2").status == 200
    r = crm(srv, c, "packages", branchID=c["lab"])
    assert [(p["_id"], [t["_id"] for t in p["tests"]]) for p in r.json["data"]] == [
        ("P1", ["T3"])], r


def test_concurrent_delete_and_package_put(srv):
    """A test deleted while a package naming it is put, both at once, many times over: one
    of the two must lose (the delete 409 test_in_package, or the put 400
    unknown_catalog_item), never both win, which would leave a package holding a test that
    is gone. On PostgreSQL the two run on connections of their own, at READ COMMITTED, and
    the store serialises one lab's catalog changes on the lab's row (store_pg.c,
    catalog_lock); on SQLite its one writer does."""
    c = srv.client()
    base = "/admin/labs/%s/catalog" % c["lab"]
    outcomes = {}
    for i in range(60):
        put(srv, base + "/tests/R%d" % i, {"name": "Race %d" % i, "price": 10})
        start = threading.Barrier(2)
        got = {}

        def delete():
            start.wait()
            got["delete"] = srv.admin("DELETE", base + "/tests/R%d" % i)

        def package():
            start.wait()
            got["put"] = srv.admin("PUT", base + "/packages/RP%d" % i,
                                   {"name": "Race", "price": 20, "tests": ["R%d" % i]})

        threads = [threading.Thread(target=delete), threading.Thread(target=package)]
        [t.start() for t in threads]
        [t.join(30) for t in threads]
        d, p = got["delete"], got["put"]
        assert (d.status, p.status) in ((200, 400), (409, 200)), (i, d, p)
        if d.status == 200:
            expect_error(p, 400, "unknown_catalog_item", "tests[0]")
        else:
            expect_error(d, 409, "test_in_package")
        outcomes[(d.status, p.status)] = outcomes.get((d.status, p.status), 0) + 1
    print("   60 races (delete, put): %s" % sorted(outcomes.items()), flush=True)
    tests = {t["_id"] for t in crm(srv, c, "tests", branchID=c["lab"]).json["data"]}
    for pk in crm(srv, c, "packages", branchID=c["lab"]).json["data"]:
        assert pk["tests"] and all(t["_id"] in tests for t in pk["tests"]), pk


def cli(srv, *args):
    return subprocess.run([BIN, "lab", "--data-dir", srv.data_dir, "--url",
                           "http://127.0.0.1:%d" % srv.port] + list(args),
                          capture_output=True, text=True, timeout=30)


def test_cli_commands(srv):
    c = srv.client("party-scoped")
    lab = c["lab"]
    p = cli(srv, "catalog", "add-test", lab, "C1", "--name", "Glucose", "--price", "120.5")
    assert p.returncode == 0, p.stderr
    p = cli(srv, "catalog", "add-test", lab, "C2", "--name", "HbA1c", "--price", "-3")
    assert p.returncode == 1 and "price" in p.stderr, (p.stdout, p.stderr)
    p = cli(srv, "catalog", "add-test", lab, "C2", "--name", "HbA1c", "--price", "400")
    assert p.returncode == 0, p.stderr
    p = cli(srv, "catalog", "add-package", lab, "CP", "--name", "Diabetes", "--price", "450",
            "--tests", "C1,C2")
    assert p.returncode == 0, p.stderr
    p = cli(srv, "catalog", "set-test-rate", lab, "C1", c["cu"], "--price", "99")
    assert p.returncode == 0, p.stderr
    p = cli(srv, "catalog", "set-package-rate", lab, "CP", c["cu"], "--price", "400")
    assert p.returncode == 0, p.stderr
    p = cli(srv, "catalog", "list-rates", lab, c["cu"])
    assert p.returncode == 0, p.stderr
    assert [x["_id"] for x in json.loads(p.stdout)["data"]] == ["C1", "CP"], p.stdout
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"tests": [{"id": "C3", "name": "Lipase", "price": 700}],
                   "packages": [{"id": "CQ", "name": "Pancreas", "price": 900,
                                 "tests": ["C3"]}]}, f)
    try:
        p = cli(srv, "catalog", "import", lab, "--file", f.name)
        assert p.returncode == 0, p.stderr
    finally:
        os.unlink(f.name)
    p = cli(srv, "catalog", "list-tests", lab)
    assert p.returncode == 0, p.stderr
    assert [(t["_id"], t["price"]) for t in json.loads(p.stdout)["data"]] == [
        ("C1", 120.5), ("C2", 400), ("C3", 700)], p.stdout
    p = cli(srv, "catalog", "list-packages", lab)
    assert [(x["_id"], [t["name"] for t in x["tests"]]) for x in json.loads(p.stdout)["data"]] \
        == [("CP", ["Glucose", "HbA1c"]), ("CQ", ["Lipase"])], p.stdout
    p = cli(srv, "catalog", "remove-test-rate", lab, "C1", c["cu"])
    assert p.returncode == 0, p.stderr
    p = cli(srv, "catalog", "remove-package-rate", lab, "CP", c["cu"])
    assert p.returncode == 0, p.stderr
    p = cli(srv, "catalog", "remove-test", lab, "C1")
    assert p.returncode == 1 and "test_in_package" in p.stderr, p.stderr
    p = cli(srv, "catalog", "remove-package", lab, "CP")
    assert p.returncode == 0, p.stderr
    p = cli(srv, "catalog", "remove-test", lab, "C1")
    assert p.returncode == 0, p.stderr
    r = crm(srv, c, "tests", branchID=lab, corporateUser=c["cu"])
    assert prices(r) == {"C2": (400, None), "C3": (700, None)}, r


if __name__ == "__main__":
    try:
        run([test_prices_with_and_without_each_party_kind, test_party_and_branch_errors,
             test_paging_over_a_large_catalog, test_bill_gets_the_catalog_names,
             test_unknown_catalog_ids_are_refused, test_leads_name_catalog_ids,
             test_admin_validation, test_concurrent_delete_and_package_put, test_cli_commands],
            server_args=FAST)
    finally:
        RECV.close()
