"""rsandbox context driver: a persistent, notebook-style Python interpreter.

The supervisor starts this program (as a file or via ``python3 -c``) with
fd 0 = one end of a connected AF_UNIX SOCK_STREAM socketpair (the control
socket) and fds 1/2 = the stdout/stderr pipes it reads.  Only the standard
library is needed (Python 3.8+); IPython and matplotlib are used only when
importable and only once something needs them.

Framing, both directions: 4-byte big-endian length, then that many bytes of
UTF-8 JSON holding one object.  A received frame over 64 MiB, or one that is
not a JSON object of a known shape: exit status 3.  EOF: exit status 0.

Supervisor -> driver
  {"op": "execute", "id": ID, "code": STR, "marker": STR, "echo"?: BOOL,
   "json_value"?: BOOL}
      echo=true: as `python -i` does, every top-level expression statement
      that is not None prints its repr to stdout (sys.displayhook) and the
      cell has no main result.
      json_value=true: a main result whose value json.dumps accepts also
      carries it as "application/json" (AI Computer's `result`).
  {"op": "ping", "id": ID}                       -> {"ev": "pong", "id": ID}
Driver -> supervisor
  {"ev": "ready", "python": "3.11.2", "ipython": BOOL, "pid": INT}   (first)
  {"ev": "result", "id": ID, "data": {MIME: value}, "main": BOOL}
      main=true: the value of the cell's trailing expression statement;
      main=false: display() calls and matplotlib figures.  Binary values
      (image/png, image/jpeg) are base64 strings.  A bundle whose frame
      would exceed 64 MiB is replaced by a truncated text/plain.
  {"ev": "error", "id": ID, "name": STR, "value": STR, "traceback": STR}
  {"ev": "done", "id": ID, "status": "ok"|"error"|"interrupted",
   "execution_count": INT}                        (last frame of an execute)
Before "done" the driver flushes sys.stdout/sys.stderr and writes
MARKER + "\\n" straight to fd 1 and to fd 2, so whatever the cell wrote to a
stream precedes the marker on that stream.  Frames are handled one at a
time: a ping sent during a cell is answered after its "done".

SIGINT interrupts the running cell (KeyboardInterrupt, status
"interrupted"); between cells it is ignored.  RSANDBOX_CONTEXT_IPYTHON=0
forces the standard-library path even where IPython is importable.
"""

import os
import sys

# Take the control socket off fd 0 before anything else can touch it.
# os.dup() returns a non-inheritable (close-on-exec) descriptor (PEP 446), so
# programs that cells exec never see it; fd 0 becomes /dev/null so a cell
# reading stdin gets EOF instead of swallowing control frames.
_CTL = os.dup(0)
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)

# Only cheap modules here: an idle context without IPython must stay small.
# _signal and _ast are the C modules behind signal and ast, whose Python
# wrappers would pull in enum and more for nothing.
import _ast
import _signal
import _thread
import binascii
import builtins
import io
import json
import linecache

MAX_FRAME = 64 << 20
_AWAIT = getattr(_ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0)  # `await` in cells
_G = globals()  # identifies the driver's own frames (see _strip)
_MAIN_THREAD = _thread.get_ident()
_SEND_LOCK = _thread.allocate_lock()  # cells may display() from threads
_MIME_REPRS = (
    ("_repr_html_", "text/html"), ("_repr_markdown_", "text/markdown"),
    ("_repr_svg_", "image/svg+xml"), ("_repr_png_", "image/png"),
    ("_repr_jpeg_", "image/jpeg"), ("_repr_latex_", "text/latex"),
    ("_repr_json_", "application/json"),
)


class _St:
    """Mutable driver state (module globals would need `global` everywhere)."""
    busy = False      # a cell is running: SIGINT raises KeyboardInterrupt
    pending = False   # SIGINT arrived while busy was lifted for a write
    count = 0         # execution_count
    id = None         # id of the current (or last) execute request
    ipython = False   # IPython will be / is used
    shell = None      # the InteractiveShell, created by the first cell
    child = False     # we are a fork of the driver made by cell code
    loop = None       # asyncio event loop for cells that use top-level await
    run_result = None  # IPython ExecutionResult of the current cell


# Cells get a fresh __main__ module: run as a file, the driver's own globals
# are the original __main__, and cells must neither see nor clobber them (a
# cell doing `json = 1` must not break the driver).
_DRIVER_MODULE = sys.modules.get("__main__")  # keep it alive regardless
_USER = type(sys)("__main__")
_USER.__builtins__ = builtins
sys.modules["__main__"] = _USER
_NS = _USER.__dict__
sys.argv = [""]  # what the REPL gives code that reads argv
if sys.path and "__file__" in _G and sys.path[0] == os.path.dirname(
        os.path.realpath(__file__)):
    # Run as a file, sys.path[0] is this file's directory; make it '' as in
    # the REPL and `python3 -c`, so cells import from the working directory.
    sys.path[0] = ""
os.environ.setdefault("MPLBACKEND", "Agg")


# ---------------------------------------------------------------- transport

def _exit(code):
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)  # non-daemon threads started by cells must not hold us


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _encode(msg):
    # 'replace': lone surrogates (which serde_json rejects even as \ud800
    # escapes) become '?' instead of breaking the frame.
    text = json.dumps(msg, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "replace")


def _send(msg, data=None):
    if _St.child:
        return
    data = _encode(msg) if data is None else data
    frame = len(data).to_bytes(4, "big") + data
    # A KeyboardInterrupt in the middle of a frame would desynchronise the
    # stream for good, so while the main thread writes, SIGINT is only noted
    # (busy=False makes _on_sigint set `pending`) and raised afterwards.
    main = _thread.get_ident() == _MAIN_THREAD
    was_busy = _St.busy
    if main:
        _St.busy = False
    try:
        with _SEND_LOCK:
            _write_all(_CTL, frame)
    except OSError:
        _exit(0)  # the supervisor is gone
    finally:
        if main and was_busy:
            _St.busy = True
            if _St.pending:
                _St.pending = False
                raise KeyboardInterrupt


_inbuf = bytearray()


def _read_frame():
    global _inbuf
    while True:
        want = 4
        if len(_inbuf) >= 4:
            size = int.from_bytes(_inbuf[:4], "big")
            if size > MAX_FRAME:
                _exit(3)  # before reading any of it
            if len(_inbuf) >= 4 + size:
                body, _inbuf = _inbuf[4:4 + size], _inbuf[4 + size:]
                return body
            want = 4 + size - len(_inbuf)
        try:
            # An idle SIGINT interrupts this read; PEP 475 retries it once
            # _on_sigint has returned, which it always does while idle.
            chunk = os.read(_CTL, min(max(want, 1 << 16), 1 << 24))
        except OSError:
            chunk = b""
        if not chunk:
            _exit(0)
        _inbuf += chunk


def _on_sigint(signum, frame):
    if _St.busy:
        raise KeyboardInterrupt
    _St.pending = True


def _after_fork_in_child():
    # If a cell forks and the child falls off the end of the cell, two
    # processes must not speak on one control socket: the child sends
    # nothing and exits when the cell returns (see _execute).
    _St.child = True
    try:
        os.close(_CTL)
    except OSError:
        pass


# ------------------------------------------------------------- MIME bundles

def _rich(obj, name, **kwargs):
    """obj.name(**kwargs), or None where that is missing or fails."""
    try:
        r = getattr(obj, name)(**kwargs)
    except Exception:
        return None  # like IPython: a failing rich repr is just left out
    return r[0] if isinstance(r, tuple) and len(r) == 2 else r  # (data, meta)


def _std_bundle(obj):
    """IPython's display protocol, for when IPython is not used."""
    data = {}
    # Classes would hand back unbound methods; objects that answer every
    # attribute (mocks, proxies) are caught with IPython's canary name.
    try:
        rich = not isinstance(obj, type) and getattr(
            obj, "_ipython_canary_method_should_not_exist_", None) is None
    except Exception:
        rich = False
    if rich:
        bundle = _rich(obj, "_repr_mimebundle_", include=None, exclude=None)
        if isinstance(bundle, dict):
            data.update(bundle)
        for name, mime in _MIME_REPRS:
            value = None if mime in data else _rich(obj, name)
            if value is not None:
                data[mime] = value
    if "text/plain" not in data:
        data["text/plain"] = repr(obj)
    return data


def _is_figure(obj):
    mod = sys.modules.get("matplotlib.figure")
    return mod is not None and isinstance(obj, mod.Figure)


def _figure_png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")  # as the inline backend
    return buf.getvalue()


def _bundle(obj):
    if _St.shell is not None:
        data = dict(_St.shell.display_formatter.format(obj)[0])
    else:
        data = _std_bundle(obj)
    if "image/png" not in data and _is_figure(obj):
        data["image/png"] = _figure_png(obj)
    return data


def _clean(data):
    """Make a bundle JSON-safe: str keys, base64 for bytes, no NaN."""
    out = {}
    for key, value in data.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = binascii.b2a_base64(bytes(value), newline=False).decode()
        elif not isinstance(value, str):
            try:
                json.dumps(value, allow_nan=False)
            except Exception:
                continue
        out[key] = value
    return out


def _emit(data, main):
    data = _clean(data)
    if not data:
        return  # e.g. IPython's formatter failed (and printed why)
    msg = {"ev": "result", "id": _St.id, "data": data, "main": main}
    encoded = _encode(msg)
    if len(encoded) > MAX_FRAME - 4096:
        # The supervisor would reject the frame (and with it the context):
        # degrade to a truncated text/plain.
        text = str(msg["data"].get("text/plain", ""))[:1 << 20]
        msg["data"] = {"text/plain": "%s\n[display data of %d bytes dropped: "
                       "over the frame limit]" % (text, len(encoded))}
        encoded = None
    _send(msg, encoded)


def display(*objs, raw=False, **kwargs):
    """Show objects as rich display data (standard-library display())."""
    for obj in objs:
        _emit(obj if raw and isinstance(obj, dict) else _bundle(obj), False)


def _publish(data, metadata=None, source=None, **kwargs):
    # Replaces IPython's DisplayPublisher.publish, which prints to stdout.
    _emit(data, False)


# ---------------------------------------------------------------- matplotlib

def _flush_figures():
    """Emit every open pyplot figure as display data and close them all."""
    plt = sys.modules.get("matplotlib.pyplot")
    helpers = sys.modules.get("matplotlib._pylab_helpers")
    if plt is None or helpers is None or not helpers.Gcf.get_all_fig_managers():
        return
    try:
        for manager in helpers.Gcf.get_all_fig_managers():
            fig = manager.canvas.figure
            _emit({"image/png": _figure_png(fig), "text/plain": repr(fig)}, False)
    finally:
        plt.close("all")


def _patch_pyplot(plt):
    """Make plt.show() emit and close the figures, as Jupyter's inline
    backend does: flushing only after the cell would merge `plt.plot(a);
    plt.show(); plt.plot(b); plt.show()` into one figure."""
    real = plt.show
    if getattr(real, "_rsandbox", False):
        return

    def show(*args, **kwargs):
        if sys.modules["matplotlib"].get_backend().lower() != "agg":
            return real(*args, **kwargs)
        _flush_figures()

    show._rsandbox = True
    show.__wrapped__ = real
    show.__doc__ = real.__doc__
    plt.show = show


class _PyplotHook:
    """Meta path finder that patches matplotlib.pyplot as it is imported,
    so that the very cell that imports it gets the inline-style show(),
    without the driver ever importing matplotlib itself."""

    def find_spec(self, name, path=None, target=None):
        if name != "matplotlib.pyplot":
            return None
        from importlib.machinery import PathFinder
        spec = PathFinder.find_spec(name, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return None  # an unusual install: _post_run patches it later
        real = loader.exec_module

        def exec_module(module):
            real(module)
            _patch_pyplot(module)

        loader.exec_module = exec_module
        return spec


# ------------------------------------------------------------------ IPython

def _want_ipython():
    flag = os.environ.get("RSANDBOX_CONTEXT_IPYTHON", "1").strip().lower()
    if flag in ("0", "false", "no", "off"):
        return False
    # Find IPython without importing it (that costs ~0.3 s and ~30 MiB).
    for finder in sys.meta_path:
        try:
            if finder.find_spec("IPython", None) is not None:
                return True
        except Exception:
            pass
    return False


def _shell():
    if _St.shell is not None or not _St.ipython:
        return _St.shell
    saved = sys.stdout, sys.stderr
    # What IPython says while starting (ipython dir not writable, virtualenv
    # warnings) is not the cell's output.
    sys.stdout = sys.stderr = io.StringIO()
    # Completion is no part of this protocol and jedi costs ~5 MiB and 100
    # modules: IPython sees it as missing; cells can still import it.
    block_jedi = "jedi" not in sys.modules
    if block_jedi:
        sys.modules["jedi"] = None
    try:
        from traitlets.config import Config
        from IPython.core.interactiveshell import InteractiveShell
        cfg = Config()
        cfg.HistoryManager.enabled = False  # no SQLite file under $HOME
        cfg.InteractiveShell.colors = "NoColor"
        shell = InteractiveShell.instance(config=cfg, user_module=_USER)
        shell.display_pub.publish = _publish
        shell.display_pub.clear_output = lambda wait=False: None
        # `!cmd` with the streams as they are (the child writes to fds 1/2,
        # stderr apart) rather than through a pexpect pty, which turns "\n"
        # into "\r\n", merges stderr into stdout and needs /dev/ptmx.
        shell.system = shell.system_raw
        # `%matplotlib inline` calls enable_gui, which only subclasses (the
        # terminal, ipykernel) implement; there is no GUI event loop here.
        shell.enable_gui = lambda gui=None: None
        # IPython's exit/quit only set a flag for its REPL loop: here they
        # would do nothing.  The builtins raise SystemExit (an error frame).
        for name in ("exit", "quit"):
            _NS.pop(name, None)
            shell.user_ns_hidden.pop(name, None)
        _St.shell = shell
    except Exception as e:
        _St.ipython = False
        saved[1].write("rsandbox: IPython unavailable (%s: %s); using the "
                       "standard-library driver\n" % (type(e).__name__, e))
    finally:
        if block_jedi and sys.modules.get("jedi", 0) is None:
            del sys.modules["jedi"]
        sys.stdout, sys.stderr = saved
    return _St.shell


# ---------------------------------------------------------------- execution

def _quiet(src, node):
    """True if the trailing expression is followed by ';' (Jupyter's rule)."""
    line = src.split("\n")[node.end_lineno - 1].encode("utf-8")  # offsets: bytes
    return line[node.end_col_offset:].decode("utf-8", "replace").lstrip().startswith(";")


def _eval(code):
    result = eval(code, _NS)
    if not code.co_flags & 0x80:  # CO_COROUTINE: the cell awaits at top level
        return result
    # As in Jupyter: run it to completion on an event loop that persists
    # across cells, so tasks that one cell starts progress in later ones.
    import asyncio
    if _St.loop is None:
        _St.loop = asyncio.new_event_loop()
    asyncio.set_event_loop(_St.loop)
    task = _St.loop.create_task(result)
    try:
        return _St.loop.run_until_complete(task)
    finally:
        if not task.done():
            task.cancel()  # interrupted: it must not resume in a later cell


def _run(src, n, echo=False, json_value=False):
    filename = "<cell-%d>" % n
    shell = _shell()
    code = src
    if shell is not None:
        # The events run_cell() would fire: %autoreload and other extensions
        # hook pre_run_cell / post_run_cell.
        from IPython.core.interactiveshell import ExecutionInfo, ExecutionResult
        try:
            info = ExecutionInfo(src, True, False, True, None)
        except TypeError:  # IPython 7: no cell_id
            info = ExecutionInfo(src, True, False, True)
        _St.run_result = ExecutionResult(info)
        _St.run_result.execution_count = shell.execution_count = n
        shell.events.trigger("pre_execute")
        shell.events.trigger("pre_run_cell", info)
        code = shell.transform_cell(src)  # %magics, !shell, %%cell magics
        shell.history_manager.store_inputs(n, code, src)  # In, _i, _iN
    # As linecache itself would: '\n'-split (splitlines() also splits at \f
    # or \u2028 and would shift line numbers), every line '\n'-terminated
    # (traceback aligns its carets on that).  mtime None: never evicted.
    lines = [line + "\n" for line in code.split("\n")]
    if code.endswith("\n"):
        lines.pop()
    linecache.cache[filename] = (len(code), None, lines, filename)
    tree = compile(code, filename, "exec", _ast.PyCF_ONLY_AST, dont_inherit=True)
    if echo:
        # "single" mode calls sys.displayhook on every expression statement,
        # which is what the interactive interpreter does line by line.
        saved, sys.displayhook = sys.displayhook, sys.__displayhook__
        try:
            _eval(compile(_ast.Interactive(body=tree.body), filename, "single",
                          _AWAIT, dont_inherit=True))
        finally:
            sys.displayhook = saved
        return
    last = None
    if tree.body and isinstance(tree.body[-1], _ast.Expr) and not _quiet(code, tree.body[-1]):
        last = tree.body.pop()
    if tree.body:
        _eval(compile(tree, filename, "exec", _AWAIT, dont_inherit=True))
    if last is None:
        return
    value = _eval(compile(_ast.Expression(body=last.value), filename, "eval",
                          _AWAIT, dont_inherit=True))
    if value is None:
        return
    data = _bundle(value)
    if json_value and "application/json" not in data:
        try:
            data["application/json"] = json.loads(json.dumps(value))
        except Exception:
            pass  # not JSON-serialisable: the repr stands
    if _is_figure(value) and "matplotlib.pyplot" in sys.modules:
        # Shown now: closing it keeps the end-of-cell flush (ours or the
        # inline backend's) from showing it a second time.
        sys.modules["matplotlib.pyplot"].close(value)
    if shell is not None:
        shell.displayhook.update_user_ns(value)  # _, __, _N, Out[N]
        _St.run_result.result = value
    else:
        _NS["_"] = value
    _emit(data, True)


def _post_run(exc):
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        _patch_pyplot(plt)
    if _St.shell is not None:
        _St.shell.events.trigger("post_execute")  # e.g. %matplotlib inline
        if _St.run_result is not None:
            _St.run_result.error_in_exec = exc
            _St.shell.events.trigger("post_run_cell", _St.run_result)
            _St.run_result = None
    _flush_figures()


def _guarded(fn, *args):
    """Run fn with SIGINT armed; return the exception it raised, if any."""
    try:
        try:
            _St.busy = True  # inside the try: an interrupt is always caught
            fn(*args)
        finally:
            _St.busy = False
            # A cell may have installed its own handler; between cells ours
            # must be back, or an idle SIGINT could kill the driver.
            if _signal.getsignal(_signal.SIGINT) is not _on_sigint:
                _signal.signal(_signal.SIGINT, _on_sigint)
    except BaseException as e:  # SystemExit included: the context goes on
        _St.busy = False
        return e
    return None


def _strip(tb):
    """Drop the driver's frames (and the asyncio ones that lead up to a cell
    that awaits), so a traceback starts at the cell."""
    keep = []
    while tb is not None:
        g = tb.tb_frame.f_globals
        if g is not _G and (keep or not str(g.get("__name__")).startswith("asyncio.")):
            keep.append(tb)
        tb = tb.tb_next
    for a, b in zip(keep, keep[1:] + [None]):
        a.tb_next = b
    return keep[0] if keep else None


def _report(exc):
    import traceback  # only needed once something fails
    seen, e = set(), exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        e.__traceback__ = _strip(e.__traceback__)
        e = e.__cause__ or e.__context__
    # For pdb.pm() and friends, as the REPL does.
    sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, exc.__traceback__
    if sys.version_info >= (3, 12):
        sys.last_exc = exc
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:
        text = "%s\n" % type(exc).__name__
    try:
        value = str(exc)
    except Exception:
        value = "<exception str() failed>"
    _send({"ev": "error", "id": _St.id, "name": type(exc).__name__,
           "value": value, "traceback": text})


def _mark(marker):
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass
    if "ctypes" in sys.modules:
        # C code that printf()ed to a pipe may still hold it in libc's buffer.
        try:
            sys.modules["ctypes"].CDLL(None).fflush(None)
        except Exception:
            pass
    line = (marker + "\n").encode("utf-8", "replace")
    for fd in (1, 2):
        try:
            _write_all(fd, line)
        except OSError:
            pass


def _execute(msg):
    _St.count += 1
    n = _St.count
    _St.id = msg["id"]
    _St.pending = False  # an idle SIGINT must not hit this cell
    exc = _guarded(_run, msg["code"], n, msg.get("echo") is True,
                   msg.get("json_value") is True)
    post_exc = _guarded(_post_run, exc)  # after errors too, as in Jupyter
    exc = post_exc if exc is None else exc
    if _St.child:
        _exit(0)  # a forked child came back out of its cell
    status = "ok"
    if exc is not None:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
        _report(exc)
    _mark(msg["marker"])
    _send({"ev": "done", "id": msg["id"], "status": status, "execution_count": n})


def main():
    _signal.signal(_signal.SIGINT, _on_sigint)
    os.register_at_fork(after_in_child=_after_fork_in_child)
    _St.ipython = _want_ipython()
    sys.meta_path.insert(0, _PyplotHook())
    builtins.display = display  # IPython replaces it with its own
    # Output reaches the supervisor line by line while a cell runs (progress
    # messages), not in 8 KiB blocks at its end; -u would instead cost a
    # write per print() argument.  (3.8 also block-buffers stderr.)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except Exception:
            pass
    _send({"ev": "ready", "python": "%d.%d.%d" % sys.version_info[:3],
           "ipython": _St.ipython, "pid": os.getpid()})
    while True:
        body = _read_frame()
        try:
            msg = json.loads(body.decode("utf-8"))
        except Exception:  # bad UTF-8 or JSON, or nested too deep
            _exit(3)
        if not isinstance(msg, dict):
            _exit(3)
        op = msg.get("op")
        if op == "ping":
            _send({"ev": "pong", "id": msg.get("id")})
        elif (op == "execute" and "id" in msg and isinstance(msg.get("code"), str)
              and isinstance(msg.get("marker"), str)):
            _execute(msg)
        else:
            _exit(3)  # unknown op or malformed execute: a supervisor bug


main()
