"""Labs and webhook registration (API.md 3, 4.1) and subscription management (4.2)."""
import threading

from harness import expect_error, run

EP = "https://hooks.example.com/labhook"


def body(c, **kw):
    b = {"labID": c["lab"], "events": ["bill.created"], "endpoint": EP, "protocol": "https"}
    b.update(kw)
    return {k: v for k, v in b.items() if v is not None}


def sub(srv, c, **kw):
    return srv.post("/client/events/subscribe", body(c, **kw), token=c["token"])


def test_labs_only_mine(srv):
    a, b = srv.client(), srv.client()
    second = srv.new_lab(a["id"], "Branch 2")
    r = srv.get("/client/labs", token=a["token"])
    assert r.status == 200 and r.json["success"] is True, r
    ids = sorted(l["labID"] for l in r.json["labs"])
    assert ids == sorted([a["lab"], second]), ids
    assert all(set(l) == {"labID", "name"} for l in r.json["labs"])
    assert b["lab"] not in ids


def test_subscribe_catch_all_success(srv):
    c = srv.client()
    r = sub(srv, c, events=["bill.created", "report.completed", "bill.created"],
            authToken="abc.DEF-123")
    assert r.status == 200, r
    assert r.json["success"] is True and r.json["message"] == "Events subscribed successfully"
    s = r.json["subscription"]
    assert s["id"].startswith("sub_") and s["labID"] == c["lab"] and s["endpoint"] == EP
    assert sorted(s["events"]) == ["bill.created", "report.completed"]  # duplicates collapse
    assert s["status"] == "active" and s["createdAt"].endswith("Z")
    assert "corporateUser" not in s and "organization" not in s
    assert "authToken" not in s and s["hasAuthToken"] is True
    secret = r.json["signingSecret"]
    assert secret.startswith("whsec_")
    import base64
    assert len(base64.b64decode(secret[6:])) >= 24


def test_every_event_type_accepted(srv):
    c = srv.client()
    evs = ["bill.created", "bill.completed", "bill.deleted", "report.completed",
           "lead.created", "booking.created"]
    r = sub(srv, c, events=evs)
    assert r.status == 200, r
    assert sorted(r.json["subscription"]["events"]) == sorted(evs)


def test_field_validation(srv):
    c = srv.client()
    cases = [
        (dict(labID=None), "missing_field", "labID"),
        (dict(events=None), "missing_field", "events"),
        (dict(endpoint=None), "missing_field", "endpoint"),
        (dict(protocol=None), "missing_field", "protocol"),
        (dict(labID=5), "invalid_type", "labID"),
        (dict(events="bill.created"), "invalid_type", "events"),
        (dict(events=[]), "invalid_value", "events"),
        (dict(events=["bill.exploded"]), "unknown_event", "events[0]"),
        (dict(events=["bill.created", 7]), "invalid_type", "events[1]"),
        (dict(endpoint=["x"]), "invalid_type", "endpoint"),
        (dict(protocol="http"), "invalid_value", "protocol"),
        (dict(protocol=True), "invalid_type", "protocol"),
        (dict(endpoint="http://hooks.example.com/x"), "invalid_endpoint", "endpoint"),
        (dict(endpoint="ftp://hooks.example.com/x"), "invalid_endpoint", "endpoint"),
        (dict(endpoint="https://"), "invalid_endpoint", "endpoint"),
        (dict(endpoint="hooks.example.com/x"), "invalid_endpoint", "endpoint"),
        (dict(endpoint="https://u:p@hooks.example.com/x"), "invalid_endpoint", "endpoint"),
        (dict(endpoint="https://hooks.example.com/x#frag"), "invalid_endpoint", "endpoint"),
        (dict(endpoint="https://hooks.example.com/a b"), "invalid_endpoint", "endpoint"),
        (dict(endpoint="https://hooks.example.com/" + "a" * 2030), "too_long", "endpoint"),
        (dict(authToken="a\r\nX-Evil: 1"), "invalid_value", "authToken"),
        (dict(authToken=12), "invalid_type", "authToken"),
        (dict(extra="x"), "unknown_field", "extra"),
        (dict(labID="x" * 1000000), "too_long", "labID"),
        (dict(endpoint="https://x.com/" + "a" * 1000000), "too_long", "endpoint"),
        (dict(authToken="a" * 1000000), "too_long", "authToken"),
        (dict(corporateUser="cu_x", organization="org_y"), "too_many_parties",
         "organization"),
    ]
    for kw, code, field in cases:
        r = sub(srv, c, **kw)
        expect_error(r, 400, code, field)
    # Not an object, not JSON, empty, null bytes.
    for raw in ["", "nope", "[1,2]", "null", '{"labID": "a", "labID": "b"}', "{" * 100000,
                '{"labID": "\\u0000"}']:
        r = srv.post("/client/events/subscribe", raw=raw, token=c["token"])
        expect_error(r, 400)
    # 2048 bytes exactly is allowed.
    ep = "https://hooks.example.com/"
    ep += "a" * (2048 - len(ep))
    assert sub(srv, c, endpoint=ep).status == 200


def test_blocked_literal_addresses(srv):
    c = srv.client()
    for host in ["127.0.0.1", "127.1", "2130706433", "10.1.2.3", "169.254.169.254",
                 "192.168.0.10", "172.16.5.5", "100.64.0.1", "0.0.0.0", "[::1]",
                 "[::ffff:127.0.0.1]", "[fe80::1]", "[fc00::1]", "localhost", "a.localhost",
                 "224.0.0.1"]:
        r = sub(srv, c, endpoint="https://%s/hook" % host)
        expect_error(r, 400, "blocked_address", "endpoint")
    # Unicode look-alikes map to loopback after IDN processing: refused as non-ASCII.
    for ep in ["https://１２７.０.０.１/", "https://127。0。0。1/", "https://ｌｏｃａｌｈｏｓｔ/",
               "https://169。254。169。254/latest"]:
        expect_error(sub(srv, c, endpoint=ep), 400, "invalid_endpoint", "endpoint")
    expect_error(sub(srv, c, endpoint="https://[::ffff:0:127.0.0.1]/"), 400, "blocked_address")
    # Hosts that are neither names nor addresses.
    for ep in ["https://./", "https://a..com/", "https://-a.com/", "https://1.1.1.1.1/",
               "https://256.0.0.1/", "https://4294967296/", "https://example.com:/"]:
        expect_error(sub(srv, c, endpoint=ep), 400, "invalid_endpoint", "endpoint")
    # A public literal is fine (delivery checks resolved addresses again).
    assert sub(srv, c, endpoint="https://93.184.216.34/hook").status == 200


def test_lab_of_another_account_is_404(srv):
    a, b = srv.client(), srv.client()
    expect_error(sub(srv, a, labID=b["lab"]), 404, "lab_not_found", "labID")
    expect_error(sub(srv, a, labID="lab_DOESNOTEXIST"), 404, "lab_not_found", "labID")


def test_party_rules(srv):
    ca = srv.client()
    expect_error(sub(srv, ca, corporateUser="cu_x"), 400, "party_not_allowed", "corporateUser")
    expect_error(sub(srv, ca, organization="org_x"), 400, "party_not_allowed", "organization")
    ps = srv.client("party-scoped")
    expect_error(sub(srv, ps), 400, "party_required")
    expect_error(sub(srv, ps, corporateUser=ps["cu"], organization=ps["org"]), 400,
                 "too_many_parties")
    other = srv.client("party-scoped")
    expect_error(sub(srv, ps, corporateUser=other["cu"]), 404, "party_not_found",
                 "corporateUser")
    expect_error(sub(srv, ps, organization="org_NOPE"), 404, "party_not_found", "organization")
    # A party of the wrong kind for the field is not found either.
    expect_error(sub(srv, ps, corporateUser=ps["org"]), 404, "party_not_found")
    r = sub(srv, ps, corporateUser=ps["cu"])
    assert r.status == 200 and r.json["subscription"]["corporateUser"] == ps["cu"], r
    r = sub(srv, ps, organization=ps["org"])
    assert r.status == 200 and r.json["subscription"]["organization"] == ps["org"], r


def test_conflicts_and_identical_repeat(srv):
    c = srv.client()
    first = sub(srv, c, events=["bill.created", "bill.completed"])
    assert first.status == 200, first
    sid = first.json["subscription"]["id"]
    # Identical repeat (same endpoint, events, party, order aside): 200, same subscription.
    again = sub(srv, c, events=["bill.completed", "bill.created"])
    assert again.status == 200, again
    assert again.json["subscription"]["id"] == sid
    assert again.json["signingSecret"] == first.json["signingSecret"]
    # A repeat carrying a new authToken applies it (the integrator means to use it).
    assert first.json["subscription"]["hasAuthToken"] is False
    again = sub(srv, c, events=["bill.completed", "bill.created"], authToken="tok-2")
    assert again.status == 200 and again.json["subscription"]["id"] == sid, again
    assert again.json["subscription"]["hasAuthToken"] is True
    # Overlapping events on another endpoint: 409 naming the events, nothing created.
    r = sub(srv, c, events=["bill.completed", "bill.deleted"],
            endpoint="https://other.example.com/h")
    expect_error(r, 409, "subscription_conflict", "events")
    assert r.json["error"]["conflicts"] == [{"event": "bill.completed",
                                             "subscriptionID": sid}], r
    assert "bill.completed" in r.json["error"]["message"]
    # Same endpoint, a subset of the events: not identical, so a conflict.
    expect_error(sub(srv, c, events=["bill.created"]), 409, "subscription_conflict")
    lst = srv.get("/client/events/subscriptions", token=c["token"]).json["subscriptions"]
    assert [s["id"] for s in lst] == [sid], lst
    # Disjoint events on the same lab: fine.
    assert sub(srv, c, events=["bill.deleted"], endpoint="https://other.example.com/h"
               ).status == 200
    # The same events on another lab: fine.
    lab2 = srv.new_lab(c["id"], "L2")
    assert sub(srv, c, labID=lab2, events=["bill.created", "bill.completed"]).status == 200


def test_party_scoped_conflicts_are_per_party(srv):
    ps = srv.client("party-scoped")
    cu2 = srv.new_party(ps["id"], "corporateUser", "Second Corp")
    assert sub(srv, ps, corporateUser=ps["cu"]).status == 200
    assert sub(srv, ps, corporateUser=cu2).status == 200
    assert sub(srv, ps, organization=ps["org"]).status == 200
    expect_error(sub(srv, ps, corporateUser=ps["cu"], endpoint="https://b.example.com/"),
                 409, "subscription_conflict")


def test_concurrent_registrations_one_winner(srv):
    c = srv.client()
    results = []

    def go(i):
        results.append(sub(srv, c, events=["lead.created"],
                           endpoint="https://h%d.example.com/" % i))
    ts = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert sorted(r.status for r in results) == [200] + [409] * 7, results
    # Identical registrations racing all succeed with the same subscription.
    results.clear()
    ts = [threading.Thread(target=lambda: results.append(
        sub(srv, c, events=["booking.created"]))) for _ in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert all(r.status == 200 for r in results), results
    assert len({r.json["subscription"]["id"] for r in results}) == 1


def test_list_get_and_paging(srv):
    c = srv.client()
    lab2 = srv.new_lab(c["id"], "L2")
    ids = []
    for i, ev in enumerate(["bill.created", "bill.completed", "bill.deleted"]):
        ids.append(sub(srv, c, events=[ev]).json["subscription"]["id"])
    ids.append(sub(srv, c, labID=lab2).json["subscription"]["id"])
    r = srv.get("/client/events/subscriptions", token=c["token"])
    assert [s["id"] for s in r.json["subscriptions"]] == ids and r.json.get("nextCursor") is None
    r = srv.get("/client/events/subscriptions?labID=" + lab2, token=c["token"])
    assert [s["id"] for s in r.json["subscriptions"]] == ids[3:]
    seen, cursor = [], ""
    while True:
        r = srv.get("/client/events/subscriptions?limit=2" +
                    ("&cursor=" + cursor if cursor else ""), token=c["token"])
        assert r.status == 200, r
        seen += [s["id"] for s in r.json["subscriptions"]]
        cursor = r.json.get("nextCursor")
        if not cursor:
            break
    assert seen == ids
    expect_error(srv.get("/client/events/subscriptions?limit=0", token=c["token"]), 400,
                 "invalid_value", "limit")
    expect_error(srv.get("/client/events/subscriptions?limit=501", token=c["token"]), 400)
    expect_error(srv.get("/client/events/subscriptions?cursor=zz'", token=c["token"]), 400)
    expect_error(srv.get("/client/events/subscriptions?status=zombie", token=c["token"]),
                 400, "invalid_value", "status")
    other = srv.client()
    expect_error(srv.get("/client/events/subscriptions?labID=" + other["lab"],
                         token=c["token"]), 404, "lab_not_found")
    g = srv.get("/client/events/subscriptions/" + ids[0], token=c["token"])
    assert g.status == 200 and g.json["subscription"]["id"] == ids[0], g
    assert "signingSecret" not in g.json
    # Another account's subscription is invisible: 404 on every verb.
    for m in ["GET", "PATCH", "DELETE"]:
        r = srv.request(m, "/client/events/subscriptions/" + ids[0], {"status": "paused"},
                        token=other["token"])
        expect_error(r, 404, "subscription_not_found")
    expect_error(srv.get("/client/events/subscriptions/%s/secret" % ids[0],
                         token=other["token"]), 404)
    expect_error(srv.post("/client/events/subscriptions/%s/secret/rotate" % ids[0],
                          token=other["token"]), 404)
    expect_error(srv.get("/client/events/subscriptions/sub_NOPE", token=c["token"]), 404)
    expect_error(srv.get("/client/events/subscriptions/..%2f..%2fadmin", token=c["token"]),
                 404)


def test_patch(srv):
    c = srv.client()
    s1 = sub(srv, c, events=["bill.created"]).json["subscription"]["id"]
    s2 = sub(srv, c, events=["bill.deleted"], endpoint="https://b.example.com/"
             ).json["subscription"]["id"]
    path = "/client/events/subscriptions/" + s1
    r = srv.request("PATCH", path, {"events": ["bill.created", "report.completed"],
                                    "endpoint": "https://new.example.com/h",
                                    "authToken": "tok123"}, token=c["token"])
    assert r.status == 200, r
    s = r.json["subscription"]
    assert sorted(s["events"]) == ["bill.created", "report.completed"]
    assert s["endpoint"] == "https://new.example.com/h" and s["hasAuthToken"] is True
    r = srv.request("PATCH", path, {"authToken": None}, token=c["token"])
    assert r.status == 200 and r.json["subscription"]["hasAuthToken"] is False, r
    # Taking an event another subscription holds: 409, nothing changed.
    r = srv.request("PATCH", path, {"events": ["bill.deleted"]}, token=c["token"])
    expect_error(r, 409, "subscription_conflict")
    assert r.json["error"]["conflicts"][0]["subscriptionID"] == s2
    g = srv.get(path, token=c["token"]).json["subscription"]
    assert sorted(g["events"]) == ["bill.created", "report.completed"]
    # Validation is the same as on registration.
    expect_error(srv.request("PATCH", path, {"endpoint": "http://x.com"}, token=c["token"]),
                 400, "invalid_endpoint")
    expect_error(srv.request("PATCH", path, {"endpoint": "https://10.0.0.1/"},
                             token=c["token"]), 400, "blocked_address")
    expect_error(srv.request("PATCH", path, {"events": []}, token=c["token"]), 400)
    expect_error(srv.request("PATCH", path, {"status": "disabled"}, token=c["token"]), 400,
                 "invalid_value", "status")
    expect_error(srv.request("PATCH", path, {"labID": c["lab"]}, token=c["token"]), 400,
                 "unknown_field", "labID")
    expect_error(srv.request("PATCH", path, {}, token=c["token"]), 400)
    # Pause and resume; a paused subscription still holds its events.
    r = srv.request("PATCH", path, {"status": "paused"}, token=c["token"])
    assert r.json["subscription"]["status"] == "paused", r
    expect_error(sub(srv, c, events=["bill.created"], endpoint="https://z.example.com/"),
                 409)
    lst = srv.get("/client/events/subscriptions?status=paused", token=c["token"])
    assert [x["id"] for x in lst.json["subscriptions"]] == [s1]
    r = srv.request("PATCH", path, {"status": "active"}, token=c["token"])
    assert r.json["subscription"]["status"] == "active", r


def test_delete_frees_events(srv):
    c = srv.client()
    s1 = sub(srv, c).json["subscription"]["id"]
    r = srv.request("DELETE", "/client/events/subscriptions/" + s1, token=c["token"])
    assert r.status == 200 and r.json["success"] is True, r
    expect_error(srv.get("/client/events/subscriptions/" + s1, token=c["token"]), 404)
    expect_error(srv.request("DELETE", "/client/events/subscriptions/" + s1,
                             token=c["token"]), 404)
    assert srv.get("/client/events/subscriptions", token=c["token"]).json[
        "subscriptions"] == []
    r = sub(srv, c, endpoint="https://again.example.com/")
    assert r.status == 200 and r.json["subscription"]["id"] != s1, r


def test_secret_read_and_rotate(srv):
    c = srv.client()
    r = sub(srv, c)
    sid, secret = r.json["subscription"]["id"], r.json["signingSecret"]
    g = srv.get("/client/events/subscriptions/%s/secret" % sid, token=c["token"])
    assert g.status == 200 and g.json["signingSecret"] == secret, g
    assert "previousSecretExpiresAt" not in g.json
    rot = srv.post("/client/events/subscriptions/%s/secret/rotate" % sid, token=c["token"])
    assert rot.status == 200, rot
    assert rot.json["signingSecret"] != secret and rot.json["signingSecret"].startswith("whsec_")
    assert rot.json["previousSecretExpiresAt"].endswith("Z")
    g = srv.get("/client/events/subscriptions/%s/secret" % sid, token=c["token"])
    assert g.json["signingSecret"] == rot.json["signingSecret"]
    assert g.json["previousSecretExpiresAt"] == rot.json["previousSecretExpiresAt"]


def test_client_routes_need_a_token(srv):
    for m, p in [("GET", "/client/labs"), ("POST", "/client/events/subscribe"),
                 ("GET", "/client/events/subscriptions"),
                 ("GET", "/client/events/subscriptions/sub_X"),
                 ("PATCH", "/client/events/subscriptions/sub_X"),
                 ("DELETE", "/client/events/subscriptions/sub_X"),
                 ("POST", "/client/events/subscriptions/sub_X/secret/rotate")]:
        expect_error(srv.request(m, p, {}), 401, "invalid_token")
    # The admin key is not a client token.
    expect_error(srv.get("/client/labs", token=srv.admin_key()), 401)


if __name__ == "__main__":
    run([test_labs_only_mine, test_subscribe_catch_all_success, test_every_event_type_accepted,
         test_field_validation, test_blocked_literal_addresses,
         test_lab_of_another_account_is_404, test_party_rules,
         test_conflicts_and_identical_repeat, test_party_scoped_conflicts_are_per_party,
         test_concurrent_registrations_one_winner, test_list_get_and_paging, test_patch,
         test_delete_frees_events, test_secret_read_and_rotate,
         test_client_routes_need_a_token])
