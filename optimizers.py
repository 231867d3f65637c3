"""Optimizers: how a list of parameters moves given their gradients.

An optimizer sees only parameters and gradients (lists of arrays in the same
order, updated in place), never layers. ``step(params, grads, learning_rate)``
takes the learning rate of the current step, so that schedules stay outside.
Gradients are only read: after a step they still hold the gradients, so a
learner can print them. Each optimizer keeps a scratch array per parameter for
its intermediate products, so a step allocates nothing.

``state()`` and ``load_state(numbers, arrays)`` give and take what an optimizer
carries from one step to the next (momentum velocities, Adam moments and step
count) as plain numbers and arrays, so that a resumed run continues exactly.
"""

import math

import numpy as np


def _scratch_like(arrays):
    """One uninitialised array shaped like each of arrays, for intermediate products."""
    return [np.empty_like(array) for array in arrays]


class SGD:
    """Plain stochastic gradient descent: p <- p - learning_rate * g."""

    def __init__(self):
        self.scratch = None

    def step(self, params, grads, learning_rate):
        if self.scratch is None:
            self.scratch = _scratch_like(params)
        for p, g, update in zip(params, grads, self.scratch):
            np.multiply(g, p.dtype.type(learning_rate), out=update)
            p -= update

    def state(self):
        """({}, {}): plain SGD carries nothing between steps."""
        return {}, {}

    def load_state(self, numbers, arrays):
        if numbers or arrays:
            raise ValueError("plain SGD has no state to load")


def _indexed(arrays, prefix):
    """[arrays["prefix.0"], arrays["prefix.1"], ...] as writable copies; ValueError if one is missing."""
    count = sum(1 for name in arrays if name.startswith(prefix + "."))
    try:
        return [np.array(arrays[f"{prefix}.{i}"]) for i in range(count)]
    except KeyError as error:
        raise ValueError(f"missing optimizer array {error}") from None


class Momentum:
    """SGD with (optionally Nesterov) momentum, in the form used by PyTorch:

        v <- momentum * v + g
        p <- p - learning_rate * v                    (classical)
        p <- p - learning_rate * (g + momentum * v)   (Nesterov)
    """

    def __init__(self, momentum=0.9, nesterov=False):
        self.momentum = momentum
        self.nesterov = nesterov
        self.velocities = None
        self.scratch = None

    def step(self, params, grads, learning_rate):
        if self.velocities is None:
            self.velocities = [np.zeros_like(p) for p in params]
            self.scratch = _scratch_like(params)
        mu = params[0].dtype.type(self.momentum)
        lr = params[0].dtype.type(learning_rate)
        for p, g, v, update in zip(params, grads, self.velocities, self.scratch):
            v *= mu
            v += g
            if self.nesterov:
                np.multiply(v, mu, out=update)
                update += g
                update *= lr
            else:
                np.multiply(v, lr, out=update)
            p -= update

    def state(self):
        """({}, {"velocity.0": v0, ...}): the velocity of each parameter array (none before the first step)."""
        return {}, {f"velocity.{i}": v for i, v in enumerate(self.velocities or [])}

    def load_state(self, numbers, arrays):
        if numbers or any(not name.startswith("velocity.") for name in arrays):
            raise ValueError(f"not a momentum state: {sorted(numbers) + sorted(arrays)}")
        self.velocities = _indexed(arrays, "velocity") or None
        self.scratch = self.velocities and _scratch_like(self.velocities)


class Adam:
    """Adam (Kingma & Ba, 2015) with bias correction:

        m <- beta1 * m + (1 - beta1) * g
        s <- beta2 * s + (1 - beta2) * g^2
        p <- p - learning_rate * (m / (1 - beta1^t)) / (sqrt(s / (1 - beta2^t)) + eps)
    """

    def __init__(self, beta1=0.9, beta2=0.999, eps=1e-8):
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.t = 0
        self.moments = None
        self.scratch = None

    def step(self, params, grads, learning_rate):
        if self.moments is None:
            self.moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
            self.scratch = _scratch_like(params)
        self.t += 1
        dtype = params[0].dtype.type
        b1, b2 = dtype(self.beta1), dtype(self.beta2)
        step_size = dtype(learning_rate * math.sqrt(1 - self.beta2 ** self.t) / (1 - self.beta1 ** self.t))
        eps_hat = dtype(self.eps * math.sqrt(1 - self.beta2 ** self.t))
        for p, g, (m, s), update in zip(params, grads, self.moments, self.scratch):
            np.multiply(g, 1 - b1, out=update)
            m *= b1
            m += update
            np.multiply(g, g, out=update)
            update *= 1 - b2
            s *= b2
            s += update
            np.sqrt(s, out=update)
            update += eps_hat
            np.divide(m, update, out=update)
            update *= step_size
            p -= update

    def state(self):
        """({"t": steps taken}, {"m.0": m0, "s.0": s0, ...}): the moment estimates of each parameter array."""
        arrays = {}
        for i, (m, s) in enumerate(self.moments or []):
            arrays[f"m.{i}"], arrays[f"s.{i}"] = m, s
        return {"t": self.t}, arrays

    def load_state(self, numbers, arrays):
        t = numbers.get("t")
        if set(numbers) != {"t"} or type(t) is not int or t < 0:
            raise ValueError(f"Adam needs a step count t, a whole number >= 0, got {numbers}")
        m, s = _indexed(arrays, "m"), _indexed(arrays, "s")
        if len(m) != len(s) or len(m) + len(s) != len(arrays) or (t > 0) != bool(m):
            raise ValueError(f"not an Adam state: t={t}, arrays {sorted(arrays)}")
        self.t, self.moments = t, list(zip(m, s)) or None
        self.scratch = m and _scratch_like(m)


OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")


def make_optimizer(name, momentum=0.9, beta1=0.9, beta2=0.999):
    """The optimizer called ``name`` (one of OPTIMIZERS)."""
    if name == "sgd":
        return SGD()
    if name in ("momentum", "nesterov"):
        return Momentum(momentum, nesterov=name == "nesterov")
    if name == "adam":
        return Adam(beta1, beta2)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def learning_rate_at(step, total_steps, base_rate, schedule="constant", warmup_steps=0):
    """Learning rate for ``step`` (0-based) of ``total_steps``.

    A linear warm-up from base_rate / warmup_steps over the first warmup_steps,
    then: "constant"; "step" (divided by 10 from step total_steps // 2 and again
    from step 3 * total_steps // 4); "cosine" (half a cosine from base_rate at the
    end of the warm-up down towards 0, which it would reach at step total_steps,
    one past the last).
    """
    if step < warmup_steps:
        return base_rate * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_rate
    if schedule == "step":
        return base_rate * (0.1 if step >= total_steps // 2 else 1.0) * (0.1 if step >= 3 * total_steps // 4 else 1.0)
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * base_rate * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")
