"""benchmarks/not_training.py: where the time of a run goes outside training."""

import re
import subprocess
import sys

from conftest import PROJECT_DIR

SCRIPT = PROJECT_DIR / "benchmarks" / "not_training.py"


def run_script(*arguments):
    return subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=300)


def test_it_times_every_part_of_a_short_run():
    result = run_script("--repeats", "1", "--", "--dry-run", "--steps", "20", "--eval-every", "10")
    assert result.returncode == 0, result.stderr
    times = {match[0].strip(): float(match[1]) for match in re.findall(r"^ +(.+?) +([\d.]+) ms", result.stdout, re.M)}
    for part in ("import Matplotlib's Agg canvas", "load the data (CSV caches)", "evaluations during training (a thread of their own)",
                 "training_loss_graph.png", "accuracy_graph.png", "weights.png", "stats.json (and its copy)",
                 "exit (after nn.py's last line)"):
        assert part in times, (part, result.stdout)
    wall = float(re.search(r"the whole process: wall, CPU +([\d.]+) ms", result.stdout)[1])
    # The parts run one after another inside the process: together they fit in its wall time.
    top_level = ["import NumPy", "import nn.py and its modules", "import Matplotlib's Agg canvas", "load the data (CSV caches)",
                 "train (with the evaluations it waits for)", "evaluate the test set after training",
                 "save: model, pictures, stats.json, copies", "exit (after nn.py's last line)"]
    assert 0 < sum(times[part] for part in top_level) <= wall
    assert times["evaluations during training (a thread of their own)"] <= times["train (with the evaluations it waits for)"]


def test_the_test_set_after_training_is_not_counted_with_the_evaluations_during_it():
    """monitor.evaluate serves both the evaluations during training (inside train) and the test
    set after it: the row of the latter counted all 40 evaluations of the run below again,
    and the top-level parts added up to more than the whole process."""
    result = run_script("--repeats", "1", "--", "--dry-run", "--steps", "40", "--eval-every", "1")
    assert result.returncode == 0, result.stderr
    times = {match[0].strip(): float(match[1]) for match in re.findall(r"^ +(.+?) +([\d.]+) ms", result.stdout, re.M)}
    # one evaluation of the test set against forty: shorter, however the machine is loaded
    assert times["evaluate the test set after training"] < times["evaluations during training (a thread of their own)"], result.stdout


def test_a_failing_run_is_one_line_naming_its_flags():
    result = run_script("--repeats", "1", "--", "--steps", "-5")
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "nn.py --steps -5 failed (exit 2)" in result.stderr and "--steps" in result.stderr
