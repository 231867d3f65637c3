"""Run nn.py with its writers hooked, to kill or signal it at a chosen point of saving.

    python tests/hooked_nn.py ACTION N NN_ARGS...

The writes are counted from 0: every np.savez, json.dump and Figure.savefig into a
file, in the order nn.py makes them. At write N, ACTION does:
    kill-before   SIGKILL before anything of write N is written (writes 0..N-1 are done)
    kill-midway   write half of write N's bytes, flush them, then SIGKILL
    term-midway   write half, send SIGTERM to itself, then write the rest and go on
The hooks sit in the serialisers, not in atomic.py, so that a test using them fails
when the outputs are written with a plain open() instead of atomic_write.
"""

import io
import json
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import matplotlib  # noqa: E402
import matplotlib.figure  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use("Agg")
ACTION, TARGET = sys.argv[1], int(sys.argv[2])
writes_started = 0


def hooked_write(destination, serialise):
    """Write serialise()'s bytes (or text) to the file object `destination`, acting on
    them when this is write number TARGET."""
    global writes_started
    number, writes_started = writes_started, writes_started + 1
    if number == TARGET and ACTION == "kill-before":
        os.kill(os.getpid(), signal.SIGKILL)
    content = serialise()
    half = len(content) // 2
    destination.write(content[:half])
    if number == TARGET:
        destination.flush()
        os.fsync(destination.fileno())
        os.kill(os.getpid(), signal.SIGKILL if ACTION == "kill-midway" else signal.SIGTERM)
    destination.write(content[half:])


def savez(file, **arrays):
    def serialise():
        buffer = io.BytesIO()
        original_savez(buffer, **arrays)
        return buffer.getvalue()
    hooked_write(file, serialise)


def dump(value, file, **options):
    hooked_write(file, lambda: json.dumps(value, **options))


def savefig(figure, file, **options):
    def serialise():
        buffer = io.BytesIO()
        original_savefig(figure, buffer, **options)
        return buffer.getvalue()
    if isinstance(file, (str, os.PathLike)):
        with open(file, "wb") as destination:
            return hooked_write(destination, serialise)
    hooked_write(file, serialise)


original_savez, original_savefig = np.savez, matplotlib.figure.Figure.savefig
np.savez, json.dump, matplotlib.figure.Figure.savefig = savez, dump, savefig

import nn  # noqa: E402

nn.picture_workers_wanted = lambda show: 0  # the pictures drawn here, where the hooks are (workers: test_picture_workers.py)
sys.exit(nn.main(sys.argv[3:]))
