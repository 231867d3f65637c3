"""Runs of `python nn.py` started together into one --out folder: the save holds the
folder's lock (app/save.py), so every trained model is kept (in the folder or under
runs/), and the model, its stats.json and its run folder always describe the same run."""

import hashlib
import json
import subprocess
import sys

import numpy as np

from app import data, model_file
from conftest import PROJECT_DIR

ROUNDS = 20  # the first half two runs at once, the second half three


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_agrees(folder, test_set):
    """The model of `folder`, its stats.json and what the model itself says agree: the
    model's SHA-256, seed and steps, and the test accuracy recomputed from the model.
    Returns the stats."""
    stats = json.loads((folder / "stats.json").read_text())
    model, info = model_file.load(folder / "model_mnist.npz", with_info=True)
    assert stats["model_sha256"] == sha256(folder / "model_mnist.npz"), folder
    assert (stats["seed"], stats["steps"]) == (info["config"]["seed"], info["steps_done"]), folder
    images, labels = test_set
    accuracy = float(np.mean(model.predict(data.to_inputs(images)) == labels))
    assert stats["test_accuracy"] == round(accuracy, 6), folder
    return stats


def test_runs_saving_into_one_folder_at_once_keep_every_model_and_agree(tmp_path):
    images, labels, _ = data.load_csv(PROJECT_DIR / "datasets" / "mnist_test.csv")
    data_dir, out = tmp_path / "data", tmp_path / "out"
    data_dir.mkdir()
    data.write_csv(data_dir / "mnist_train.csv", images[:600], labels[:600])
    data.write_csv(data_dir / "mnist_test.csv", images[600:800], labels[600:800])
    test_set = (images[600:800], labels[600:800])
    command = [sys.executable, str(PROJECT_DIR / "nn.py"), "--data", str(data_dir), "--out", str(out),
               "--steps", "5", "--batch-size", "32", "--hidden", "16", "--eval-every", "0", "--quiet"]
    seeds = []
    for round_number in range(ROUNDS):
        together = 2 if round_number < ROUNDS // 2 else 3
        new_seeds = list(range(len(seeds), len(seeds) + together))
        runs = [subprocess.Popen(command + ["--seed", str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for seed in new_seeds]
        for run in runs:
            _, errors = run.communicate(timeout=300)
            assert run.returncode == 0, errors
        seeds += new_seeds
        stats = check_agrees(out, test_set)
        run_folder = out / stats["run_folder"]
        assert (run_folder / "model_mnist.npz").read_bytes() == (out / "model_mnist.npz").read_bytes(), round_number
        assert (run_folder / "stats.json").read_bytes() == (out / "stats.json").read_bytes(), round_number
    kept = sorted(check_agrees(folder, test_set)["seed"] for folder in (out / "runs").iterdir())
    assert kept == seeds  # each trained model in a run folder of its own, beside its own stats.json
    assert data.load_csv(data_dir / "mnist_train.csv")[2]  # a cache that one of them wrote, intact
    assert not list(out.glob(".*.tmp")) and not list(out.glob("runs/*/.*.tmp")) and not list(data_dir.glob(".*.tmp"))
