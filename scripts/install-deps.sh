#!/usr/bin/env bash
# The Debian packages ssi needs to build and test, installed when missing (as root).
# Build: clang-14 compiles the eBPF recorder's C program; libelf-dev, zlib1g-dev and
# pkg-config build libbpf (through libbpf-rs). protobuf-compiler is optional (a vendored
# protoc is the fallback). Tests: fuse3 (fusermount3), sqlite3, attr (xattrs), bpftrace (the
# USDT probe tests), make and gcc (a C tree built with SHELL='ssi sh'), libseccomp-dev (bind
# interposition), redis-server (the Redis Cluster baseline of `ssi workload sdds`), nginx-light
# and wrk (the web benchmark and workload), nftables (the dispatcher's DNAT fallback), sshfs,
# openssh-server and openssh-client (the baselines of `ssi bench fs` and `ssi bench rexec`),
# e2fsprogs (the fresh ext4 `ssi bench fs` runs on), glusterfs-server and glusterfs-client
# (its cluster file system peer), postgresql (`ssi workload db --pgbench`).
set -euo pipefail
pkgs=(clang-14 libelf-dev zlib1g-dev pkg-config protobuf-compiler ca-certificates
      fuse3 sqlite3 attr bpftrace make gcc libseccomp-dev redis-server
      nginx-light wrk nftables sshfs openssh-server openssh-client e2fsprogs postgresql
      glusterfs-server glusterfs-client)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${missing[*]}; run this script as root (apt-get)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: installed ${missing[*]}"
