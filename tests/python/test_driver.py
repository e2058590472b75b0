"""Tests for the context driver (src/context/driver.py).

Each test starts the driver the way the supervisor does: stdin is one end of
a socketpair (the control socket), stdout/stderr are pipes.  Run with
`/usr/bin/python3 -m pytest -q tests/python/test_driver.py` (Debian's
python3-pytest).  RSANDBOX_TEST_PYTHON picks the interpreter under test
(default /usr/bin/python3); IPython and matplotlib tests are skipped where it
cannot import them.
"""

import base64
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

PY = os.environ.get("RSANDBOX_TEST_PYTHON", "/usr/bin/python3")
DRIVER = Path(__file__).resolve().parents[2] / "src" / "context" / "driver.py"
TIMEOUT = 30


def _importable(module):
    return subprocess.run([PY, "-c", "import " + module],
                          capture_output=True).returncode == 0


HAVE_IPYTHON = _importable("IPython")
HAVE_MPL = _importable("matplotlib.pyplot")
needs_ipython = pytest.mark.skipif(
    not HAVE_IPYTHON, reason="IPython is not importable by %s" % PY)
needs_mpl = pytest.mark.skipif(
    not HAVE_MPL, reason="matplotlib is not importable by %s" % PY)


class Stream:
    """Collects a pipe in a thread; hands out what precedes each marker."""

    def __init__(self, f):
        self.buf = bytearray()
        self.eof = False
        self.cv = threading.Condition()
        threading.Thread(target=self._pump, args=(f,), daemon=True).start()

    def _pump(self, f):
        while True:
            chunk = os.read(f.fileno(), 65536)
            with self.cv:
                if not chunk:
                    self.eof = True
                else:
                    self.buf += chunk
                self.cv.notify_all()
            if not chunk:
                return

    def wait_for(self, needle, timeout=TIMEOUT):
        with self.cv:
            ok = self.cv.wait_for(lambda: needle in self.buf or self.eof, timeout)
            assert ok and needle in self.buf, (needle, bytes(self.buf))

    def until(self, marker, timeout=TIMEOUT):
        """Text before `marker\\n`; consumes through the marker line."""
        needle = marker.encode() + b"\n"
        self.wait_for(needle, timeout)
        with self.cv:
            i = self.buf.index(needle)
            text = bytes(self.buf[:i])
            del self.buf[:i + len(needle)]
        return text.decode()

    def rest(self, timeout=TIMEOUT):
        with self.cv:
            self.cv.wait_for(lambda: self.eof, timeout)
            return bytes(self.buf).decode()


class Cell:
    def __init__(self, frames, stdout, stderr):
        self.frames = frames
        self.stdout = stdout
        self.stderr = stderr
        self.done = frames[-1]
        self.results = [f for f in frames if f["ev"] == "result"]
        mains = [f["data"] for f in self.results if f["main"]]
        assert len(mains) <= 1, frames
        self.main = mains[0] if mains else None
        self.displays = [f["data"] for f in self.results if not f["main"]]
        errors = [f for f in frames if f["ev"] == "error"]
        assert len(errors) <= 1, frames
        self.error = errors[0] if errors else None
        self.status = self.done["status"]

    @property
    def text(self):
        return self.main["text/plain"] if self.main else None


class Driver:
    def __init__(self, ipython=False, argv=None, env=None):
        e = dict(os.environ, MPLBACKEND="Agg",
                 RSANDBOX_CONTEXT_IPYTHON="1" if ipython else "0")
        e.update(env or {})
        self.sock, child = socket.socketpair()
        self.proc = subprocess.Popen(argv or [PY, str(DRIVER)], stdin=child,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=e)
        child.close()
        self.sock.settimeout(TIMEOUT)
        self.out = Stream(self.proc.stdout)
        self.err = Stream(self.proc.stderr)
        self.next_id = 0
        self.ready = self.recv()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, obj):
        data = json.dumps(obj).encode()
        self.send_raw(len(data).to_bytes(4, "big") + data)

    def _exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "control socket closed"
            data += chunk
        return data

    def recv(self):
        n = int.from_bytes(self._exact(4), "big")
        frame = json.loads(self._exact(n))
        assert isinstance(frame, dict)
        return frame

    def submit(self, code, **extra):
        self.next_id += 1
        marker = uuid.uuid4().hex
        self.send(dict({"op": "execute", "id": self.next_id, "code": code,
                        "marker": marker}, **extra))
        return self.next_id, marker

    def collect(self, cell_id, marker):
        frames = []
        while True:
            frame = self.recv()
            assert frame.get("id") == cell_id, frame
            frames.append(frame)
            if frame["ev"] == "done":
                break
        return Cell(frames, self.out.until(marker), self.err.until(marker))

    def execute(self, code):
        return self.collect(*self.submit(code))

    def ok(self, code):
        cell = self.execute(code)
        assert cell.status == "ok", (cell.frames, cell.stderr)
        return cell

    def close(self):
        try:
            self.sock.close()
            return self.proc.wait(TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def start(tmp_path):
    drivers = []

    def start(**kwargs):
        kwargs.setdefault("env", {}).setdefault("HOME", str(tmp_path))
        d = Driver(**kwargs)
        drivers.append(d)
        return d

    yield start
    for d in drivers:
        d.close()


@pytest.fixture
def drv(start):
    return start()


# ------------------------------------------------------------ basic protocol

def test_ready_frame(drv):
    r = drv.ready
    assert r["ev"] == "ready" and r["ipython"] is False
    assert r["pid"] == drv.proc.pid
    assert [int(x) for x in r["python"].split(".")][:2] >= [3, 8]


def test_ping(drv):
    drv.send({"op": "ping", "id": 77})
    assert drv.recv() == {"ev": "pong", "id": 77}


def test_state_and_execution_count(drv):
    assert drv.ok("x = 41").done["execution_count"] == 1
    assert drv.ok("x = x + 1").main is None
    cell = drv.ok("x")
    assert cell.text == "42" and cell.done["execution_count"] == 3
    drv.execute("1/0")
    drv.execute("syntax error here")
    assert drv.ok("x").done["execution_count"] == 6


def test_namespace_is_a_clean_main(drv):
    assert drv.ok("__name__").text == "'__main__'"
    assert drv.ok("import sys; sys.modules['__main__'].__dict__ is globals()").text == "True"
    assert drv.ok("'__builtins__' in globals()").text == "True"
    assert drv.ok("sys.argv, sys.path[0]").text == "([''], '')"  # as the REPL
    assert drv.ok("sorted(k for k in globals() if not k.startswith('__'))").text == "['_', 'sys']"
    # Clobbering names the driver uses must not break it.
    drv.ok("json = os = sys = linecache = display_ = None; _St = _send = 1")
    assert drv.ok("1 + 1").text == "2"


def test_repr_protocol_without_ipython(drv):
    drv.ok('''
class Rich:
    def _repr_html_(self): return "<b>rich</b>"
    def _repr_markdown_(self): return "*rich*"
    def _repr_svg_(self): return "<svg/>"
    def _repr_png_(self): return b"\\x89PNG-ish"
    def _repr_jpeg_(self): raise ValueError("skipped")
    def _repr_latex_(self): return None
    def _repr_json_(self): return {"a": [1, 2]}
    def __repr__(self): return "Rich()"
''')
    data = drv.ok("Rich()").main
    assert data == {
        "text/plain": "Rich()",
        "text/html": "<b>rich</b>",
        "text/markdown": "*rich*",
        "image/svg+xml": "<svg/>",
        "image/png": base64.b64encode(b"\x89PNG-ish").decode(),
        "application/json": {"a": [1, 2]},
    }


def test_repr_mimebundle_and_edge_cases(drv):
    drv.ok('''
class Bundle:
    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/html": "<i>b</i>", "application/x-custom": "c"}, {}
    def _repr_html_(self): return "ignored: the bundle has text/html"
    def _repr_markdown_(self): return ("md", {"meta": 1})
class Plain:
    def _repr_mimebundle_(self, **kw): return {"text/plain": "custom plain"}
class Weird:
    def _repr_json_(self): return {"x": float("nan")}
    def _repr_html_(self): return "lone \\ud800 surrogate"
class Anything:
    def __getattr__(self, name): return lambda *a, **k: "<b>" + name
    def __repr__(self): return "Anything()"
''')
    data = drv.ok("Bundle()").main
    assert data.pop("text/plain").startswith("<__main__.Bundle object at ")
    assert data == {"text/html": "<i>b</i>", "application/x-custom": "c",
                    "text/markdown": "md"}
    assert drv.ok("Plain()").main == {"text/plain": "custom plain"}
    weird = drv.ok("Weird()").main
    assert "application/json" not in weird  # NaN is not JSON
    assert weird["text/html"] == "lone ? surrogate"
    assert drv.ok("Anything()").main == {"text/plain": "Anything()"}
    assert drv.ok("Rich = type('Rich', (), {'_repr_html_': lambda s: 'x'}); Rich").main \
        == {"text/plain": "<class '__main__.Rich'>"}


def test_display_builtin(drv):
    cell = drv.ok('''
class H:
    def _repr_html_(self): return "<p>h</p>"
    def __repr__(self): return "H"
r = display(1, H())
display({"text/plain": "raw!"}, raw=True)
r''')
    assert cell.displays == [{"text/plain": "1"},
                             {"text/plain": "H", "text/html": "<p>h</p>"},
                             {"text/plain": "raw!"}]
    assert cell.main is None  # display() returns None


def test_trailing_semicolon_and_underscore(drv):
    assert drv.ok("6 * 7").text == "42"
    assert drv.ok("_ + 1").text == "43"
    assert drv.ok("100;").main is None
    assert drv.ok("_").text == "43"  # a suppressed result does not set _
    assert drv.ok("x = 1; x").text == "1"
    assert drv.ok("x  # a comment;").text == "1"
    assert drv.ok("'a;b'").text == "'a;b'"
    assert drv.ok("x ;  # comment").main is None
    assert drv.ok("None").main is None


def test_echo_prints_every_expression_statement_as_the_repl_does(drv):
    cell = drv.collect(*drv.submit("x = 2\nx\nNone\n'a'\nfor i in range(2): i\nprint('p')",
                                   echo=True))
    assert cell.status == "ok", cell.frames
    assert cell.main is None  # echoed, not a result
    assert cell.stdout == "2\n'a'\n0\n1\np\n"
    # The state is the context's: a later plain cell sees it.
    assert drv.ok("x").text == "2"
    cell = drv.collect(*drv.submit("1/0", echo=True))
    assert cell.status == "error" and "ZeroDivisionError" in cell.error["traceback"]


def test_json_value_adds_the_value_as_json(drv):
    cell = drv.collect(*drv.submit("{'a': [1, None]}", json_value=True))
    assert cell.main["application/json"] == {"a": [1, None]}
    assert cell.main["text/plain"] == "{'a': [1, None]}"
    cell = drv.collect(*drv.submit("object()", json_value=True))
    assert "application/json" not in cell.main
    assert "application/json" not in drv.ok("[1]").main


def test_traceback_shows_cell_source_and_no_driver_frames(drv):
    drv.ok("def f(n):\n    return 10 / n\n")
    cell = drv.execute("y = 1\nf(0)\n")
    assert cell.status == "error" and cell.done["execution_count"] == 2
    err = cell.error
    assert err["name"] == "ZeroDivisionError" and err["value"] == "division by zero"
    tb = err["traceback"]
    assert tb.startswith("Traceback (most recent call last):\n")
    assert '  File "<cell-2>", line 2, in <module>\n    f(0)\n' in tb
    assert '  File "<cell-1>", line 2, in f\n    return 10 / n\n' in tb
    assert tb.endswith("ZeroDivisionError: division by zero\n")
    assert "driver" not in tb and "<string>" not in tb and "\x1b" not in tb
    assert tb.count('  File "') == 2


def test_traceback_matches_python(drv):
    # Same text as the interpreter prints for the same source and filename.
    cell = drv.execute("[1, 2][5]")
    expected = subprocess.run(
        [PY, "-c", "import linecache, traceback\n"
         "linecache.cache['<cell-1>'] = (9, None, ['[1, 2][5]\\n'], '<cell-1>')\n"
         "try:\n    exec(compile('[1, 2][5]', '<cell-1>', 'exec'))\n"
         "except Exception as e:\n"
         "    tb = e.__traceback__.tb_next\n"
         "    print(''.join(traceback.format_exception(type(e), e, tb)), end='')"],
        capture_output=True, text=True).stdout
    assert cell.error["traceback"] == expected


def test_syntax_error(drv):
    cell = drv.execute("x = (\n")
    assert cell.status == "error" and cell.error["name"] == "SyntaxError"
    tb = cell.error["traceback"]
    assert tb.startswith('  File "<cell-1>", line 1\n') and "Traceback" not in tb


def test_exception_keeps_state(drv):
    drv.ok("kept = [1]")
    assert drv.execute("kept.append(2); raise RuntimeError('boom')").status == "error"
    assert drv.ok("kept").text == "[1, 2]"


def test_system_exit_is_an_error(drv):
    cell = drv.execute("import sys\nsys.exit(4)")
    assert cell.status == "error"
    assert cell.error["name"] == "SystemExit" and cell.error["value"] == "4"
    assert drv.ok("'alive'").text == "'alive'"
    assert drv.proc.poll() is None


def test_source_in_linecache_for_inspect(drv):
    drv.ok("def g():\n    return 1\n")
    assert drv.ok("import inspect; inspect.getsource(g)").text == repr("def g():\n    return 1\n")


def test_sigint_interrupts_cell(drv):
    drv.ok("x = 5")
    cell_id, marker = drv.submit(
        "import time\nprint('started', flush=True)\n"
        "for i in range(600):\n    time.sleep(0.05)\nx = 6\n")
    drv.out.wait_for(b"started\n")
    os.kill(drv.proc.pid, signal.SIGINT)
    cell = drv.collect(cell_id, marker)
    assert cell.status == "interrupted"
    assert cell.error["name"] == "KeyboardInterrupt"
    tb = cell.error["traceback"]
    # Mostly raised in time.sleep (line 4), but the signal may also land just
    # after the print that the test waits for, or at the loop's back edge.
    assert tb.startswith('Traceback (most recent call last):\n  File "<cell-2>", line ')
    assert tb.count('  File "') == 1 and tb.endswith("\nKeyboardInterrupt\n")
    assert "driver" not in tb
    assert cell.stdout == "started\n"
    assert drv.ok("x").text == "5"
    assert drv.ok("x + 1").text == "6"


def test_sigint_while_idle_is_harmless(drv):
    drv.ok("v = 'kept'")
    for _ in range(5):
        os.kill(drv.proc.pid, signal.SIGINT)
        time.sleep(0.05)
    # Also in the middle of a frame: half a header, SIGINT, then the rest.
    data = json.dumps({"op": "ping", "id": 5}).encode()
    frame = len(data).to_bytes(4, "big") + data
    drv.send_raw(frame[:2])
    time.sleep(0.1)
    os.kill(drv.proc.pid, signal.SIGINT)
    time.sleep(0.1)
    drv.send_raw(frame[2:])
    assert drv.recv() == {"ev": "pong", "id": 5}
    cell = drv.ok("v")  # an idle SIGINT must not interrupt the next cell
    assert cell.text == "'kept'"
    assert drv.proc.poll() is None


def test_sigint_during_display_flood_keeps_frames_intact(drv):
    cell_id, marker = drv.submit("for i in range(10**6):\n    display(i)\n")
    frames = [drv.recv() for _ in range(50)]
    os.kill(drv.proc.pid, signal.SIGINT)
    while frames[-1]["ev"] != "done":
        frames.append(drv.recv())  # each one must still parse
    assert frames[-1]["status"] == "interrupted"
    assert [f["ev"] for f in frames][-2:] == ["error", "done"]
    drv.out.until(marker)
    drv.err.until(marker)
    assert drv.ok("'fine'").text == "'fine'"


def test_control_fd_not_inherited_and_stdin_is_empty(drv):
    child = ("import os; print(sorted(os.listdir('/proc/self/fd'), key=int));"
             " print(os.readlink('/proc/self/fd/0'))")
    cell = drv.ok("import subprocess, sys\n"
                  "r = subprocess.run([sys.executable, '-c', %r], close_fds=False,"
                  " capture_output=True, text=True)\nr.stdout" % child)
    assert eval(cell.text) == "['0', '1', '2', '3']\n/dev/null\n"
    cell = drv.ok("import os\nos.system('ls /proc/self/fd | sort -n | tr \"\\\\n\" \" \"')")
    assert cell.stdout == "0 1 2 3 "
    assert drv.ok("import sys, os\n(sys.stdin.read(), os.read(0, 10))").text == "('', b'')"
    cell = drv.execute("input()")
    assert cell.error["name"] == "EOFError"
    # The control socket itself is close-on-exec.
    fds = Path("/proc/%d/fd" % drv.proc.pid)
    socks = [p.name for p in fds.iterdir() if os.readlink(p).startswith("socket:")]
    assert socks and "0" not in socks
    for fd in socks:
        flags = int(Path("/proc/%d/fdinfo/%s" % (drv.proc.pid, fd)).read_text()
                    .split("flags:")[1].split()[0], 8)
        assert flags & 0o2000000


@pytest.mark.parametrize("payload", [
    b"not json", b"[1, 2]", b"\xff\xfe{}", b'"str"', b'{"op": "frobnicate"}',
    b'{"op": "execute", "id": 1, "code": 5, "marker": "m"}',
])
def test_bad_frames_exit_3(drv, payload):
    drv.send_raw(len(payload).to_bytes(4, "big") + payload)
    assert drv.proc.wait(TIMEOUT) == 3


def test_oversized_frame_exits_3(drv):
    drv.send_raw((64 * 1024 * 1024 + 1).to_bytes(4, "big"))
    assert drv.proc.wait(TIMEOUT) == 3


def test_frame_of_exactly_64_mib_is_accepted(drv):
    head = b'{"op":"ping","id":9,"pad":"'
    pad = 64 * 1024 * 1024 - len(head) - 2
    drv.send_raw((64 * 1024 * 1024).to_bytes(4, "big") + head + b"x" * pad + b'"}')
    assert drv.recv() == {"ev": "pong", "id": 9}


def test_eof_exits_0(drv):
    drv.ok("import threading, time\n"
           "threading.Thread(target=time.sleep, args=(600,)).start()")
    assert drv.close() == 0  # a non-daemon thread does not keep it alive


def test_output_order_and_markers(drv):
    cell = drv.ok("import os, sys, subprocess\n"
                  "print('out1')\n"
                  "sys.stderr.write('err1\\n')\n"
                  "os.write(1, b'raw1\\n')\n"
                  "subprocess.run(['sh', '-c', 'echo child-out; echo child-err >&2'])\n"
                  "print('out2', end='')\n"
                  "sys.stderr.write('err2')")
    assert cell.stdout == "out1\nraw1\nchild-out\nout2"
    assert cell.stderr == "err1\nchild-err\nerr2"
    cell = drv.ok("print('after')")
    assert cell.stdout == "after\n" and cell.stderr == ""
    drv.close()
    assert drv.out.rest() == "" and drv.err.rest() == ""  # nothing but markers


def test_threads_keep_running(drv):
    drv.ok("import threading, time\nev = []\n"
           "threading.Thread(target=lambda: (time.sleep(0.3), ev.append(1))).start()")
    time.sleep(0.8)
    assert drv.ok("ev").text == "[1]"


def test_forked_child_leaving_the_cell_exits_quietly(drv):
    cell = drv.ok("import os\npid = os.fork()\n"
                  "if pid == 0:\n    print('child', flush=True)\n"
                  "else:\n    os.waitpid(pid, 0)\n")
    assert cell.stdout == "child\n"
    assert drv.ok("pid > 0").text == "True"


@pytest.mark.parametrize("flags", [[], ["-I", "-S"], ["-u"]])
def test_run_with_dash_c(start, flags):
    d = start(argv=[PY] + flags + ["-c", DRIVER.read_text()])
    assert d.ready["ev"] == "ready"
    d.ok("def f():\n    raise KeyError('k')\n")
    tb = d.execute("f()").error["traceback"]
    assert "<string>" not in tb and tb.count('  File "') == 2
    assert d.ok("exec('1 + 1'); 3").text == "3"
    assert "<string>" in d.execute("exec('1/0')").error["traceback"]  # user's own


# ---------------------------------------------------------------- IPython

@needs_ipython
def test_ipython_ready_without_importing_it(start):
    d = start(ipython=True)
    assert d.ready["ipython"] is True
    status = Path("/proc/%d/status" % d.proc.pid).read_text()
    rss_kib = int(status.split("VmRSS:")[1].split()[0])
    assert rss_kib < 25 * 1024  # IPython costs 30+ MiB: it is not loaded yet


@needs_ipython
def test_ipython_magics(start):
    d = start(ipython=True)
    cell = d.ok("%time x = 1")
    assert "Wall time" in cell.stdout
    assert d.ok("x").text == "1"
    cell = d.ok("!echo hi; echo there >&2")
    assert (cell.stdout, cell.stderr) == ("hi\n", "there\n")
    assert "Wall time" in d.ok("%%time\ny = 2\n").stdout
    assert d.ok("y").text == "2"
    assert d.ok("In[1]").text == repr("get_ipython().run_line_magic('time', 'x = 1')")


@needs_ipython
def test_ipython_cell_events_and_autoreload(start, tmp_path):
    d = start(ipython=True)
    d.ok("seen = []\n"
         "get_ipython().events.register('pre_run_cell', lambda i: seen.append(i.raw_cell))\n"
         "get_ipython().events.register('post_run_cell', lambda r: seen.append(r.success))")
    d.execute("1/0")
    assert d.ok("seen").text == "[True, '1/0', False, 'seen']"
    mod = tmp_path / "automod.py"
    mod.write_text("def f():\n    return 1\n")
    d.ok("%%load_ext autoreload\n%%autoreload 2\nimport sys; sys.path.insert(0, %r)\n"
         "import automod" % str(tmp_path))
    assert d.ok("automod.f()").text == "1"
    mod.write_text("def f():\n    return 22\n")
    assert d.ok("automod.f()").text == "22"


@needs_ipython
def test_ipython_html_and_display(start):
    d = start(ipython=True)
    main = d.ok("from IPython.display import HTML\nHTML('<b>hi</b>')").main
    assert main["text/html"] == "<b>hi</b>"
    assert main["text/plain"].startswith("<IPython.core.display.HTML")
    cell = d.ok("from IPython.display import display, Markdown\n"
                "display(Markdown('*md*'))\n"
                "display(HTML('<i>x</i>'), {'a': 1})")
    assert cell.main is None and len(cell.displays) == 3
    assert cell.displays[0]["text/markdown"] == "*md*"
    assert cell.displays[1]["text/html"] == "<i>x</i>"
    assert cell.displays[2]["text/plain"] == "{'a': 1}"
    assert cell.stdout == ""


@needs_ipython
def test_ipython_errors_are_plain(start):
    d = start(ipython=True)
    d.ok("def f():\n    return {}['k']\n")
    cell = d.execute("f()")
    tb = cell.error["traceback"]
    assert cell.status == "error" and cell.error["name"] == "KeyError"
    assert "\x1b" not in tb and tb.startswith("Traceback (most recent call last):\n")
    assert '  File "<cell-1>", line 2, in f\n' in tb and "driver" not in tb
    assert d.execute("exit()").error["name"] == "SystemExit"
    assert d.ok("1").text == "1"


@needs_ipython
def test_ipython_can_be_disabled(start):
    d = start(ipython=False)  # RSANDBOX_CONTEXT_IPYTHON=0
    assert d.ready["ipython"] is False
    assert d.execute("%time x = 1").error["name"] == "SyntaxError"
    assert d.ok("import sys; 'IPython' in sys.modules").text == "False"


# ------------------------------------------------------------- matplotlib

def _png(data):
    assert base64.b64decode(data["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")
    assert data["text/plain"].startswith("<Figure size")


mpl_modes = pytest.mark.parametrize("ipython", [
    False, pytest.param(True, marks=needs_ipython)])


@needs_mpl
@mpl_modes
def test_matplotlib_show(start, ipython):
    d = start(ipython=ipython)
    assert d.ok("import sys; 'matplotlib' in sys.modules").text == "False"
    cell = d.ok("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()")
    assert cell.main is None and len(cell.displays) == 1
    _png(cell.displays[0])
    assert cell.stderr == ""
    # Each show() is its own figure, as with Jupyter's inline backend.
    cell = d.ok("for i in range(2):\n    plt.plot([i, 1])\n    plt.show()")
    assert len(cell.displays) == 2 and cell.displays[0] != cell.displays[1]
    # Open figures are flushed after the cell even without show().
    cell = d.ok("plt.plot([3, 1]);")
    assert cell.main is None and len(cell.displays) == 1
    assert d.ok("len(plt.get_fignums())").text == "0"


@needs_mpl
@mpl_modes
def test_matplotlib_figure_as_value(start, ipython):
    d = start(ipython=ipython)
    cell = d.ok("import matplotlib.pyplot as plt\n"
                "fig, ax = plt.subplots()\nax.plot([1, 3])\nfig")
    assert cell.displays == []  # not emitted twice
    _png(cell.main)


@needs_mpl
def test_matplotlib_figure_flushed_after_error(drv):
    cell = drv.execute("import matplotlib.pyplot as plt\nplt.plot([1])\n1/0")
    assert cell.status == "error" and len(cell.displays) == 1


# ------------------------------------------------------------ top-level await

@pytest.mark.parametrize("ipython", [False, pytest.param(True, marks=needs_ipython)])
def test_top_level_await(start, ipython):
    d = start(ipython=ipython)
    assert d.ok("import asyncio\nawait asyncio.sleep(0, result=5)").text == "5"
    d.ok("t = asyncio.ensure_future(asyncio.sleep(0.05, result='later'))")
    assert d.ok("await t").text == "'later'"  # the loop persists across cells
    cell = d.execute("async def f():\n    raise ValueError('x')\nawait f()")
    tb = cell.error["traceback"]
    assert tb.startswith('Traceback (most recent call last):\n  File "<cell-4>", line 3')
    assert "asyncio" not in tb and "driver" not in tb and tb.count('  File "') == 2
    assert d.ok("asyncio.run(asyncio.sleep(0, result=6))").text == "6"
    cell_id, marker = d.submit("print('go', flush=True)\nawait asyncio.sleep(30)")
    d.out.wait_for(b"go\n")
    time.sleep(0.1)
    os.kill(d.proc.pid, signal.SIGINT)
    assert d.collect(cell_id, marker).status == "interrupted"
    assert d.ok("await asyncio.sleep(0, result=7)").text == "7"


@needs_ipython
@needs_mpl
def test_ipython_matplotlib_inline_magic(start):
    d = start(ipython=True)
    cell = d.ok("%matplotlib inline\nimport matplotlib.pyplot as plt\n"
                "plt.plot([1]); plt.show()\nplt.plot([2]);")
    assert cell.main is None and len(cell.displays) == 2
    for data in cell.displays:
        _png(data)
    cell = d.ok("fig, ax = plt.subplots()\nax.plot([1, 3])\nfig")
    assert cell.displays == []
    _png(cell.main)


@needs_ipython
def test_ipython_quiet_without_writable_home(start):
    d = start(ipython=True, env={"HOME": "/nonexistent", "VIRTUAL_ENV": "/nonexistent"})
    cell = d.ok("x = 1")
    assert cell.stdout == "" and cell.stderr == ""
    assert d.ok("get_ipython().__class__.__name__").text == "'InteractiveShell'"
    assert d.ok("get_ipython().user_ns is globals()").text == "True"
    d.close()
    assert d.out.rest() == "" and d.err.rest() == ""


def test_oversized_result_is_truncated(drv):
    cell = drv.ok("'x' * (65 * 2**20)")
    text = cell.main["text/plain"]
    assert len(text) < 2 * 2**20 and text.endswith("over the frame limit]")
    assert list(cell.main) == ["text/plain"]
    assert drv.ok("len(_)").text == str(65 * 2**20)
