#!/usr/bin/env python3
"""A class drawing at once: how fast does `python nn.py serve --host 0.0.0.0` read for 1, 10 and 30 people?

    python benchmarks/serve_load.py                          # the served model_mnist.npz
    python benchmarks/serve_load.py --model runs/model_mnist.npz --clients 1 10 30 --seconds 60

The server runs as a teacher starts it, `python nn.py serve --host 0.0.0.0`, in its own
process; the clients connect over loopback only (127.0.0.1). Each client is a thread that
does what the page does while someone draws: one POST /api/predict at a time over its
own keep-alive connection, a drawing as PNG, the next as soon as the answer is in
(no pause: a pen moving sends one per move). The drawings are ten MNIST test digits
scaled up to the 280x280 canvas and sent as the page sends them: the square around the
ink, at most 112x112, as RGBA PNGs (what the browser's canvas.toBlob makes). The digit
of each was read beforehand in this process by the same code (serve.ServedModel.read),
so an answer naming another digit counts as wrong.

For each number of clients it prints readings per second, the round trips' p50, p95,
p99 and worst, the errors (any status but 200, a connection refused or reset), the
wrong readings, the server's CPU time per reading and its memory (resident set) at
the start and end of the run and its peak, and the load average: the clients run on
the same machine, and on a machine others share the figures move with their work.
The load is bounded: --seconds per level and at most --max-requests in all.
"""

import argparse
import http.client
import io
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy starts, as nn.py sets it for the server
PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

import numpy as np  # noqa: E402

DIGIT = re.compile(rb'"digit":(\d+)')


def canvases(count=10):
    """[PNG bytes]: the first MNIST test image of each digit, scaled to a 280x280 canvas, white
    ink on black, as the page sends it (as_the_page_sends) and opaque RGBA, as a canvas's PNG is."""
    from PIL import Image
    from app import data
    images, labels, _ = data.load_csv(PROJECT_DIR / "datasets" / "mnist_test.csv")
    chosen = [int(np.flatnonzero(labels == digit)[0]) for digit in range(count)]
    result = []
    for index in chosen:
        picture = Image.fromarray(images[index].reshape(28, 28).astype(np.uint8)).resize((280, 280), Image.BILINEAR)
        picture = as_the_page_sends(picture).convert("RGBA")
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        result.append(buffer.getvalue())
    return result


def as_the_page_sends(picture, most=112):
    """The square of a canvas (a Pillow image, white ink on black) that the page sends (app.js's
    canvasAsPng): around the ink, 2.5 times its longer side, within the canvas, scaled down to at
    most `most` pixels a side."""
    from PIL import Image
    ink = np.asarray(picture) > 0
    rows, columns = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    height, width = ink.shape
    side = min(int(2.5 * max(rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1) + 0.5), width, height)
    top = min(max(round((rows[0] + rows[-1] + 1 - side) / 2), 0), height - side)
    left = min(max(round((columns[0] + columns[-1] + 1 - side) / 2), 0), width - side)
    square = picture.crop((left, top, left + side, top + side))
    return square.resize((most, most), Image.BOX) if side > most else square


def png_size(body):
    """(width, height) of PNG bytes, from their header."""
    return int.from_bytes(body[16:20], "big"), int.from_bytes(body[20:24], "big")


def expected_digits(model_path, bodies):
    from app.page import server as serve
    served = serve.load_served_model(model_path)
    return [served.read(serve.grey_from_image(body))["digit"] for body in bodies]


def start_server(model_path):
    """`python nn.py serve --host 0.0.0.0 --port 0`; returns (process, port)."""
    process = subprocess.Popen([sys.executable, str(PROJECT_DIR / "nn.py"), "serve", "--model", str(model_path),
                                "--host", "0.0.0.0", "--port", "0"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines = [process.stdout.readline()]
    while lines[-1] and " at http://" not in lines[-1] and len(lines) < 5:
        lines.append(process.stdout.readline())
    if " at http://" not in lines[-1]:
        process.kill()
        sys.exit(f"serve_load.py: the server did not start: {''.join(lines).strip()}")
    return process, int(lines[-1].split(" at ")[-1].split()[0].rstrip("/").rsplit(":", 1)[1])


def cpu_seconds(pid):
    """User + system CPU seconds of process pid, from /proc (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_mb(pid):
    """The resident set of process pid in MB, from /proc (Linux); None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Level:
    """What the clients of one run saw: round trips in ms, errors, wrong readings."""

    def __init__(self):
        self.lock = threading.Lock()
        self.times, self.errors, self.wrong, self.first_error = [], 0, 0, None


def client(port, bodies, expected, offset, level, stop_at, budget):
    """Send the drawings in turn from `offset`, one at a time over one keep-alive connection,
    until stop_at (time.monotonic) or the shared request budget is spent."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    index = offset
    while time.monotonic() < stop_at and budget.acquire(blocking=False):
        body, digit = bodies[index % len(bodies)], expected[index % len(bodies)]
        index += 1
        started = time.perf_counter()
        try:
            connection.request("POST", "/api/predict", body=body, headers={"Content-Type": "image/png"})
            response = connection.getresponse()
            answer = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            with level.lock:
                level.errors += 1
                level.first_error = level.first_error or f"{type(error).__name__}: {error}"
            continue
        elapsed = 1000 * (time.perf_counter() - started)
        found = DIGIT.search(answer)
        with level.lock:
            if status != 200:
                level.errors += 1
                level.first_error = level.first_error or f"status {status}: {answer[:120]!r}"
            elif found is None or int(found[1]) != digit:
                level.wrong += 1
            else:
                level.times.append(elapsed)
    connection.close()


def run_level(port, pid, clients, seconds, bodies, expected, budget):
    """One run of `clients` clients for `seconds`; returns a dict of its figures."""
    level = Level()
    memory = [resident_mb(pid)]
    cpu_before, started = cpu_seconds(pid), time.monotonic()
    stop_at = started + seconds
    threads = [threading.Thread(target=client, args=(port, bodies, expected, number, level, stop_at, budget))
               for number in range(clients)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        time.sleep(1)
        memory.append(resident_mb(pid))
    elapsed = time.monotonic() - started
    cpu_after = cpu_seconds(pid)
    times = np.array(level.times)
    done = len(times) + level.wrong
    percentile = (lambda q: float(np.percentile(times, q))) if len(times) else (lambda q: float("nan"))
    return {"clients": clients, "readings": done, "per_s": done / elapsed, "p50": percentile(50),
            "p95": percentile(95), "p99": percentile(99), "worst": float(times.max()) if len(times) else float("nan"),
            "errors": level.errors, "wrong": level.wrong, "first_error": level.first_error,
            "cpu_ms": None if cpu_before is None or not done else 1000 * (cpu_after - cpu_before) / done,
            "memory": [m for m in memory if m is not None], "load": os.getloadavg()[0]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=PROJECT_DIR / "model_mnist.npz",
                        help="model file (default: model_mnist.npz beside nn.py; random weights if missing)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 30],
                        help="numbers of clients, one run each (default: 1 10 30)")
    parser.add_argument("--seconds", type=float, default=20, help="seconds each run lasts (default: 20)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of one client first, not counted (default: 2)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="requests in all, at most (default: 200000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model_path = args.model
        if not model_path.exists():
            from app import model_file
            from mlp import MLP
            model_path = Path(folder) / "model_mnist.npz"
            model_file.save(MLP([784, 150, 150, 10], rng=np.random.default_rng(0)), model_path)
            print(f"{args.model} not found: a model with random weights (the time does not depend on them)")
        bodies = canvases()
        sides = " or ".join(sorted({"{}x{}".format(*png_size(body)) for body in bodies}))
        expected = expected_digits(model_path, bodies)
        process, port = start_server(model_path)
        budget = threading.Semaphore(args.max_requests)
        try:
            run_level(port, process.pid, 1, args.warmup, bodies, expected, budget)
            cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if sys.platform == "linux" else ""
            model_name = next((line.split(":", 1)[1].strip() for line in cpu.splitlines()
                               if line.startswith("Model name")), "?")
            print(f"POST /api/predict with {sides} PNG drawings ({len(bodies[0]):,}-{max(map(len, bodies)):,} bytes), "
                  f"`nn.py serve --host 0.0.0.0`, clients over 127.0.0.1 on the same machine; "
                  f"{model_name}, {os.cpu_count()} CPUs; {args.seconds:g} s a run")
            print(f"{'clients':>7}{'readings/s':>11}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'worst ms':>9}"
                  f"{'errors':>7}{'wrong':>6}{'CPU ms/reading':>15}{'memory MB (start, end, peak)':>30}{'load':>10}")
            for clients in args.clients:
                load_before = os.getloadavg()[0]
                figures = run_level(port, process.pid, clients, args.seconds, bodies, expected, budget)
                memory = figures["memory"]
                memory_text = f"{memory[0]:.0f}, {memory[-1]:.0f}, {max(memory):.0f}" if memory else "-"
                cpu_text = "-" if figures["cpu_ms"] is None else f"{figures['cpu_ms']:.1f}"
                load_text = f"{load_before:.1f}-{figures['load']:.1f}"
                print(f"{clients:>7}{figures['per_s']:>11.1f}{figures['p50']:>8.1f}{figures['p95']:>8.1f}"
                      f"{figures['p99']:>8.1f}{figures['worst']:>9.1f}{figures['errors']:>7}{figures['wrong']:>6}"
                      f"{cpu_text:>15}{memory_text:>30}{load_text:>10}")
                if figures["first_error"]:
                    print(f"        first error: {figures['first_error']}")
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
