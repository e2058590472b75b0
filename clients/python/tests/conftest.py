"""Fixtures: real `rsandbox serve` daemons on a Unix socket in a temp dir (and loopback TCP with a
bearer token), and clients of every kind for them.

The binary: $RSANDBOX_BIN, else the repository's release build (built with ./build.sh when
missing). When the daemon cannot be had, the tests are skipped loudly, unless
RSANDBOX_TEST_EXPECT lists `pyclient`, in which case they fail.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

import rsandbox

REPO = Path(__file__).resolve().parents[3]


def expected() -> bool:
    return "pyclient" in os.environ.get("RSANDBOX_TEST_EXPECT", "").split(",")


def unavailable(why: str) -> None:
    if expected():
        pytest.fail(f"pyclient is expected (RSANDBOX_TEST_EXPECT) but {why}")
    print(f"\n!!! SKIP pyclient: {why}", file=sys.stderr)
    pytest.skip(why)


def binary() -> Path:
    env = os.environ.get("RSANDBOX_BIN")
    if env:
        return Path(env)
    for p in (
        REPO / "target/x86_64-unknown-linux-gnu/release/rsandbox",
        REPO / "target/release/rsandbox",
    ):
        if p.exists():
            return p
    build = subprocess.run([str(REPO / "build.sh"), "build", "--release"], cwd=REPO)
    if build.returncode != 0:
        unavailable("./build.sh build --release failed")
    out = subprocess.run([str(REPO / "build.sh"), "--bin-dir"], cwd=REPO, capture_output=True, text=True)
    return REPO / out.stdout.strip() / "rsandbox"


class Daemon:
    """`rsandbox serve` on TMP/rsandbox.sock, with loopback TCP and a token when `tcp`."""

    def __init__(self, extra: List[str], tcp: bool = True) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="rsandbox-pyclient-")
        os.chmod(self.dir.name, 0o755)
        self.socket = os.path.join(self.dir.name, "rsandbox.sock")
        self.token: Optional[str] = None
        self.url: Optional[str] = None
        args = [str(binary()), "serve", "--socket", self.socket, *extra]
        if tcp:
            self.token = secrets.token_hex(16)
            token_file = os.path.join(self.dir.name, "token")
            with open(token_file, "w") as f:
                f.write(self.token)
            os.chmod(token_file, 0o600)
            args += ["--listen", "127.0.0.1:0", "--token-file", token_file]
        self.log: List[str] = []
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log.append(line.rstrip("\n"))
                if "listening on tcp:" in line:
                    self.url = "http://" + line.split("listening on tcp:", 1)[1].strip()
                if "ready" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60) or self.proc.poll() is not None:
            self.stop()
            unavailable("the daemon did not get ready: " + " | ".join(self.log[-10:]))
        if tcp and self.url is None:
            self.stop()
            pytest.fail("the daemon did not log its TCP address: " + " | ".join(self.log))

    def client(self, kind: str) -> rsandbox.Client:
        if kind == "tcp":
            return rsandbox.Client(self.url, token=self.token)
        return rsandbox.Client(self.socket)

    def aclient(self, kind: str) -> rsandbox.AsyncClient:
        if kind == "tcp":
            return rsandbox.AsyncClient(self.url, token=self.token)
        return rsandbox.AsyncClient("unix:" + self.socket)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.dir.cleanup()


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    """The shared daemon: modest maxima, so that asking above them is easy."""
    d = Daemon(["--slots", "2", "--max-timeout", "60", "--max-memory", "1024", "--max-pids", "512", "--max-contexts", "4"])
    yield d
    d.stop()


@pytest.fixture(scope="session")
def busy_daemon() -> Iterator[Daemon]:
    """One slot and no queue: a second request while one runs is 503."""
    d = Daemon(["--slots", "1", "--queue", "0"], tcp=False)
    yield d
    d.stop()


@pytest.fixture(params=["unix", "tcp"])
def client(request: pytest.FixtureRequest, daemon: Daemon) -> Iterator[rsandbox.Client]:
    with daemon.client(request.param) as c:
        yield c


@pytest.fixture(params=["unix", "tcp"])
async def aclient(request: pytest.FixtureRequest, daemon: Daemon):  # type: ignore[no-untyped-def]
    async with daemon.aclient(request.param) as c:
        yield c
