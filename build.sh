#!/bin/sh
# Runs cargo for this host's target triple. Where the static libseccomp is installed (Debian's
# libseccomp-dev has libseccomp.a), rsandbox and its test and bench executables are linked
# statically (glibc and libseccomp inside, still position-independent): the binary needs no
# libseccomp on the host, and a fresh `rsandbox run` skips the dynamic loader's work (README
# "Speed" has the figure). Elsewhere: an ordinary dynamic build.
#   ./build.sh build --release          cargo SUBCOMMAND [ARGS...] --target HOST
#   ./build.sh --bin-dir                prints where the release executables land
# The explicit --target keeps the static flag off build scripts and proc macros.
set -eu
cd "$(dirname "$0")"
host=$(rustc -vV | sed -n 's/^host: //p')
if [ "${1:-}" = --bin-dir ]; then
    echo "${CARGO_TARGET_DIR:-target}/$host/release"
    exit 0
fi
[ $# -ge 1 ] || { echo "usage: ./build.sh SUBCOMMAND [ARGS...] | --bin-dir" >&2; exit 2; }
libdir=$(pkg-config --variable=libdir libseccomp 2>/dev/null || true)
if [ -n "$libdir" ] && [ -e "$libdir/libseccomp.a" ]; then
    export LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH="$libdir"
    export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
else
    echo "build.sh: no libseccomp.a (libseccomp-dev): building dynamically linked executables" >&2
fi
sub=$1
shift
exec cargo "$sub" --target "$host" "$@"
