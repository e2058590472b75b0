"""Grading many candidate programs at once, the way an RL trainer does: map_run keeps the
daemon's slots busy, retries when its queue is full, and returns reports in order.

    python3 examples/python/grader.py
"""
import rsandbox

candidates = [f"def square(x):\n    return x * {'x' if i % 3 else '2'}\n" for i in range(200)]
tests = "\nassert square(3) == 9\nassert square(4) == 16\nprint('pass')\n"

with rsandbox.Client() as client:
    reports = client.map_run([c + tests for c in candidates], timeout=5, memory_mb=128)
    passed = sum(r.status == "ok" and r.stdout == "pass\n" for r in reports)
    print(f"{passed}/{len(reports)} passed")
