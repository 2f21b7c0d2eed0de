#!/usr/bin/env bash
# Builds the Debian package of mx2 and prints its path.
#
#   packaging/build-deb.sh            # -> target/debian/mx2_<version>-1_<arch>.deb
#
# Release build, man pages generated from the real CLI (`mx2 man`), then
# cargo-deb with the [package.metadata.deb] section of Cargo.toml.
# Honours CARGO_TARGET_DIR. Needs dpkg-dev (dpkg-shlibdeps) for Depends.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: installing cargo-deb" >&2
    cargo install cargo-deb --locked --version '^3' >&2
fi
if ! command -v dpkg-shlibdeps >/dev/null 2>&1; then
    echo "build-deb: installing dpkg-dev (dpkg-shlibdeps)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpkg-dev >/dev/null
fi

cargo build --release --locked -p mx2 --bin mx2 >&2

# Man page dates from the last commit, for reproducible packages.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
man="$target/release/man"
rm -rf "$man"
"$target/release/mx2" man "$man" >/dev/null
# Debian policy: man pages gzipped (-n: no name or time, reproducible).
gzip -9n "$man"/*.8

# --strip: the release profile keeps line tables (debug = 1) for local
# backtraces; the package ships a stripped binary.
deb=$(cargo deb --no-build --locked --strip -p mx2 -o "$target/debian/" | tail -n 1)
test -f "$deb"
echo "$deb"
