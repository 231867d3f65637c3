#!/usr/bin/env python3
"""How long does POST /api/predict take for a 280x280 drawing? Target: 20 ms on one core.

    python benchmarks/serve_latency.py                     # the served model_mnist.npz, 200 requests a kind
    python benchmarks/serve_latency.py --model runs/model_mnist.npz --repeats 50

The server runs as `python nn.py serve` in its own process, pinned to one CPU
core with one BLAS thread; the client sends the page's requests over one
keep-alive connection, as the page does, after a warm-up:
  png   the whole canvas as RGBA PNG bytes (the page sends less: the square around the
        ink, at most 112x112, as serve_load.py does)
  json  the same drawing as 78,400 grey levels in JSON
and prints the median, 90th percentile and best round trip, and (on Linux) the
CPU time the server process spent per request: on a machine that other work
keeps busy, the round trips wait for the CPU, while the CPU time barely changes.
It then times the server's steps in this process, one at a time, to show where
the time goes.
With no model file, a model with random weights stands in (the time does not
depend on the weights).
"""

import argparse
import http.client
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before NumPy starts: one core's worth, as the server gets
PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

import numpy as np  # noqa: E402

TARGET_MS = 20


def drawing(size=280):
    """A '3' drawn with a round pen 20 px wide, as the page draws it: (size, size) grey in [0, 1]."""
    from PIL import Image, ImageDraw
    image = Image.new("L", (size, size), 0)
    pen = ImageDraw.Draw(image)
    angles = np.radians(np.linspace(-160, 90, 20))
    upper = [(140 + 50 * np.cos(a), 90 + 40 * np.sin(a)) for a in angles]
    lower = [(140 + 55 * np.cos(a), 180 + 45 * np.sin(a)) for a in np.radians(np.linspace(-90, 160, 20))]
    pen.line(upper + lower, fill=255, width=20, joint="curve")
    return np.asarray(image, dtype=np.float64) / 255


def png_bytes(grey):
    """The grey drawing as an opaque RGBA PNG, as the browser's canvas.toBlob makes it."""
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(np.round(grey * 255).astype(np.uint8)).convert("RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def start_server(model_path):
    """`python nn.py serve` on a free port, pinned to one core; returns (process, port)."""
    pin = (lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})) if hasattr(os, "sched_setaffinity") else None
    process = subprocess.Popen([sys.executable, str(PROJECT_DIR / "nn.py"), "serve", "--model", str(model_path),
                                "--port", "0"], stdout=subprocess.PIPE, text=True, preexec_fn=pin,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines = [process.stdout.readline()]  # "Model: ...", then "Serving ... at http://127.0.0.1:PORT/ ..."
    while lines[-1] and " at http://" not in lines[-1] and len(lines) < 5:
        lines.append(process.stdout.readline())
    line = lines[-1]
    if " at http://" not in line:
        process.kill()
        sys.exit(f"serve_latency.py: the server did not start: {''.join(lines).strip()}")
    return process, int(line.split(" at ")[-1].split()[0].rstrip("/").rsplit(":", 1)[1])


def cpu_seconds(pid):
    """User + system CPU seconds that process pid has used, from /proc (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def round_trips(port, body, content_type, repeats, warmup):
    """Milliseconds of each of `repeats` requests on one keep-alive connection, after `warmup`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    for index in range(warmup + repeats):
        start = time.perf_counter()
        connection.request("POST", "/api/predict", body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        answer = response.read()
        elapsed = 1000 * (time.perf_counter() - start)
        if response.status != 200:
            sys.exit(f"serve_latency.py: the server answered {response.status}: {answer[:200]!r}")
        if index >= warmup:
            times.append(elapsed)
    connection.close()
    return times


def milliseconds(function, repeats):
    """Median milliseconds of function() over repeats calls, after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def steps_in_process(model_path, grey, png, repeats):
    """[(step, median ms)] for the server's own steps, called directly."""
    from app import predict
    from app.page import server as serve
    served = serve.load_served_model(model_path)
    body = json.dumps({"width": 280, "height": 280, "pixels": grey.ravel().tolist()}).encode()
    answer = served.read(grey)
    return [
        ("decode PNG (predict.load_grey)", milliseconds(lambda: serve.grey_from_image(png), repeats)),
        ("parse JSON grey levels", milliseconds(lambda: serve.grey_from_json(body), repeats)),
        ("preprocess (predict.to_mnist)", milliseconds(lambda: predict.to_mnist(grey), repeats)),
        ("ServedModel.read (to_mnist, network, answer)", milliseconds(lambda: served.read(grey), repeats)),
        ("encode the answer as JSON (serve.to_json)", milliseconds(lambda: serve.to_json(answer), repeats)),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=PROJECT_DIR / "model_mnist.npz",
                        help="model file (default: model_mnist.npz beside nn.py; random weights if missing)")
    parser.add_argument("--repeats", type=int, default=200, help="timed requests of each kind (default: 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed requests first (default: 10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model_path = args.model
        if not model_path.exists():
            from mlp import MLP
            from app import model_file
            model_path = Path(folder) / "model_mnist.npz"
            model_file.save(MLP([784, 150, 150, 10], rng=np.random.default_rng(0)), model_path)
            print(f"{args.model} not found: timing a model with random weights")
        grey = drawing()
        png = png_bytes(grey)
        json_body = json.dumps({"width": 280, "height": 280, "pixels": grey.ravel().tolist()}).encode()
        process, port = start_server(model_path)
        try:
            print(f"POST /api/predict, a 280x280 drawing, server on one core, {args.repeats} requests each "
                  f"(target: {TARGET_MS} ms)")
            print(f"{'body':<28}{'median ms':>10}{'p90 ms':>9}{'best ms':>9}{'server CPU ms':>15}")
            for name, body, kind in ((f"png ({len(png):,} bytes)", png, "image/png"),
                                     (f"json ({len(json_body):,} bytes)", json_body, "application/json")):
                cpu_before = cpu_seconds(process.pid)
                times = sorted(round_trips(port, body, kind, args.repeats, args.warmup))
                cpu_after = cpu_seconds(process.pid)
                requests = args.repeats + args.warmup
                cpu = "-" if cpu_before is None else f"{1000 * (cpu_after - cpu_before) / requests:.2f}"
                print(f"{name:<28}{statistics.median(times):>10.2f}{times[int(0.9 * (len(times) - 1))]:>9.2f}"
                      f"{times[0]:>9.2f}{cpu:>15}")
        finally:
            process.terminate()
            process.wait(timeout=10)
        print("\nThe server's steps, called in this process (median ms):")
        for name, median in steps_in_process(model_path, grey, png, max(args.repeats // 4, 3)):
            print(f"  {name:<40}{median:>7.2f}")


if __name__ == "__main__":
    main()
