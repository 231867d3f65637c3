"""Run nn.py with a slow stats.json write, to signal a server while it saves a run.

    python tests/slow_save_nn.py MARKER NN_ARGS...

Every save.write_stats (stats.json is the last output save.save_run writes) first creates
the file MARKER, then waits SLOW_SECONDS before writing: a test that sees MARKER
knows that the model and the pictures are written and stats.json is not yet.
"""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nn  # noqa: E402
from app import save  # noqa: E402

SLOW_SECONDS = 3
MARKER = Path(sys.argv[1])
write_stats = save.write_stats


def slow_write_stats(paths, stats, stop):
    MARKER.touch()
    time.sleep(SLOW_SECONDS)
    write_stats(paths, stats, stop)


save.write_stats = slow_write_stats
sys.exit(nn.main(sys.argv[2:]))
