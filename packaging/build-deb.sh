#!/usr/bin/env bash
# Builds labhook_<version>_<arch>.deb with debhelper into OUT (default build-deb/), from a
# copy of the sources the package needs, so the build writes nothing into the source tree.
# The version is src/version.h's; debian/changelog is made from it (never kept in git, so
# it cannot drift). Usage: packaging/build-deb.sh [OUT]   (make deb)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-build-deb}")
version=$(sed -n 's/^#define LABHOOK_VERSION "\([^"]*\)"$/\1/p' src/version.h)
if [ -z "$version" ]; then
  echo "build-deb: no LABHOOK_VERSION in src/version.h" >&2
  exit 1
fi
src="$out/labhook-$version"
rm -rf "$src"
mkdir -p "$src"
cp -a CMakeLists.txt README.md cmake console src docs packaging "$src/"
cp -a packaging/debian "$src/debian"
cp packaging/labhook.service "$src/debian/labhook.service"
# The changelog's date: the last commit's, so the same commit gives the same package.
when=$(git log -1 --format=%ct 2>/dev/null || date +%s)
cat > "$src/debian/changelog" <<CHANGES
labhook ($version) unstable; urgency=medium

  * Release $version (src/version.h).

 -- labhook maintainers <labhook@example.org>  $(LC_ALL=C date -u -R -d "@$when")
CHANGES
export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-parallel=2}"
start=$(date +%s)
(cd "$src" && dpkg-buildpackage -b -us -uc --no-sign >"$out/build.log" 2>&1) || {
  tail -40 "$out/build.log" >&2
  echo "build-deb: dpkg-buildpackage failed (whole log: $out/build.log)" >&2
  exit 1
}
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
echo "built $out/labhook_${version}_${arch}.deb in $(( $(date +%s) - start ))s"
