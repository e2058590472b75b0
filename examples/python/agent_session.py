"""An agent's sandbox: a session whose files and Python variables persist, with live output.

    python3 examples/python/agent_session.py
"""
import rsandbox

with rsandbox.Client() as client, client.session(memory_mb=512, network="loopback") as s:
    s.files.write("data.csv", "a,b\n1,2\n3,4\n")
    s.execute("import csv\nrows = list(csv.DictReader(open('data.csv')))")
    print(s.execute("sum(int(r['b']) for r in rows)").text)  # 6: `rows` is still there

    e = s.execute("1 / 0")
    print(e.status, e.error.name)  # error ZeroDivisionError; the context lives on

    for ev in s.execute_stream("import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.5)"):
        if ev.type == "stdout":
            print(ev.text, end="", flush=True)

    print([f.name for f in s.files.list()], s.usage().get("cpu_ms"))
