#!/bin/bash
# Runs every test: unit, integration and doc tests as root (or as you), then, when run as root,
# the integration binary again as an unprivileged user. Prints how long each stage took.
#   RSANDBOX_TEST_EXPECT  features that must be present (default for this host kind below)
#   RSANDBOX_TEST_USER    the unprivileged user for the second pass (default: rstest, created)
# As root on Debian it first installs the packages the tests use (those missing only).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
export RSANDBOX_TEST_EXPECT="${RSANDBOX_TEST_EXPECT:-userns,landlock,cgroup1,cpython-tests,fake-gpu,sandbox-fusion,systemd-analyze,pip-index,ipython,pyclient,seed-clients}"
stage() { echo "=== $1: $(( SECONDS - t0 ))s"; }

# libseccomp-dev, pkg-config: the build; python3-venv: the SandboxFusion client's venv;
# libpython3.11-testsuite: CPython's own tests under the strict profile; bubblewrap: a bench
# row; gcc, libc6-dev: the hostile tests' C programs; util-linux, passwd: setpriv, runuser,
# useradd; systemd: systemd-analyze, to verify the units (PID 1 need not be systemd);
# python3-pip: the egress tests' pip download through the proxy (feature pip-index, root pass);
# python3-ipykernel, python3-matplotlib: contexts with IPython and figures (feature ipython);
# python3-pytest: the context driver's own tests.
t0=$SECONDS
packages=(libseccomp-dev pkg-config python3 python3-venv python3-pip libpython3.11-testsuite bubblewrap curl
          ca-certificates gcc libc6-dev util-linux passwd systemd python3-ipykernel python3-matplotlib
          python3-pytest python3-yaml)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi
stage "packages"

t0=$SECONDS
./build.sh build --release --locked --all-targets
stage "build"

# CPython's test_sqlite3, which Debian does not package (feature cpython-tests).
t0=$SECONDS
[ "$(id -u)" = 0 ] || export RSANDBOX_TEST_CACHE="${RSANDBOX_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rsandbox-test}"
RSANDBOX_TEST_CPYTHON_TESTS=$(tests/fetch-cpython-tests)
export RSANDBOX_TEST_CPYTHON_TESTS
RSANDBOX_SF_PYTHON=${RSANDBOX_SF_PYTHON:-$(tests/fetch-sandbox-fusion)}
export RSANDBOX_SF_PYTHON
# The seed systems' clients (feature seed-clients): microsandbox, AI Computer and E2B's in one
# venv, Jupyter's (code-sandboxes, websocket-client) in another.
RSANDBOX_SEED_PYTHON=${RSANDBOX_SEED_PYTHON:-$(tests/fetch-seed-clients)}
export RSANDBOX_SEED_PYTHON
RSANDBOX_JUPYTER_PYTHON=${RSANDBOX_JUPYTER_PYTHON:-$(tests/fetch-seed-clients jupyter)}
export RSANDBOX_JUPYTER_PYTHON
stage "fetch CPython test modules, the SandboxFusion and the seed systems' clients"

t0=$SECONDS
./build.sh test --release --locked -- --test-threads=2
stage "tests as $(id -un)"

# The context driver (src/context/driver.py) on its own, with Debian's Python: its protocol,
# cells, signals and IPython paths (pytest, as the Python side is tested).
t0=$SECONDS
/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/python
stage "context driver tests (pytest)"

# The Python package (clients/python) with pytest against real daemons, as root only (feature
# pyclient), in a throwaway venv with the package, pytest and pytest-asyncio from pip's index
# (the package is built with the venv's own setuptools: no isolated build environment to fetch).
if [ "$(id -u)" = 0 ]; then
    t0=$SECONDS
    pyvenv=$(mktemp -d /tmp/rsandbox-pyclient.XXXXXX)
    /usr/bin/python3 -m venv "$pyvenv" \
        || { rm -rf "$pyvenv"; echo "tests/run.sh: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
    { "$pyvenv/bin/pip" install -q --disable-pip-version-check pytest pytest-asyncio tqdm wheel \
        && "$pyvenv/bin/pip" install -q --disable-pip-version-check --no-build-isolation ./clients/python; } \
        || { rm -rf "$pyvenv"; echo "tests/run.sh: pip install ./clients/python pytest pytest-asyncio failed" >&2; exit 1; }
    pyrc=0
    RSANDBOX_BIN="$(./build.sh --bin-dir)/rsandbox" "$pyvenv/bin/python" -m pytest -q -p no:cacheprovider \
        clients/python/tests || pyrc=$?
    rm -rf "$pyvenv"
    # pytest: 0 passed, 1 tests failed, 5 nothing collected (a broken tree), others its own errors.
    case $pyrc in
        0) ;;
        5) echo "tests/run.sh: pytest collected no tests in clients/python/tests" >&2; exit 1 ;;
        *) echo "tests/run.sh: the Python client tests failed (pytest exit $pyrc)" >&2; exit 1 ;;
    esac
    stage "Python client tests as root"
fi

if [ "$(id -u)" = 0 ]; then
    t0=$SECONDS
    user="${RSANDBOX_TEST_USER:-rstest}"
    id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$user"
    # The binaries must be readable by that user: copy them out of the (maybe private) tree.
    bindir=$(mktemp -d /tmp/rsandbox-test-bin.XXXXXX)
    # Fake GPU nodes for that pass (mknod needs root; feature fake-gpu), on a filesystem that is
    # not mounted nodev (the GPU tests fail, naming the problem, if /var/tmp is).
    gpudir=$(mktemp -d /var/tmp/rsandbox-fake-gpus.XXXXXX)
    trap 'rm -rf "$bindir" "$gpudir"' EXIT
    chmod 755 "$gpudir"
    tests/fake-gpus "$gpudir/dev"
    # The integration test's executable (cargo also names the rsandbox binary it builds, in
    # whatever order the builds finish).
    testbin=$(./build.sh test --release --locked --test integration --no-run --message-format=json 2>/dev/null \
        | grep '"kind":\["test"\]' | grep '"name":"integration"' \
        | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    [ -n "$testbin" ] && [ -x "$testbin" ] || { echo "tests/run.sh: cargo did not name the integration test binary" >&2; exit 1; }
    cp "$testbin" "$bindir/integration"
    cp "$(./build.sh --bin-dir)/rsandbox" "$bindir/rsandbox"
    chmod 755 "$bindir" "$bindir"/*
    # Unprivileged, this host's v1 cgroups are not delegated: do not expect them.
    runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$(getent passwd "$user" | cut -d: -f6)" \
        RSANDBOX_BIN="$bindir/rsandbox" RSANDBOX_TEST_EXPECT="userns,landlock,cpython-tests,fake-gpu,sandbox-fusion,systemd-analyze,ipython" \
        RSANDBOX_TEST_GPU_DEV_DIR="$gpudir/dev" \
        RSANDBOX_TEST_CPYTHON_TESTS="$RSANDBOX_TEST_CPYTHON_TESTS" \
        RSANDBOX_SF_PYTHON="$RSANDBOX_SF_PYTHON" \
        RSANDBOX_SEED_PYTHON="$RSANDBOX_SEED_PYTHON" RSANDBOX_JUPYTER_PYTHON="$RSANDBOX_JUPYTER_PYTHON" \
        "$bindir/integration" --test-threads=2
    stage "integration tests as $user"
fi
