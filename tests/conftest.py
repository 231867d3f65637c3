"""Shared helpers: the project root on sys.path, finite differences, running nn.py."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

# A suite started where Ctrl-C is ignored (a background job of a script) would pass that on to
# every program it starts, which keep it ignored as they should (signals.StopRequest), and the tests
# that stop nn.py or serve with SIGINT, as a terminal's Ctrl-C does, would wait for them in vain.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def numerical_gradient(f, x, eps=1e-6):
    """Central-difference gradient of the scalar f() with respect to the float64 array x,
    which f reads (x is perturbed in place and restored)."""
    gradient = np.zeros_like(x)
    flat, flat_gradient = x.reshape(-1), gradient.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        up = f()
        flat[i] = saved - eps
        down = f()
        flat[i] = saved
        flat_gradient[i] = (up - down) / (2 * eps)
    return gradient


# Float tolerances follow from the arithmetic, never from what passed on one machine:
# another CPU's BLAS kernel (AVX2, AVX-512, NEON) adds the same products in another order.
EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7, the gap between 1 and the next float32


def gamma(n_terms, eps=EPS32):
    """Bound on the relative rounding error of a sum of n_terms products, whatever the order
    of addition, relative to the sum of the terms' absolute values: n eps / (1 - n eps)
    (Higham, Accuracy and Stability of Numerical Algorithms, section 3.1)."""
    return n_terms * eps / (1 - n_terms * eps)


def assert_close_sums(actual, expected, magnitude, n_terms, eps=EPS32):
    """Two computations of the same sums of n_terms products agree within what rounding
    allows in any order: each is within gamma(n_terms) * magnitude of the exact sums
    (magnitude: the sums of the terms' absolute values, shaped like actual), and a few
    further operations (a scaling, a division) add a few ulps of the result."""
    bound = 2 * gamma(n_terms, eps) * magnitude + 4 * eps * np.abs(expected)
    excess = np.abs(actual - expected) - bound
    assert (excess <= 0).all(), f"differ beyond the rounding bound by up to {excess.max():.3g}"


def assert_close_gradients(analytic, numeric, tolerance=1e-6):  # float64 differences: see below
    """Relative error |a - n| / max(|a| + |n|, 1e-3) below tolerance, everywhere.

    In float64 with a step of 1e-6, a central difference errs by about 1e-12 (truncation)
    plus 1e-16 / 1e-6 = 1e-10 (round-off), so 1e-6 leaves a wide margin, while a wrong
    gradient (a missing factor, a transposed product) errs by 1e-2 or more. The floor 1e-3
    keeps that round-off from failing near-zero gradients."""
    error = np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), 1e-3)
    assert error.max() < tolerance, f"relative error {error.max():.2e}"


def run_nn(*args, timeout=600, env=None):
    """Run `python nn.py ARGS` in a subprocess; returns the CompletedProcess (text)."""
    environment = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, str(PROJECT_DIR / "nn.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=environment)


def start_server(model_path, *args, program=(PROJECT_DIR / "nn.py",)):
    """Start `python nn.py serve --model model_path --port 0 ARGS`; returns (process, base URL)
    once it listens. The caller stops it (process.terminate(), or SIGINT). program: what
    runs instead of nn.py (a hooked copy, with its own arguments first)."""
    process = subprocess.Popen([sys.executable, *map(str, program), "serve", "--model", str(model_path),
                                "--port", "0", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    process.startup_lines = []  # "Model: ..." then "Serving MODEL at http://127.0.0.1:PORT/  (Ctrl-C stops)"
    while len(process.startup_lines) < 5 and " at http://" not in "".join(process.startup_lines[-1:]):
        process.startup_lines.append(process.stdout.readline())
    line = process.startup_lines[-1]
    if " at http://" not in line:
        process.kill()
        raise AssertionError(f"the server did not start: {''.join(process.startup_lines)}{process.stderr.read()}")
    return process, line.split(" at ")[-1].split()[0]
