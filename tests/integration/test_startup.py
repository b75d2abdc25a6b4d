"""Start-up failures say what to do: each broken setup below makes `labhook serve` exit
non-zero with a message naming the cause (the system's words: `Permission denied`,
`Not a directory`, `Address already in use`, `Connection refused`), the path or address, and
the setting to change. Each case runs the real binary once; the file runs on both stores
(on PostgreSQL the cases that reach the store get a database of their own).

Permission cases need a user the files refuse: as root (CI, the chroot) the binary runs as
nobody through setpriv, since root reads everything; otherwise the modes do it.
"""
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile

from harness import BIN, PG, Server, new_db, pg_uri, run_each

NOBODY = 65534


def env_clean():
    return {k: v for k, v in os.environ.items() if not k.startswith("LABHOOK_")}


def serve(args, as_nobody=False, store=True, timeout=30):
    """Runs `labhook serve ARGS` to its exit (these setups never get to ready); returns
    (exit code, stderr). store: on PostgreSQL, point it at a fresh database."""
    cmd = [BIN, "serve", "--listen", "127.0.0.1:0"] + args
    if PG and store and "--store" not in args:
        cmd += ["--store", pg_uri(new_db("lh_startup"))]
    if as_nobody and os.geteuid() == 0:
        cmd = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups"] + cmd
    p = subprocess.run(cmd, env=env_clean(), capture_output=True, text=True, timeout=timeout)
    if p.returncode == 0 or p.returncode < 0:
        raise AssertionError("want a refusal, got exit %d:\n%s" % (p.returncode, p.stderr))
    return p.returncode, p.stderr


def last_line(err):
    lines = [l for l in err.splitlines() if l.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


def has_all(text, *parts):
    for part in parts:
        assert part in text, "%r not in:\n%s" % (part, text)


@contextlib.contextmanager
def scratch():
    """A directory for one case, removed after it."""
    d = tempfile.mkdtemp(prefix="labhook-startup-")
    os.chmod(d, 0o755)  # nobody must reach what is inside
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def unwritable_dir(parent):
    """A directory this test's labhook (nobody when root) may read but not write."""
    d = os.path.join(parent, "ro")
    os.mkdir(d, 0o555)
    return d


def test_data_dir_under_a_file():
    with scratch() as t:
        f = os.path.join(t, "a-file")
        open(f, "w").close()
        rc, err = serve(["--data-dir", f + "/var"])
        assert rc == 1, rc
        has_all(last_line(err), "Not a directory", f + "/var", "data-dir", "LABHOOK_DATA_DIR")


def test_data_dir_without_parent():
    with scratch() as t:
        d = os.path.join(t, "missing", "var")
        rc, err = serve(["--data-dir", d])
        has_all(last_line(err), "No such file or directory", d, "its parent must exist",
                "data-dir")


def test_data_dir_not_writable():
    with scratch() as t:
        d = unwritable_dir(t)
        rc, err = serve(["--data-dir", d], as_nobody=True)
        has_all(last_line(err), "Permission denied", d, "data-dir", "uid")
        assert "internal_error" not in err, err


def test_sqlite_file_of_another_user():
    """A data directory this user may write, holding a labhook.db it may not open (a store
    made by root, then the service run as its own user): SQLite's `unable to open database
    file` alone said nothing of why."""
    if PG:
        return  # no labhook.db on PostgreSQL
    with scratch() as t:
        d = os.path.join(t, "var")
        srv = Server("--store", "sqlite", data_dir=d).start()
        assert srv.stop() == 0
        os.chmod(d, 0o777)
        os.unlink(os.path.join(d, "labhook.lock"))  # (the lock file is refused first)
        if os.geteuid() != 0:
            os.chmod(os.path.join(d, "labhook.db"), 0)
        rc, err = serve(["--data-dir", d, "--store", "sqlite"], as_nobody=True)
        has_all(last_line(err), "Permission denied", os.path.join(d, "labhook.db"), "data-dir")


def busy_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s


def test_port_in_use():
    s = busy_port()
    try:
        with scratch() as t:
            addr = "127.0.0.1:%d" % s.getsockname()[1]
            rc, err = serve(["--data-dir", os.path.join(t, "var"), "--listen", addr])
            line = last_line(err)
            has_all(line, "Address already in use", addr, "--listen", "LABHOOK_LISTEN")
            assert "not local?" not in err, err
            # The metrics listener names its own setting.
            rc, err = serve(["--data-dir", os.path.join(t, "var2"), "--metrics-listen", addr])
            has_all(last_line(err), "Address already in use", addr, "--metrics-listen",
                    "LABHOOK_METRICS_LISTEN")
    finally:
        s.close()


def test_listen_on_an_address_not_here():
    with scratch() as t:
        rc, err = serve(["--data-dir", os.path.join(t, "var"), "--listen", "192.0.2.1:8080"])
        has_all(last_line(err), "Cannot assign requested address", "192.0.2.1:8080", "listen")


def test_errors_as_json_lines():
    """With log-format json everything serve writes to stderr is JSON, the refusal too."""
    s = busy_port()
    try:
        with scratch() as t:
            addr = "127.0.0.1:%d" % s.getsockname()[1]
            rc, err = serve(["--data-dir", os.path.join(t, "var"), "--listen", addr,
                             "--log-format", "json"])
            objs = [json.loads(l) for l in err.splitlines() if l.strip()]
            last = objs[-1]
            assert last["level"] == "error", last
            has_all(last["msg"], "Address already in use", addr, "listen")
    finally:
        s.close()


def test_store_not_a_database_uri():
    rc, err = serve(["--data-dir", "/nonexistent", "--store", "mysql://db/labhook"])
    assert rc == 2, rc
    has_all(last_line(err), "bad setting store", "'mysql://db/labhook'", "postgresql://")


def test_postgresql_unreachable():
    s = busy_port()  # a port of ours, closed again: nothing listens there
    port = s.getsockname()[1]
    s.close()
    with scratch() as t:
        uri = "postgresql://lab:hunter2@127.0.0.1:%d/labhook" % port
        rc, err = serve(["--data-dir", os.path.join(t, "var"), "--store", uri])
        has_all(err, "Connection refused", "port %d" % port)
        has_all(last_line(err), "lab:***@127.0.0.1:%d" % port, "--store", "LABHOOK_STORE")
        assert "hunter2" not in err, err


def test_missing_ca_file():
    with scratch() as t:
        ca = os.path.join(t, "no-such-ca.pem")
        rc, err = serve(["--data-dir", os.path.join(t, "var"), "--ca-file", ca])
        assert rc == 2, rc
        has_all(last_line(err), "bad setting ca-file", ca, "No such file or directory")
        assert not os.path.exists(os.path.join(t, "var")), "refused before touching anything"


def test_config_file_missing_or_unreadable():
    with scratch() as t:
        path = os.path.join(t, "labhook.conf")
        rc, err = serve(["--config", path])
        has_all(last_line(err), "bad setting config", path, "No such file or directory")
        with open(path, "w") as f:
            f.write("listen = 127.0.0.1:0\n")
        os.chmod(path, 0o600 if os.geteuid() == 0 else 0)
        rc, err = serve(["--config", path], as_nobody=True)
        assert rc == 2, rc
        has_all(last_line(err), "bad setting config", path, "Permission denied")


def test_config_file_values_quoted_and_comments_after_values():
    """`key = value  # why` is a value and a comment (docs/operations.md, "Settings");
    a bad value is quoted in the refusal, with the file and line."""
    with scratch() as t:
        path = os.path.join(t, "labhook.conf")
        with open(path, "w") as f:
            f.write("# a comment line\n"
                    "auth-max-failures = 5   # stricter\n"
                    "max-body = 12x # a typo\n")
        rc, err = serve(["--config", path])
        assert rc == 2, rc
        has_all(last_line(err), "bad setting max-body = '12x'", "%s:3" % path)
        with open(path, "w") as f:
            f.write("max-body = 2MiB\t# bigger reports\n"
                    "auth-max-failures=5 #no space after the mark\n"
                    "public-url = https://lab.example.com/a#b\n")
        srv = Server("--config", path, data_dir=os.path.join(t, "var")).start()
        try:
            assert srv.get("/healthz").status == 200
        finally:
            assert srv.stop() == 0
            srv.cleanup()
        eff = [l for l in srv.log_lines if "effective configuration" in l]
        has_all(eff[0], " max_body=2097152 ", " auth_max_failures=5 ",
                " public_url=https://lab.example.com/a#b ")


if __name__ == "__main__":
    raise SystemExit(run_each([
        test_data_dir_under_a_file,
        test_data_dir_without_parent,
        test_data_dir_not_writable,
        test_sqlite_file_of_another_user,
        test_port_in_use,
        test_listen_on_an_address_not_here,
        test_errors_as_json_lines,
        test_store_not_a_database_uri,
        test_postgresql_unreachable,
        test_missing_ca_file,
        test_config_file_missing_or_unreadable,
        test_config_file_values_quoted_and_comments_after_values,
    ]))
