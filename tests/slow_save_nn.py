"""Run nn.py with a slow stats.json write, to signal a server while it saves a run.

    python tests/slow_save_nn.py MARKER NN_ARGS...

Every nn.write_json (stats.json is the last output nn.save_run writes) first creates
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

SLOW_SECONDS = 3
MARKER = Path(sys.argv[1])
write_json = nn.write_json


def slow_write_json(path, value):
    MARKER.touch()
    time.sleep(SLOW_SECONDS)
    write_json(path, value)


nn.write_json = slow_write_json
sys.exit(nn.main(sys.argv[2:]))
