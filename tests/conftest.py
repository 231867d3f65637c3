"""Shared helpers: the project root on sys.path, finite differences, running nn.py."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))


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


def assert_close_gradients(analytic, numeric, tolerance=1e-6):
    """Relative error |a - n| / max(|a| + |n|, 1e-3) below tolerance, everywhere (the floor
    keeps the round-off of finite differences, about 1e-10, from failing near-zero gradients)."""
    error = np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), 1e-3)
    assert error.max() < tolerance, f"relative error {error.max():.2e}"


def run_nn(*args, timeout=600, env=None):
    """Run `python nn.py ARGS` in a subprocess; returns the CompletedProcess (text)."""
    environment = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, str(PROJECT_DIR / "nn.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=environment)
