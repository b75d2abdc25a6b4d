#!/usr/bin/env python3
"""Runs a command beside a throwaway PostgreSQL 15 server, then stops the server.

    with_pg.py COMMAND [ARGS...]

The server lives in a new temporary directory (initdb, then pg_ctl start), listens only on
a Unix socket in that directory (no TCP port to collide with), trusts local connections,
and has a database `labhook`. Run as root, it runs as the `postgres` user (PostgreSQL
refuses root). The command gets:

  LABHOOK_TEST_PG      a libpq URI of the `labhook` database
  LABHOOK_TEST_PG_DIR  the server's directory (data/, the socket, server.log)
  LABHOOK_TEST_PG_BIN  the directory of pg_ctl, psql, ... (for tests that restart it)
  LABHOOK_TEST_PG_PORT the port that names the socket

The exit status is the command's. The server is stopped (and its directory removed) even
when the command fails or is interrupted; its log is printed when the command failed.
"""
import os
import random
import shutil
import subprocess
import sys
import tempfile


def bindir():
    for cand in ("/usr/lib/postgresql/15/bin",):
        if os.path.exists(os.path.join(cand, "pg_ctl")):
            return cand
    try:
        return subprocess.check_output(["pg_config", "--bindir"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        sys.exit("with_pg: PostgreSQL 15 not found (apt-get install postgresql-15)")


def as_owner(cmd):
    """The command as the server's owner: postgres when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


def start(bin_dir):
    top = tempfile.mkdtemp(prefix="lhpg-", dir="/tmp")
    os.chmod(top, 0o755)
    if os.geteuid() == 0:
        shutil.chown(top, "postgres", "postgres")
    port = random.randint(20000, 60000)
    data = os.path.join(top, "data")
    subprocess.run(as_owner([os.path.join(bin_dir, "initdb"), "-D", data, "-U", "labhook",
                             "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync",
                             "--no-instructions"]),
                   check=True, stdout=subprocess.DEVNULL)
    opts = ("-c listen_addresses='' -k %s -p %d -c max_connections=200 "
            "-c shared_buffers=128MB" % (top, port))
    subprocess.run(as_owner([os.path.join(bin_dir, "pg_ctl"), "-D", data, "-l",
                             os.path.join(top, "server.log"), "-w", "-o", opts, "start"]),
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([os.path.join(bin_dir, "psql"), "-h", top, "-p", str(port), "-U",
                    "labhook", "-d", "postgres", "-q", "-c", "CREATE DATABASE labhook"],
                   check=True)
    return top, port


def stop(bin_dir, top):
    subprocess.run(as_owner([os.path.join(bin_dir, "pg_ctl"), "-D", os.path.join(top, "data"),
                             "-m", "immediate", "-w", "stop"]),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(top, ignore_errors=True)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    bin_dir = bindir()
    top, port = start(bin_dir)
    env = dict(os.environ)
    env["LABHOOK_TEST_PG"] = "postgresql://labhook@/labhook?host=%s&port=%d" % (top, port)
    env["LABHOOK_TEST_PG_DIR"] = top
    env["LABHOOK_TEST_PG_BIN"] = bin_dir
    env["LABHOOK_TEST_PG_PORT"] = str(port)
    rc = 1
    try:
        rc = subprocess.call(sys.argv[1:], env=env)
    except KeyboardInterrupt:
        rc = 130
    finally:
        if rc != 0:
            try:
                with open(os.path.join(top, "server.log")) as f:
                    tail = f.read()[-4000:]
                print("---- PostgreSQL server.log (end) ----\n" + tail, file=sys.stderr)
            except OSError:
                pass
        stop(bin_dir, top)
    sys.exit(rc)


if __name__ == "__main__":
    main()
