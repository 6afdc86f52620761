"""How often Ctrl-C leaves a lock held by ``with lock: pass``.

Run with ``python -m benchmarks.ctrl_c_window``.

For each kind of lock, a thread sends SIGINT to the main thread 1,000 times at
random moments while the main thread enters and leaves ``with lock:`` in a
loop; after each ``KeyboardInterrupt`` it counts whether the lock was left
held. ``threading.Lock`` (C ``__enter__``/``__exit__``) is the floor;
``threading.Condition`` has Python ``__enter__``/``__exit__``, like ours.
Each kind runs in its own child process. Not part of ``python -m benchmarks``:
its figure is a count, not a speed.
"""

from __future__ import annotations

import subprocess
import sys

KINDS = ["threading.Lock", "threading.Condition", "cancellable.Lock", "cancellable.RLock"]

CHILD = r"""
import random, signal, sys, threading, time
import cancellable
kind, n = sys.argv[1], int(sys.argv[2])
make = {"threading.Lock": threading.Lock, "threading.Condition": threading.Condition,
        "cancellable.Lock": cancellable.Lock, "cancellable.RLock": cancellable.RLock}[kind]
main = threading.main_thread().ident
go = threading.Event()

def send():
    rng = random.Random(1)
    for _ in range(n):
        go.wait()
        go.clear()
        time.sleep(rng.random() * 0.0002)  # a random moment of the loop
        signal.pthread_kill(main, signal.SIGINT)

threading.Thread(target=send, daemon=True).start()
leaks = 0
for _ in range(n):
    lock = make()
    go.set()
    try:
        while True:
            with lock:
                pass
    except KeyboardInterrupt:
        pass
    leaks += lock.locked() if kind == "threading.Lock" else lock._is_owned()
print(leaks)
"""


def main(n: int = 1000) -> None:
    """Print a markdown table of the counts."""
    print(f"| lock | left held after Ctrl-C, of {n:,} |")
    print("| --- | ---: |")
    for kind in KINDS:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, kind, str(n)],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout
        print(f"| `{kind}` | {int(out):,} |")


if __name__ == "__main__":
    main()
