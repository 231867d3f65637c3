"""--optimizer momentum --momentum F reach the optimizer: read back from the model file's velocity.

Three short seeded runs on the same batches: one step (velocity v1 = g1), two steps with
momentum 0.5 (v2 = 0.5 g1 + g2), and two steps with momentum 0 (v2 = g2: the second step starts
from the same weights, since the first step does not depend on the momentum).
"""

import numpy as np

from conftest import EPS32, run_nn


def run_and_read(tmp_path, name, steps, momentum):
    """(flat weights [W0, b0, W1, b1, ...], saved velocity) after `steps` steps of classical momentum."""
    out = tmp_path / name
    result = run_nn("--dry-run", "--steps", steps, "--optimizer", "momentum", "--momentum", momentum,
                    "--lr", 0.01, "--eval-every", 0, "--quiet", "--out", out)
    assert result.returncode == 0, result.stderr
    with np.load(out / "model_mnist.npz", allow_pickle=False) as model:
        n_layers = len(model["activations"])
        weights = np.concatenate([model[f"layer{i}.{part}"].ravel()
                                  for i in range(n_layers) for part in ("weights", "bias")])
        return weights, model["optimizer.velocity.0"]


def test_momentum_flag_reaches_the_optimizer(tmp_path):
    weights_1, g1 = run_and_read(tmp_path, "one_step", 1, 0.5)
    weights_2, velocity = run_and_read(tmp_path, "two_steps", 2, 0.5)
    _, g2 = run_and_read(tmp_path, "no_momentum", 2, 0.0)
    # float32: 0.5 * g1 is exact and the sum is rounded once (half an ulp of each term's size);
    # the two runs' g2 are the same float operations on the same numbers: 2 ulps cover it.
    bound = 2 * EPS32 * (np.abs(0.5 * g1) + np.abs(g2))  # see above
    assert (np.abs(velocity - (0.5 * g1 + g2)) <= bound).all(), "--momentum 0.5 did not give v2 = 0.5 v1 + g2"
    # Classical momentum, not Nesterov: w2 = w1 - lr v2, a product and a subtraction rounded
    # once each: 2 ulps of |w1| + |lr v2|.
    expected = weights_1 - np.float32(0.01) * velocity
    bound = 2 * EPS32 * (np.abs(weights_1) + np.abs(0.01 * velocity))  # see above
    assert (np.abs(weights_2 - expected) <= bound).all(), "--optimizer momentum did not take a classical step"
