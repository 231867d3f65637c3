"""Optimizers and learning-rate schedules, step by step against their published update rules.

The references below are PyTorch's documented update rules (torch.optim.SGD with momentum and
dampening 0, torch.optim.Adam), written out again in float64 NumPy, one line per formula, so
that a test never asks the code under test for its expected value.
"""

import math

import numpy as np
import pytest

from optimizers import OPTIMIZERS, SGD, Adam, Momentum, learning_rate_at, make_optimizer

# float64 on both sides: the same formulas in another order differ by a few ulps a step,
# about 1e-15 after ten steps of values near 1; 1e-12 leaves a wide margin, while every wrong
# formula tested here moves a parameter by 1e-4 of itself or more.
RTOL64 = 1e-12

N_STEPS = 8
LEARNING_RATES = [0.1, 0.05, 0.2, 0.1, 0.01, 0.3, 0.1, 0.07]  # a new rate each step, as schedules give


def gradient_sequence(seed=0):
    """N_STEPS gradients for a parameter of 5 numbers, of mixed signs and magnitudes."""
    rng = np.random.default_rng(seed)
    return [rng.normal(size=5) * rng.choice([0.01, 1.0, 5.0], size=5) for _ in range(N_STEPS)]


def run(optimizer, gradients):
    """Parameters after each step of optimizer from p0 = [1, -2, 3, 0.5, 0], as a list."""
    p = np.array([1.0, -2.0, 3.0, 0.5, 0.0])
    trajectory = []
    for g, learning_rate in zip(gradients, LEARNING_RATES):
        g_before = g.copy()
        optimizer.step([p], [g], learning_rate)
        assert np.array_equal(g, g_before), "an optimizer only reads the gradients"
        trajectory.append(p.copy())
    return trajectory


def momentum_reference(gradients, momentum, nesterov):
    """torch.optim.SGD(momentum=mu, nesterov=...): b <- mu b + g (b = g at the first step);
    p <- p - lr b, or with Nesterov p <- p - lr (g + mu b), b the velocity after its update."""
    p = np.array([1.0, -2.0, 3.0, 0.5, 0.0])
    b = np.zeros(5)
    trajectory = []
    for g, learning_rate in zip(gradients, LEARNING_RATES):
        b = momentum * b + g
        p = p - learning_rate * ((g + momentum * b) if nesterov else b)
        trajectory.append(p)
    return trajectory


def adam_reference(gradients, beta1=0.9, beta2=0.999, eps=1e-8):
    """torch.optim.Adam: m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2;
    p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps), t = 1, 2, ..."""
    p = np.array([1.0, -2.0, 3.0, 0.5, 0.0])
    m, v = np.zeros(5), np.zeros(5)
    trajectory = []
    for t, (g, learning_rate) in enumerate(zip(gradients, LEARNING_RATES), start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        p = p - learning_rate * m_hat / (np.sqrt(v_hat) + eps)
        trajectory.append(p)
    return trajectory


def assert_same_trajectory(actual, expected):
    for step, (a, e) in enumerate(zip(actual, expected, strict=True)):
        np.testing.assert_allclose(a, e, rtol=RTOL64, atol=RTOL64, err_msg=f"step {step}")  # see RTOL64


# ------------------------------------------------------------------ momentum

@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("momentum", [0.9, 0.5])
def test_momentum_step_by_step(momentum, nesterov):
    gradients = gradient_sequence()
    assert_same_trajectory(run(Momentum(momentum, nesterov=nesterov), gradients),
                           momentum_reference(gradients, momentum, nesterov))


def test_momentum_worked_out_by_hand():
    # mu = 0.5, lr = 1, gradients 1 then 2.  Classical: v1 = 1, p1 = -1; v2 = 0.5 + 2 = 2.5, p2 = -3.5.
    # Nesterov: p1 = -(1 + 0.5 * 1) = -1.5; p2 = -1.5 - (2 + 0.5 * 2.5) = -4.75.  All exact in binary.
    for nesterov, expected in ((False, [-1.0, -3.5]), (True, [-1.5, -4.75])):
        optimizer, p = Momentum(0.5, nesterov=nesterov), np.zeros(1)
        for g, want in zip((1.0, 2.0), expected):
            optimizer.step([p], [np.array([g])], 1.0)
            assert p[0] == want, (nesterov, g)


def test_momentum_defaults_to_classical_with_0_9():
    gradients = gradient_sequence(1)
    assert_same_trajectory(run(Momentum(), gradients), momentum_reference(gradients, 0.9, nesterov=False))


@pytest.mark.parametrize("name, nesterov", [("momentum", False), ("nesterov", True)])
def test_make_optimizer_builds_what_its_name_and_momentum_say(name, nesterov):
    gradients = gradient_sequence(2)
    for momentum in (0.5, 0.0, 0.95):
        assert_same_trajectory(run(make_optimizer(name, momentum), gradients),
                               momentum_reference(gradients, momentum, nesterov))
    assert_same_trajectory(run(make_optimizer(name), gradients), momentum_reference(gradients, 0.9, nesterov))


def test_momentum_velocity_is_its_state_and_resumes_exactly():
    gradients = gradient_sequence(3)
    whole = run(Momentum(0.8, nesterov=True), gradients)
    first = Momentum(0.8, nesterov=True)
    p = np.array([1.0, -2.0, 3.0, 0.5, 0.0])
    for g, learning_rate in zip(gradients[:3], LEARNING_RATES[:3]):
        first.step([p], [g], learning_rate)
    numbers, arrays = first.state()
    assert numbers == {} and set(arrays) == {"velocity.0"}
    second = Momentum(0.8, nesterov=True)
    second.load_state(numbers, {name: array.copy() for name, array in arrays.items()})
    for g, learning_rate in zip(gradients[3:], LEARNING_RATES[3:]):
        second.step([p], [g], learning_rate)
    assert np.array_equal(p, whole[-1])  # the same operations on the same numbers: exact


def test_momentum_state_before_any_step_is_empty_and_loads():
    assert Momentum().state() == ({}, {})
    optimizer = Momentum()
    optimizer.load_state({}, {})
    assert optimizer.velocities is None


@pytest.mark.parametrize("numbers, arrays", [({"t": 1}, {}), ({}, {"m.0": np.zeros(2)})])
def test_momentum_refuses_another_optimizers_state(numbers, arrays):
    with pytest.raises(ValueError, match="not a momentum state"):
        Momentum().load_state(numbers, arrays)


# ---------------------------------------------------------------------- Adam

def test_adam_step_by_step_with_its_defaults():
    gradients = gradient_sequence(4)
    assert_same_trajectory(run(Adam(), gradients), adam_reference(gradients, 0.9, 0.999, 1e-8))


@pytest.mark.parametrize("beta1, beta2", [(0.8, 0.99), (0.5, 0.9)])
def test_adam_step_by_step_with_other_betas(beta1, beta2):
    gradients = gradient_sequence(5)
    assert_same_trajectory(run(Adam(beta1, beta2), gradients), adam_reference(gradients, beta1, beta2))


def test_adam_eps_matters_for_tiny_gradients():
    # |g| = 1e-8 = eps: the first step is lr * g / (|g| + eps) = lr / 2, not lr.
    p = np.zeros(1)
    Adam().step([p], [np.array([1e-8])], 0.1)
    assert p[0] == pytest.approx(-0.05, rel=1e-6)  # float64; eps's own rounding is ~1e-16


def test_make_optimizer_builds_adam_with_its_betas():
    gradients = gradient_sequence(6)
    assert_same_trajectory(run(make_optimizer("adam"), gradients), adam_reference(gradients))
    assert_same_trajectory(run(make_optimizer("adam", beta1=0.7, beta2=0.95), gradients),
                           adam_reference(gradients, 0.7, 0.95))


def test_adam_state_counts_steps_and_resumes_exactly():
    gradients = gradient_sequence(7)
    whole = run(Adam(), gradients)
    first, p = Adam(), np.array([1.0, -2.0, 3.0, 0.5, 0.0])
    for g, learning_rate in zip(gradients[:5], LEARNING_RATES[:5]):
        first.step([p], [g], learning_rate)
    numbers, arrays = first.state()
    assert numbers == {"t": 5} and set(arrays) == {"m.0", "s.0"}
    second = Adam()
    second.load_state(numbers, {name: array.copy() for name, array in arrays.items()})
    for g, learning_rate in zip(gradients[5:], LEARNING_RATES[5:]):
        second.step([p], [g], learning_rate)
    assert second.t == N_STEPS
    assert np.array_equal(p, whole[-1])  # the same operations on the same numbers: exact


def test_adam_state_before_any_step_loads():
    assert Adam().state() == ({"t": 0}, {})
    optimizer = Adam()
    optimizer.load_state({"t": 0}, {})
    assert optimizer.t == 0 and optimizer.moments is None


@pytest.mark.parametrize("numbers, arrays, message", [
    ({}, {}, "step count"),
    ({"t": 1.0}, {"m.0": np.zeros(2), "s.0": np.zeros(2)}, "step count"),
    ({"t": -1}, {}, "step count"),
    ({"t": 1, "u": 2}, {"m.0": np.zeros(2), "s.0": np.zeros(2)}, "step count"),
    ({"t": 1}, {"m.0": np.zeros(2)}, "not an Adam state"),
    ({"t": 1}, {"m.0": np.zeros(2), "s.0": np.zeros(2), "velocity.0": np.zeros(2)}, "not an Adam state"),
    ({"t": 0}, {"m.0": np.zeros(2), "s.0": np.zeros(2)}, "not an Adam state"),
    ({"t": 1}, {}, "not an Adam state"),
    ({"t": 1}, {"m.1": np.zeros(2), "s.1": np.zeros(2)}, "missing optimizer array"),
])
def test_adam_refuses_a_bad_state(numbers, arrays, message):
    with pytest.raises(ValueError, match=message):
        Adam().load_state(numbers, arrays)


# ----------------------------------------------------------------------- SGD

def test_sgd_step_by_step():
    gradients = gradient_sequence(8)
    expected, p = [], np.array([1.0, -2.0, 3.0, 0.5, 0.0])
    for g, learning_rate in zip(gradients, LEARNING_RATES):
        p = p - learning_rate * g
        expected.append(p)
    assert_same_trajectory(run(SGD(), gradients), expected)
    assert_same_trajectory(run(make_optimizer("sgd"), gradients), expected)


def test_sgd_has_no_state():
    assert SGD().state() == ({}, {})
    SGD().load_state({}, {})
    with pytest.raises(ValueError, match="^plain SGD has no state to load$"):
        SGD().load_state({}, {"velocity.0": np.zeros(2)})
    with pytest.raises(ValueError, match="^plain SGD has no state to load$"):
        SGD().load_state({"t": 1}, {})


def test_optimizers_keep_float32():
    for name in OPTIMIZERS:
        p, g = np.ones(3, np.float32), np.full(3, 0.5, np.float32)
        optimizer = make_optimizer(name)
        optimizer.step([p], [g], 0.1)
        optimizer.step([p], [g], 0.1)
        assert p.dtype == np.float32 and all(a.dtype == np.float32 for a in optimizer.state()[1].values()), name


def test_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; choose one of sgd, momentum, nesterov, adam"):
        make_optimizer("rmsprop")


# ------------------------------------------------------------------ schedules

BASE = 0.4


def expected_rates(schedule, total_steps, warmup_steps):
    """The rate of every step, from the schedules' definitions, written independently:
    warm-up: base * (k + 1) / warmup for k < warmup (rising to the base rate at its last step);
    then "constant": base; "step": base until half the steps, base / 10 from then,
    base / 100 from three quarters (whole steps: step k drops once k >= floor(fraction * total));
    "cosine": base * (1 + cos(pi * (k - warmup) / (total - warmup))) / 2, from base at the end of
    the warm-up down to 0 at step total (one past the last)."""
    rates = []
    for k in range(total_steps):
        if k < warmup_steps:
            rates.append(BASE * (k + 1) / warmup_steps)
        elif schedule == "constant":
            rates.append(BASE)
        elif schedule == "step":
            rates.append(BASE if k < math.floor(total_steps / 2)
                         else BASE / 10 if k < math.floor(total_steps * 3 / 4) else BASE / 100)
        else:
            rates.append(BASE * (1 + math.cos(math.pi * (k - warmup_steps) / (total_steps - warmup_steps))) / 2)
    return rates


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine"])
@pytest.mark.parametrize("total_steps, warmup_steps", [(8, 0), (7, 0), (10, 0), (13, 3), (20, 4)])
def test_every_schedule_at_every_step(schedule, total_steps, warmup_steps):
    actual = [learning_rate_at(k, total_steps, BASE, schedule, warmup_steps) for k in range(total_steps)]
    # Python floats (float64): the same formula in another order, a few ulps (1e-16) apart.
    assert actual == pytest.approx(expected_rates(schedule, total_steps, warmup_steps), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("total_steps, warmup_steps", [(8, 0), (13, 3), (5, 4)])
def test_cosine_reaches_zero_one_step_past_the_last(total_steps, warmup_steps):
    # cos(pi) is -1.0 exactly in float64, so the rate is exactly 0.
    assert learning_rate_at(total_steps, total_steps, BASE, "cosine", warmup_steps) == 0.0


def test_schedules_worked_out_by_hand():
    # Exact in binary or within a few ulps: written out as a learner would check them.
    step = [learning_rate_at(k, 8, 0.4, "step") for k in range(8)]
    assert step == pytest.approx([0.4] * 4 + [0.04] * 2 + [0.004] * 2, rel=1e-12)  # float64
    warmup = [learning_rate_at(k, 8, 0.4, "constant", warmup_steps=4) for k in range(8)]
    assert warmup == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4, 0.4], rel=1e-12)  # float64
    cosine = [learning_rate_at(k, 4, 0.4, "cosine") for k in range(4)]
    # cos(0) = 1, cos(pi/4) = 0.7071, cos(pi/2) = 0, cos(3 pi/4) = -0.7071
    assert cosine == pytest.approx([0.4, 0.2 * (1 + 0.5 ** 0.5), 0.2, 0.2 * (1 - 0.5 ** 0.5)], rel=1e-12)  # float64
    assert learning_rate_at(0, 1, 0.4, "cosine") == 0.4


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'linear'"):
        learning_rate_at(0, 10, 0.1, "linear")
