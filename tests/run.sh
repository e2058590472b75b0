#!/bin/bash
# Runs every test: unit, integration and doc tests as root (or as you), then, when run as root,
# the integration binary again as an unprivileged user. Prints how long each stage took.
#   RSANDBOX_TEST_EXPECT  features that must be present (default for this host kind below)
#   RSANDBOX_TEST_USER    the unprivileged user for the second pass (default: rstest, created)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
export RSANDBOX_TEST_EXPECT="${RSANDBOX_TEST_EXPECT:-userns,landlock,cgroup1}"
stage() { echo "=== $1: $(( SECONDS - t0 ))s"; }

t0=$SECONDS
cargo build --release --locked --all-targets
stage "build"

t0=$SECONDS
cargo test --release --locked -- --test-threads=2
stage "tests as $(id -un)"

if [ "$(id -u)" = 0 ]; then
    t0=$SECONDS
    user="${RSANDBOX_TEST_USER:-rstest}"
    id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$user"
    # The binaries must be readable by that user: copy them out of the (maybe private) tree.
    bindir=$(mktemp -d /tmp/rsandbox-test-bin.XXXXXX)
    trap 'rm -rf "$bindir"' EXIT
    testbin=$(cargo test --release --locked --test integration --no-run --message-format=json 2>/dev/null \
        | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    cp "$testbin" "$bindir/integration"
    cp target/release/rsandbox "$bindir/rsandbox"
    chmod 755 "$bindir" "$bindir"/*
    # Unprivileged, this host's v1 cgroups are not delegated: do not expect them.
    runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$(getent passwd "$user" | cut -d: -f6)" \
        RSANDBOX_BIN="$bindir/rsandbox" RSANDBOX_TEST_EXPECT="userns,landlock" \
        ${RSANDBOX_SF_PYTHON:+RSANDBOX_SF_PYTHON="$RSANDBOX_SF_PYTHON"} \
        "$bindir/integration" --test-threads=2
    stage "integration tests as $user"
fi
