"""Run nn.py with its writes hooked, to kill or signal it at a chosen point of saving.

    python tests/hooked_nn.py ACTION N NN_ARGS...

The writes are counted from 0: every file the save writes (app/save.py's write_file), in
the order it writes them. At write N, ACTION does:
    kill-before   SIGKILL before anything of write N is written (writes 0..N-1 are done)
    kill-midway   write half of write N's bytes, flush them, then SIGKILL
    term-midway   write half, send SIGTERM to itself, then write the rest and go on
The hooks sit in the file objects that atomic_write hands to the save, not in atomic.py,
so that a test using them fails when the outputs are written with a plain open() instead
of atomic_write (the hooks then never fire).
"""

import contextlib
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import save  # noqa: E402

ACTION, TARGET = sys.argv[1], int(sys.argv[2])
writes_started = 0


class HookedFile:
    """The file object of an atomic write, whose write() acts on write number TARGET."""

    def __init__(self, file):
        self.file = file

    def write(self, content):
        global writes_started
        number, writes_started = writes_started, writes_started + 1
        if number == TARGET and ACTION == "kill-before":
            os.kill(os.getpid(), signal.SIGKILL)
        half = len(content) // 2
        self.file.write(content[:half])
        if number == TARGET:
            self.file.flush()
            os.fsync(self.file.fileno())
            os.kill(os.getpid(), signal.SIGKILL if ACTION == "kill-midway" else signal.SIGTERM)
        self.file.write(content[half:])


real_atomic_write = save.atomic_write


@contextlib.contextmanager
def hooked_atomic_write(path, mode="wb"):
    with real_atomic_write(path, mode) as file:
        yield HookedFile(file)


save.atomic_write = hooked_atomic_write

import nn  # noqa: E402

sys.exit(nn.main(sys.argv[3:]))
