#!/bin/sh
# Installs what rsandbox needs on Debian 12 (as root), builds it, and puts the binary on PATH.
set -eu
cd "$(dirname "$0")"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    # libseccomp-dev and pkg-config: the seccomp filter compiler; python3: the default interpreter.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libseccomp-dev pkg-config python3 >/dev/null
fi
if ! command -v cargo >/dev/null; then
    [ -x "$HOME/.cargo/bin/cargo" ] && PATH="$HOME/.cargo/bin:$PATH" || { echo "install.sh: cargo (Rust 1.80+) is required" >&2; exit 1; }
fi
# One static executable where libseccomp.a is there (build.sh says why).
./build.sh build --release --locked --quiet
dest=/usr/local/bin
[ "$(id -u)" = 0 ] || dest="$HOME/.local/bin"
mkdir -p "$dest"
install -m 0755 "$(./build.sh --bin-dir)/rsandbox" "$dest/rsandbox"
echo "installed $dest/rsandbox"
