"""rsandbox from Python: a one-shot run, a failing program, and limits.

    pip install ./clients/python
    rsandbox serve &            # or point RSANDBOX_URL at a daemon (unix:PATH or http://...)
    python3 examples/python/quickstart.py
"""
import rsandbox

with rsandbox.Client() as client:
    r = client.run("import sys; print(sys.stdin.read().upper())", stdin="hello", timeout=5, memory_mb=256)
    print(r.status, r.exit_code, repr(r.stdout), f"{r.wall_ms:.1f} ms")

    # A program that fails is a report, not an exception.
    r = client.run("x = [0] * 10**9", memory_mb=64)
    print(r.status, r.limits_hit)

    # Files in, files out, any program.
    r = client.run(argv=["/bin/sh", "-c", "wc -w < in.txt > n.txt"], files={"in.txt": "1 2 3"}, fetch=["n.txt"])
    print(r.files["n.txt"])

    # Asking for more than the daemon allows is refused with its reason.
    try:
        client.run("print(1)", memory_mb=10**6)
    except rsandbox.InvalidRequest as e:
        print("refused:", e.message)
