#!/usr/bin/env bash
# The Debian package end to end, on this machine (needs root; CI has it): make deb, lintian
# without errors, dpkg -i, the user and /var/lib/labhook exist, systemd-analyze verify on the
# installed unit, the binary started as the labhook user against the packaged config
# answers (on a free port: --listen overrides the file) and `labhook admin` works with that
# config, then dpkg -r keeps the data and dpkg -P deletes it. The machine is left as it was
# found, on failure too: the package purged, and the user removed when this test made it.
# Usage: test_deb.sh OUTDIR   (exit 77, which ctest counts as skipped, when it cannot run)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?usage: test_deb.sh OUTDIR}

skip() {
  echo "SKIP: $*"
  exit 77
}
[ "$(id -u)" -eq 0 ] || skip "needs root (dpkg -i)"
for t in dpkg-buildpackage lintian runuser setpriv curl systemd-analyze; do
  command -v "$t" >/dev/null || skip "$t is not installed (scripts/deps.sh --test)"
done
if dpkg-query -W -f='${Status}' labhook 2>/dev/null | grep -q 'installed\|config-files'; then
  skip "a labhook package is installed here already; not touching it"
fi
[ ! -e /var/lib/labhook ] || skip "/var/lib/labhook exists without the package; not touching it"
[ ! -e /etc/labhook ] || skip "/etc/labhook exists without the package; not touching it"
user_was_there=0
getent passwd labhook >/dev/null && user_was_there=1

pid=
work=$(mktemp -d)
cleanup() {
  set +e
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  dpkg -P labhook >/dev/null 2>&1
  if [ "$user_was_there" = 0 ] && getent passwd labhook >/dev/null; then
    deluser --quiet --system labhook >/dev/null 2>&1
    getent group labhook >/dev/null && delgroup --quiet --system labhook >/dev/null 2>&1
  fi
  rm -rf "$work" /var/lib/labhook /etc/labhook
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  [ -f "$work/log" ] && { echo "---- labhook's log ----"; tail -30 "$work/log"; }
  exit 1
}

echo "== make deb"
start=$(date +%s)
bash "$root/packaging/build-deb.sh" "$out"
echo "(the build took $(( $(date +%s) - start ))s)"
version=$(sed -n 's/^#define LABHOOK_VERSION "\([^"]*\)"$/\1/p' "$root/src/version.h")
deb="$out/labhook_${version}_$(dpkg-architecture -qDEB_HOST_ARCH).deb"
[ -f "$deb" ] || fail "no $deb"

echo "== lintian"
# Errors fail; warnings are shown (the justified ones are overridden in the package).
lintian --fail-on error --info "$deb" 2>&1 | grep -v 'running with root privileges' || true
lintian --fail-on error "$deb" >/dev/null 2>&1 || fail "lintian reports errors"

echo "== dpkg -i"
dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i"; }
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd labhook) || fail "no labhook user"
[ "$home" = /var/lib/labhook ] || fail "the user's home is $home"
[ "$uid" -lt 1000 ] || fail "labhook is not a system user (uid $uid)"
case "$shell" in */nologin | */false) ;; *) fail "the user has a login shell: $shell" ;; esac
getent group labhook >/dev/null || fail "no labhook group"
[ "$(stat -c '%U:%G %a' /var/lib/labhook)" = "labhook:labhook 700" ] ||
  fail "/var/lib/labhook is $(stat -c '%U:%G %a' /var/lib/labhook)"
dpkg-query -W -f='${Conffiles}\n' labhook | grep -q '^ /etc/labhook/labhook.conf ' ||
  fail "/etc/labhook/labhook.conf is not a conffile"
for f in /usr/bin/labhook /lib/systemd/system/labhook.service \
  /usr/share/man/man8/labhook.8.gz /usr/share/doc/labhook/operations.md.gz; do
  [ -f "$f" ] || fail "$f is not installed"
done
man -w 8 labhook >/dev/null || fail "man does not find labhook(8)"

echo "== systemd-analyze verify (the installed unit, binary and man page)"
v=$(systemd-analyze verify /lib/systemd/system/labhook.service 2>&1) || fail "verify: $v"
[ -z "$v" ] || fail "verify warns: $v"

if [ -d /run/systemd/system ]; then
  # systemd runs here: the package started the unit on the configured port. It must be
  # up; stop it so that the run below has the data directory to itself.
  systemctl is-active --quiet labhook || fail "the packaged service did not start"
  systemctl stop labhook
fi

echo "== labhook serve as the labhook user with the packaged config"
# setpriv execs labhook itself (runuser would stay as its parent and take the signal).
setpriv --reuid=labhook --regid=labhook --init-groups /usr/bin/labhook serve \
  --config /etc/labhook/labhook.conf --listen 127.0.0.1:0 >"$work/out" 2>"$work/log" &
pid=$!
port=
for _ in $(seq 1 100); do
  port=$(sed -n 's/.* listen=127\.0\.0\.1:\([0-9]*\) .* ready$/\1/p' "$work/log")
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || fail "labhook exited at start"
  sleep 0.1
done
[ -n "$port" ] || fail "labhook did not become ready"
grep -q ' config=/etc/labhook/labhook.conf data_dir=/var/lib/labhook ' "$work/log" ||
  fail "the packaged config was not the one read"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz")
[ "$code" = 200 ] || fail "/healthz answered $code"
runuser -u labhook -- /usr/bin/labhook admin --config /etc/labhook/labhook.conf \
  --url "http://127.0.0.1:$port" accounts create --name "Package Test" >"$work/acct" ||
  fail "labhook admin with the packaged config"
grep -q '"clientID"' "$work/acct" || fail "no account: $(cat "$work/acct")"
for f in labhook.db admin.key; do
  [ "$(stat -c '%U %a' "/var/lib/labhook/$f")" = "labhook 600" ] ||
    fail "/var/lib/labhook/$f is $(stat -c '%U %a' "/var/lib/labhook/$f")"
done
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
[ "$rc" = 0 ] || fail "labhook exited with $rc on SIGTERM"
grep -q 'stopped cleanly' "$work/log" || fail "no clean stop"

echo "== dpkg -r: the data and the configuration stay"
dpkg -r labhook >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -r"; }
[ ! -e /usr/bin/labhook ] || fail "/usr/bin/labhook is still there after dpkg -r"
[ -f /var/lib/labhook/labhook.db ] || fail "dpkg -r deleted the store"
[ -f /etc/labhook/labhook.conf ] || fail "dpkg -r deleted the conffile"
getent passwd labhook >/dev/null || fail "dpkg -r deleted the user"

echo "== dpkg -P: the data goes (the user stays, as for any system user)"
dpkg -P labhook >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -P"; }
[ ! -e /var/lib/labhook ] || fail "dpkg -P left /var/lib/labhook"
[ ! -e /etc/labhook/labhook.conf ] || fail "dpkg -P left the conffile"
[ ! -e /etc/systemd/system/multi-user.target.wants/labhook.service ] ||
  fail "dpkg -P left the unit enabled"
getent passwd labhook >/dev/null || fail "dpkg -P deleted the user (it should stay)"
echo "PASS: package built, lintian clean of errors, installed, served, removed, purged"
