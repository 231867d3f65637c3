#!/usr/bin/env python3
"""Does training in the server (`python nn.py serve`, the Train button) run as fast as
`python nn.py`? Target: its training loop takes at most 10 % longer.

    python benchmarks/serve_training.py                   # 5,000 steps, 3 rounds of each
    python benchmarks/serve_training.py --steps 20000 --rounds 5

Each round trains the default configuration for --steps steps twice, in turn:
  nn.py   `python nn.py --steps N --quiet` in its own process;
  serve   `python nn.py serve` in its own process, the run started with POST /api/train,
          while a client does what the page does during a run: every 0.6 s it asks
          GET /api/train (the curve, the evaluations, 36 units' weights) and reads a
          drawing again with POST /api/predict.
Both processes are pinned to the same single CPU core with one BLAS thread, so that
the server's request handling competes with its training for that core. The time
compared is the training loop's own, train_time_s in the stats.json that each writes
(data loading and saving excluded), and the ratio is printed with both medians.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.10
POLL_SECONDS = 0.6


def pinned():
    """preexec_fn for a subprocess on this process's first allowed core only."""
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        return lambda: os.sched_setaffinity(0, {core})
    return None


def environment():
    return dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def time_nn(steps, folder):
    """train_time_s of `python nn.py --steps steps` writing into folder."""
    subprocess.run([sys.executable, str(PROJECT_DIR / "nn.py"), "--steps", str(steps), "--out", str(folder),
                    "--quiet"], check=True, capture_output=True, env=environment(), preexec_fn=pinned())
    return json.loads((folder / "stats.json").read_text())["train_time_s"]


def time_serve(steps, folder):
    """train_time_s of a run started on the page's server, with a client polling as the page does."""
    model_path = folder / "model_mnist.npz"
    if not model_path.exists():
        sys.path.insert(0, str(PROJECT_DIR))
        import numpy as np
        from mlp import MLP
        from app import model_file
        model_file.save(MLP([784, 150, 150, 10], rng=np.random.default_rng(0)), model_path)
    process = subprocess.Popen([sys.executable, str(PROJECT_DIR / "nn.py"), "serve", "--model", str(model_path),
                                "--port", "0"], stdout=subprocess.PIPE, text=True, env=environment(),
                               preexec_fn=pinned())
    try:
        line = ""
        while " at http://" not in line:  # "Model: ...", then "Serving ... at http://127.0.0.1:PORT/ ..."
            line = process.stdout.readline()
            if not line:
                sys.exit("serve_training.py: the server did not start")
        port = int(line.split(" at ")[-1].split()[0].rstrip("/").rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def ask(method, path, value=None):
            body = None if value is None else json.dumps(value)
            connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
            return json.loads(connection.getresponse().read())

        drawing = {"width": 28, "height": 28, "pixels": [0.0] * 280 + ([0.0] * 10 + [1.0] * 8 + [0.0] * 10) * 8
                   + [0.0] * 280}
        ask("POST", "/api/train", {"steps": steps})
        while True:
            time.sleep(POLL_SECONDS)
            state = ask("GET", "/api/train")
            ask("POST", "/api/predict", drawing)
            if state["status"] not in ("loading", "running"):
                break
        if state["status"] == "stopped" and state["message"].startswith("Completed"):  # it asks first: save it
            state = ask("POST", "/api/train/save", {"save": True})
        if state["status"] != "saved":
            raise SystemExit(f"serve_training.py: the server's run ended {state['status']}: {state['message']}")
        return json.loads((folder / "stats.json").read_text())["train_time_s"]
    finally:
        process.terminate()
        process.wait(timeout=60)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5000, help="training steps of each run (default: 5000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each kind, taken in turn (default: 3)")
    args = parser.parse_args(argv)
    times = {"nn.py": [], "serve": []}
    with tempfile.TemporaryDirectory() as scratch:
        for kind in times:
            (Path(scratch) / kind).mkdir()
        for round_number in range(1, args.rounds + 1):
            times["nn.py"].append(time_nn(args.steps, Path(scratch) / "nn.py"))
            times["serve"].append(time_serve(args.steps, Path(scratch) / "serve"))
            print(f"round {round_number}: nn.py {times['nn.py'][-1]:.2f} s, serve {times['serve'][-1]:.2f} s",
                  flush=True)
    nn_median, serve_median = statistics.median(times["nn.py"]), statistics.median(times["serve"])
    ratio = serve_median / nn_median
    print(f"training loop, {args.steps:,} steps, median of {args.rounds}: nn.py {nn_median:.2f} s "
          f"({args.steps / nn_median:.0f} steps/s), serve {serve_median:.2f} s ({args.steps / serve_median:.0f} steps/s)")
    print(f"serve / nn.py = {ratio:.3f} (target at most {TARGET_RATIO:.2f}): "
          f"{'within' if ratio <= TARGET_RATIO else 'OVER'} the target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
