#!/bin/sh
# Fetches the redis 7.0.15 source (Debian's source package) into a cache directory, once,
# and prints the path of its upstream tarball. Used by `ssi bench rexec` and the make
# workload. Needs root the first time (it adds a deb-src entry and runs apt-get).
#   scripts/fetch-redis.sh [CACHE_DIR]      (default: $SSI_CACHE or /var/cache/ssi)
set -eu
cache="${1:-${SSI_CACHE:-/var/cache/ssi}}/redis"
tarball="$cache/redis_7.0.15.orig.tar.gz"
if [ -f "$tarball" ]; then
    echo "$tarball"
    exit 0
fi
mkdir -p "$cache"
if ! grep -rqs '^Types: deb-src\|^deb-src ' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    cat > /etc/apt/sources.list.d/ssi-deb-src.sources <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq >&2
fi
(cd "$cache" && apt-get source --download-only -qq redis >&2)
if [ ! -f "$tarball" ]; then
    echo "fetch-redis: apt-get source redis did not bring redis 7.0.15 (got: $(ls "$cache"))" >&2
    exit 1
fi
echo "$tarball"
