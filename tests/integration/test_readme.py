"""README.md's "First five minutes", executed as written, so the README cannot drift from
the product: the ```sh blocks of that section, in order, in one bash (a person's terminal,
so variables carry from one block to the next; `set -eo pipefail`, so the first command
that fails fails the test), against a real `labhook serve --demo` on a fresh data
directory `./var` of the working directory, as run-demo.sh leaves it.

Only what differs on a test machine is substituted: the port (the service runs on a free
one: `127.0.0.1:8080` in the text, LABHOOK_LISTEN for the `labhook` commands, which read
it like `serve`), and `labhook` on the PATH is the binary under test (run-demo.sh installs
it as /usr/local/bin/labhook). Every JSON answer the commands print must say success.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from harness import BIN, Server, run_each

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")


def section_blocks(title="## First five minutes"):
    with open(README) as f:
        text = f.read()
    start = text.index(title + "\n")
    end = text.find("\n## ", start + len(title))
    body = text[start:end if end >= 0 else len(text)]
    blocks = re.findall(r"^```sh\n(.*?)^```$", body, re.S | re.M)
    assert blocks, "no ```sh blocks in README's %r" % title
    return blocks


def json_docs(out):
    """The JSON documents printed one after the other (pretty or on one line)."""
    dec, i, docs = json.JSONDecoder(), 0, []
    while True:
        while i < len(out) and out[i].isspace():
            i += 1
        if i >= len(out):
            return docs
        doc, i = dec.raw_decode(out, i)
        docs.append(doc)


class Shell:
    """Runs README text with bash as a person would, in a directory of their own."""

    def __init__(self, srv):
        self.srv = srv
        self.cwd = os.path.dirname(srv.data_dir)
        self.bin = tempfile.mkdtemp(prefix="labhook-path-")
        os.symlink(os.path.abspath(BIN), os.path.join(self.bin, "labhook"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LABHOOK_")}
        self.env["PATH"] = self.bin + os.pathsep + self.env.get("PATH", "/usr/bin:/bin")
        self.env["LABHOOK_LISTEN"] = "127.0.0.1:%d" % srv.port

    def run(self, script, prelude=""):
        script = script.replace("127.0.0.1:8080", "127.0.0.1:%d" % self.srv.port)
        return subprocess.run(["bash", "-c", "set -eo pipefail\n" + prelude + script],
                              cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=60)

    def cleanup(self):
        shutil.rmtree(self.bin, ignore_errors=True)


def with_demo(fn):
    """fn(shell) beside `serve --demo` whose data directory is ./var of shell's cwd."""
    home = tempfile.mkdtemp(prefix="labhook-readme-")
    srv = Server("--demo", data_dir=os.path.join(home, "var")).start()
    sh = Shell(srv)
    try:
        fn(sh)
    finally:
        sh.cleanup()
        assert srv.stop() == 0
        srv.cleanup()
        shutil.rmtree(home, ignore_errors=True)


def test_first_five_minutes_as_written():
    def go(sh):
        blocks = section_blocks()
        # The variables each block leaves, printed at the end for the checks below.
        p = sh.run("\n".join(blocks) + '\necho "@@ $CLIENT_ID $LAB"\n')
        assert p.returncode == 0, "a README command failed (exit %d):\n%s\n%s" % (
            p.returncode, p.stdout, p.stderr)
        out, _, tail = p.stdout.rpartition("@@ ")
        client_id, lab = tail.split()
        docs = json_docs(out)
        bad = [d for d in docs if d.get("success") is not True]
        assert not bad, "answers that are not a success: %r" % bad
        labs = [d for d in docs if "labs" in d]
        assert [l["labID"] for l in labs[0]["labs"]] == [lab], labs
        subs = [d for d in docs if "subscription" in d]
        assert len(subs) == 1 and subs[0]["signingSecret"].startswith("whsec_"), subs
        assert subs[0]["subscription"]["labID"] == lab, subs
        assert any(t.get("_id") == "101" for d in docs for t in d.get("data", [])), docs
        # Following it a second time on the same service works too (a new account).
        p = sh.run("\n".join(blocks))
        assert p.returncode == 0, (p.stdout, p.stderr)

    with_demo(go)


def test_failed_login_stops_with_the_reason():
    """The README's token command, given a wrong secret: it fails there, saying why,
    rather than leaving an empty TOKEN for an `invalid_token` later."""
    def go(sh):
        token_block = next(b for b in section_blocks() if "TOKEN=" in b)
        first = section_blocks()[0]
        p = sh.run(token_block, prelude=first + '\nCLIENT_SECRET=cs_wrong\n')
        assert p.returncode != 0, (p.stdout, p.stderr)
        assert "login failed" in p.stderr, p.stderr
        assert "/client/labs" not in p.stdout and '"labs"' not in p.stdout, p.stdout

    with_demo(go)


def test_demo_banner_token_command():
    """The token command `serve --demo` prints works as printed, and fails saying why
    when the secret is wrong (it used sed, which turned that into an empty TOKEN)."""
    def go(sh):
        for _ in range(50):
            out = sh.srv.stdout
            if "List labs:" in out:
                break
            time.sleep(0.1)
        cmd = out.split("Get a token:\n", 1)[1].split("List labs:", 1)[0]
        p = sh.run(cmd + 'test -n "$TOKEN"\ncurl -sSf http://127.0.0.1:8080/client/labs'
                   ' -H "Authorization: Bearer $TOKEN"\n')
        assert p.returncode == 0 and '"labs"' in p.stdout, (cmd, p.stdout, p.stderr)
        bad = re.sub(r'"clientSecret":"[^"]*"', '"clientSecret":"cs_wrong"', cmd)
        p = sh.run(bad)
        assert p.returncode != 0 and "login failed" in p.stderr, (p.stdout, p.stderr)

    with_demo(go)


if __name__ == "__main__":
    raise SystemExit(run_each([test_first_five_minutes_as_written,
                               test_failed_login_stops_with_the_reason,
                               test_demo_banner_token_command]))
