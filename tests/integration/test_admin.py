"""The admin API and `labhook admin ...` (API.md 1)."""
import json
import os
import subprocess

from harness import BIN, Server, expect_error, run


def test_admin_key_required(srv):
    for hdr in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"},
                {"Authorization": "Bearer " + srv.admin_key() + "x"}]:
        r = srv.request("GET", "/admin/accounts", headers=hdr)
        expect_error(r, 401, "unauthorized")
        assert r.headers.get("www-authenticate") == "Bearer"
    # A client's access token is not the admin key.
    c = srv.client()
    expect_error(srv.get("/admin/accounts", token=c["token"]), 401)


def test_create_accounts_both_modes(srv):
    r = srv.admin("POST", "/admin/accounts", {"name": "Clinic"})
    assert r.status == 200 and r.json["mode"] == "catch-all", r
    assert r.json["clientID"].startswith("cl_") and r.json["clientSecret"].startswith("cs_")
    r2 = srv.admin("POST", "/admin/accounts", {"name": "Corp", "mode": "party-scoped"})
    assert r2.json["mode"] == "party-scoped", r2
    g = srv.admin("GET", "/admin/accounts/" + r.json["clientID"])
    assert g.status == 200, g
    acct = g.json["account"]
    assert acct["name"] == "Clinic" and acct["labs"] == [] and acct["parties"] == []
    assert "clientSecret" not in g.raw and "secret" not in g.raw.lower()
    expect_error(srv.admin("POST", "/admin/accounts", {"name": "X", "mode": "all"}), 400,
                 "invalid_value", "mode")
    expect_error(srv.admin("POST", "/admin/accounts", {}), 400, "missing_field", "name")
    expect_error(srv.admin("POST", "/admin/accounts", {"name": ""}), 400, "invalid_value")
    expect_error(srv.admin("POST", "/admin/accounts", {"name": "x" * 201}), 400, "too_long")
    expect_error(srv.admin("POST", "/admin/accounts", {"name": 3}), 400, "invalid_type")
    expect_error(srv.admin("GET", "/admin/accounts/cl_NOPE"), 404, "account_not_found")


def test_list_accounts_paging(srv):
    made = [srv.new_account(name="P%d" % i)[0] for i in range(5)]
    seen, cursor = [], None
    while True:
        r = srv.admin("GET", "/admin/accounts?limit=2" + ("&cursor=" + cursor if cursor else ""))
        assert r.status == 200, r
        seen += [a["clientID"] for a in r.json["accounts"]]
        assert all("clientSecret" not in a for a in r.json["accounts"])
        cursor = r.json.get("nextCursor")
        if not cursor:
            break
    assert all(m in seen for m in made) and seen == sorted(seen)
    expect_error(srv.admin("GET", "/admin/accounts?limit=abc"), 400, "invalid_value", "limit")


def test_labs_and_parties(srv):
    cid, _ = srv.new_account(mode="party-scoped")
    lab = srv.new_lab(cid, "North")
    cu = srv.new_party(cid, "corporateUser", "Acme")
    org = srv.new_party(cid, "organization", "City Hospital")
    assert lab.startswith("lab_") and cu.startswith("cu_") and org.startswith("org_")
    labs = srv.admin("GET", "/admin/accounts/%s/labs" % cid).json["labs"]
    assert labs == [{"labID": lab, "name": "North"}]
    parties = srv.admin("GET", "/admin/accounts/%s/parties" % cid).json["parties"]
    assert {p["partyID"]: p["kind"] for p in parties} == {cu: "corporateUser",
                                                           org: "organization"}
    expect_error(srv.admin("POST", "/admin/accounts/%s/parties" % cid,
                           {"kind": "doctor", "name": "x"}), 400, "invalid_value", "kind")
    expect_error(srv.admin("POST", "/admin/accounts/cl_NOPE/labs", {"name": "x"}), 404)
    expect_error(srv.admin("POST", "/admin/accounts/%s/labs" % cid, {"nom": "x"}), 400,
                 "unknown_field")


def test_patch_mode(srv):
    c = srv.client()
    r = srv.admin("PATCH", "/admin/accounts/" + c["id"], {"mode": "party-scoped"})
    assert r.status == 200 and r.json["account"]["mode"] == "party-scoped", r
    r = srv.admin("PATCH", "/admin/accounts/" + c["id"], {"mode": "catch-all"})
    assert r.json["account"]["mode"] == "catch-all", r
    # With webhooks registered under the current mode, switching is refused.
    s = srv.post("/client/events/subscribe", {"labID": c["lab"], "events": ["bill.created"],
                                              "endpoint": "https://x.example.com/",
                                              "protocol": "https"}, token=c["token"])
    assert s.status == 200, s
    expect_error(srv.admin("PATCH", "/admin/accounts/" + c["id"], {"mode": "party-scoped"}),
                 409, "account_has_subscriptions")
    expect_error(srv.admin("PATCH", "/admin/accounts/" + c["id"], {"mode": "x"}), 400)
    expect_error(srv.admin("PATCH", "/admin/accounts/" + c["id"], {}), 400, "missing_field")


def test_rotate_secret(srv):
    cid, old = srv.new_account()
    r = srv.admin("POST", "/admin/accounts/%s/secret/rotate" % cid)
    assert r.status == 200 and r.json["clientSecret"] != old, r
    expect_error(srv.post("/client/auth/token", {"clientID": cid, "clientSecret": old}), 401)
    assert srv.token(cid, r.json["clientSecret"])
    expect_error(srv.admin("POST", "/admin/accounts/cl_NOPE/secret/rotate"), 404)


def cli(srv, *args):
    return subprocess.run([BIN, "admin", "--data-dir", srv.data_dir, "--url",
                           "http://127.0.0.1:%d" % srv.port] + list(args),
                          capture_output=True, text=True, timeout=30)


def test_admin_cli(srv):
    p = cli(srv, "accounts", "create", "--name", "CLI Corp", "--mode", "party-scoped")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    cid = out["clientID"]
    assert out["mode"] == "party-scoped" and out["clientSecret"]
    p = cli(srv, "labs", "create", cid, "--name", "CLI Lab")
    assert p.returncode == 0, p.stderr
    lab = json.loads(p.stdout)["labID"]
    p = cli(srv, "parties", "create", cid, "--kind", "organization", "--name", "Dr. Rao")
    assert p.returncode == 0, p.stderr
    p = cli(srv, "accounts", "get", cid)
    acct = json.loads(p.stdout)["account"]
    assert acct["labs"][0]["labID"] == lab and acct["parties"][0]["kind"] == "organization"
    p = cli(srv, "accounts", "set-mode", cid, "catch-all")
    assert p.returncode == 0 and json.loads(p.stdout)["account"]["mode"] == "catch-all"
    p = cli(srv, "accounts", "rotate-secret", cid)
    assert p.returncode == 0 and srv.token(cid, json.loads(p.stdout)["clientSecret"])
    p = cli(srv, "accounts", "list")
    assert p.returncode == 0 and cid in p.stdout
    p = cli(srv, "parties", "list", cid)
    assert p.returncode == 0 and "Dr. Rao" in p.stdout
    # Errors: API errors exit 1 with the error on stderr; usage errors exit 2.
    p = cli(srv, "accounts", "get", "cl_NOPE")
    assert p.returncode == 1 and "account_not_found" in p.stderr, (p.returncode, p.stderr)
    p = cli(srv, "accounts", "explode")
    assert p.returncode == 2 and "Usage" in p.stderr
    p = cli(srv, "--help")
    assert p.returncode == 0 and "parties create" in p.stdout
    p = subprocess.run([BIN, "admin", "--data-dir", "/nonexistent", "accounts", "list"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "admin.key" in p.stderr


def test_admin_key_replaced_through_admin_key_new(_srv):
    """The admin key lives in the store; admin.key is each node's copy, and overwriting it
    changes nothing. admin.key.new replaces the key in the store at the next start."""
    srv = Server().start()
    try:
        old = srv.admin_key()
        srv.stop()
        with open(os.path.join(srv.data_dir, "admin.key"), "w") as f:
            f.write("lhk_an_overwritten_copy_of_no_weight\n")
        srv.start()
        assert srv.admin_key() == old, "the store's key is written back over a stale copy"
        assert srv.get("/admin/accounts", token=old).status == 200
        srv.stop()
        new = "lhk_the_replacement_key_0123456789"
        with open(os.path.join(srv.data_dir, "admin.key.new"), "w") as f:
            f.write(new + "\n")
        srv.start()
        assert not os.path.exists(os.path.join(srv.data_dir, "admin.key.new"))
        assert srv.admin_key() == new
        assert srv.get("/admin/accounts", token=new).status == 200
        expect_error(srv.get("/admin/accounts", token=old), 401, "unauthorized")
        srv.stop()
        with open(os.path.join(srv.data_dir, "admin.key.new"), "w") as f:
            f.write("short\n")
        try:
            srv.start(timeout=5)
            raise AssertionError("a new admin key under 16 characters was taken")
        except RuntimeError:
            pass
        assert any("at least 16 characters" in line for line in srv.log_lines)
    finally:
        srv.cleanup()


if __name__ == "__main__":
    run([test_admin_key_required, test_create_accounts_both_modes, test_list_accounts_paging,
         test_labs_and_parties, test_patch_mode, test_rotate_secret, test_admin_cli,
         test_admin_key_replaced_through_admin_key_new])
