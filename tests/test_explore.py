"""The server's explore routes: /api/explain (why) and /api/damage (break it), and their bad input.

The server runs in a subprocess on a model with random weights and random biases; its
answers are checked against the project's own functions run here (explain.py and
damage.py are checked on their own in test_explain.py and below).
"""

import json

import numpy as np
import pytest

from app.page import damage
from app import data
from app import model_file
from conftest import EPS32, PROJECT_DIR, gamma, numerical_gradient, start_server
from functions import log_softmax
from mlp import MLP
from test_serve import as_json, ask, drawing, still_serving


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A 784-150-150-10 model with random weights and biases (so that zeroing them changes it)."""
    model = MLP([784, 150, 150, 10], rng=np.random.default_rng(0))
    for layer in model.layers:
        layer.b[...] = np.random.default_rng(1).normal(0, 0.3, size=layer.b.shape)
    path = tmp_path_factory.mktemp("explore") / "model_mnist.npz"
    model_file.save(model, path, steps_done=10)
    return path


@pytest.fixture(scope="module")
def model(model_path):
    return model_file.load(model_path)


@pytest.fixture(scope="module")
def server(model_path):
    process, url = start_server(model_path, "--data", PROJECT_DIR / "datasets")
    host_port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    yield host_port[0], int(host_port[1])
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def test_set():
    images, labels, _ = data.load_csv(data.csv_path(PROJECT_DIR / "datasets", "test"))
    return data.to_inputs(images), labels


def post(server, path, value):
    return ask(server, "POST", path, json.dumps(value))


# ------------------------------------------------------------------ why

def test_explain_gives_the_saliency_of_the_chosen_digit(server, model):
    _, reading, _ = post(server, "/api/predict", json.loads(as_json(drawing())))
    status, answer, _ = post(server, "/api/explain", {"input": reading["input"], "digit": 3})
    assert status == 200, answer
    # Reference apart from the backward pass: float64 central differences of log p(3) with
    # the same weights, on the input the page sent (truncation and round-off ~1e-10).
    reference_model = MLP(model.layer_sizes, rng=np.random.default_rng(0), dtype=np.float64)
    reference_model.flat_parameters[...] = model.flat_parameters
    x = np.array(reading["input"], dtype=np.float64).ravel()

    def log_p_of_3():
        return log_softmax(reference_model.forward(x[None]))[0, 3]

    gradient, log_p = numerical_gradient(log_p_of_3, x), log_p_of_3()
    # The server's float32 pass: forward and backward sums of at most 784 products, each
    # within gamma(784) of the sums of the terms' magnitudes, here the backward pass taken
    # through |dZ| and |W| with this input's ReLU pattern; three layers, relative to the
    # largest value, plus the rounding of the answer to 4 decimals. (About 0.017 here; the
    # gradient of the logit instead of log p, or a transposed product, is off by 0.1 or more.)
    hidden = [x[None]]
    for layer in reference_model.layers[:-1]:
        hidden.append(layer.forward(hidden[-1]))
    magnitude = np.abs(np.eye(10)[3] - np.exp(log_softmax(reference_model.forward(x[None]))))
    for index in range(2, -1, -1):
        magnitude = (magnitude @ np.abs(reference_model.layers[index].W).T) * (hidden[index] > 0 if index else 1)
    bound = 3 * 2 * gamma(784) * magnitude[0]  # of each element of the float32 gradient
    # largest is the float32 gradient's largest magnitude: it moves at most by the largest bound
    # (central differences add ~1e-10, the float32 rounding of the answer one EPS32)
    assert abs(answer["largest"] - np.abs(gradient).max()) <= bound.max() + 1e-9 + EPS32 * answer["largest"]
    tolerance = bound / answer["largest"] + 5e-5 + 4 * EPS32
    error = np.abs(np.array(answer["saliency"]).ravel() - gradient / np.abs(gradient).max())
    assert (error <= tolerance).all(), f"off by up to {(error - tolerance).max():.3g} beyond the bound"
    # p = exp(log p): the float32 forward pass, each layer's sums within gamma(n_in + 1) of the
    # sums of magnitudes (bias included), the error of the layer below carried through |W|
    # (ReLU moves no value further), and log_softmax's own float32 rounding (a few EPS32 of the
    # largest logit). log p then moves at most twice the largest logit error, and p by that factor.
    a, carried = x[None], np.zeros((1, 784))
    for layer in reference_model.layers:
        z = a @ layer.W + layer.b
        carried = carried @ np.abs(layer.W) + gamma(layer.W.shape[0] + 1) * (np.abs(a) @ np.abs(layer.W) + np.abs(layer.b))
        a = np.maximum(z, 0)
    log_p_bound = 2 * carried.max() + 8 * EPS32 * np.abs(z).max()
    assert abs(answer["probability"] - np.exp(log_p)) <= np.exp(log_p) * np.expm1(log_p_bound) + 1e-12


BAD_EXPLAIN = [
    ("a digit of 10", {"input": [[0] * 28] * 28, "digit": 10}, "digit"),
    ("a digit of -1", {"input": [[0] * 28] * 28, "digit": -1}, "digit"),
    ("a digit of true", {"input": [[0] * 28] * 28, "digit": True}, "digit"),
    ("a digit of 3.0", {"input": [[0] * 28] * 28, "digit": 3.0}, "digit"),
    ("a digit as text", {"input": [[0] * 28] * 28, "digit": "3"}, "digit"),
    ("27 rows", {"input": [[0] * 28] * 27, "digit": 3}, "input"),
    ("a grey level of 2", {"input": [[2] * 28] * 28, "digit": 3}, "input"),
    ("a grey level as text", {"input": [["0"] * 28] * 28, "digit": 3}, "input"),
    ("no digit", {"input": [[0] * 28] * 28}, "body"),
    ("an extra key", {"input": [[0] * 28] * 28, "digit": 3, "layer": 1}, "body"),
    ("a list", [3], "body"),
]


@pytest.mark.parametrize("value, reason", [case[1:] for case in BAD_EXPLAIN], ids=[case[0] for case in BAD_EXPLAIN])
def test_bad_explain_values_get_400_and_one_line(server, value, reason):
    status, answer, _ = post(server, "/api/explain", value)
    assert status == 400
    assert set(answer) == {"error"} and "\n" not in answer["error"] and answer["error"].startswith(reason)
    assert still_serving(server)


@pytest.mark.parametrize("body", [b'{"input": [NaN], "digit": 3}', b'{"input": ', b"\xff\xfe"])
def test_explain_bodies_that_are_not_json_get_400(server, body):
    status, answer, _ = ask(server, "POST", "/api/explain", body)
    assert status == 400 and answer["error"].startswith("body: ")


def explain_sure_model(dtype, bias):
    """(answer of Explorer.explain for digit 3, the map in float64 from the same weights, and
    the sums of its products' magnitudes) for a 784 -> 10 softmax whose bias makes 3 sure: on a
    blank input Z = b, so 1 - p(3) = 9 e^-bias / (1 + 9 e^-bias), whatever the random weights,
    and the map is W (onehot(3) - softmax(b))."""
    import types
    from app.page import explore
    model = MLP([784, 10], rng=np.random.default_rng(2), dtype=dtype)
    model.layers[0].b[3] = bias
    blank = [[0.0] * 28 for _ in range(28)]
    answer = explore.Explorer(types.SimpleNamespace(model=model), None).explain({"input": blank, "digit": 3})
    others = np.exp(-np.float64(bias)) / (1 + 9 * np.exp(-np.float64(bias)))  # each p(k), k != 3
    dZ = np.full(10, -others)
    dZ[3] = 9 * others  # 1 - p(3)
    W = model.layers[0].W.astype(np.float64)
    return answer, (W @ dZ).reshape(28, 28), (np.abs(W) @ np.abs(dZ)).reshape(28, 28)


@pytest.mark.parametrize("dtype, bias", [
    (np.float32, 12.0),   # 1 - p = 5.5e-5
    (np.float32, 25.0),   # 1 - p = 1.2e-10: p rounds to 1 in float32
    (np.float32, 60.0),   # 1 - p = 7.8e-26
    (np.float64, 25.0),
])
def test_the_map_of_a_sure_reading_is_its_gradient_not_rounding(dtype, bias):
    """For p rounding to 1 in float32 the map was rounding noise (1 - p made by subtraction,
    explain.py), and the merged fix hid it as "saturated": 28 % of the test digits. Checked
    against the exact map from the same weights in float64."""
    answer, truth, magnitude = explain_sure_model(dtype, bias)
    assert answer["saturated"] is False
    mine = np.array(answer["saliency"]) * answer["largest"]
    # Each dZ is off by a few steps of the dtype (exp, sum, division, the sum of the other
    # probabilities: 4), then 10 products are summed: gamma(10 + 4) of the magnitudes; then
    # the saliency's rounding to 4 decimals of the largest value (5e-5 of it).
    bound = 2 * gamma(10 + 4, float(np.finfo(dtype).eps)) * magnitude + 5e-5 * np.abs(truth).max()
    assert (np.abs(mine - truth) <= bound).all(), (np.abs(mine - truth) / bound).max()


@pytest.mark.parametrize("dtype, bias", [(np.float32, 120.0), (np.float64, 800.0)])  # e^-bias under the dtype's smallest
def test_a_reading_whose_other_probabilities_underflow_is_saturated(dtype, bias):
    """No gradient at all: every other probability is 0 in the dtype; the page says why."""
    answer, _, _ = explain_sure_model(dtype, bias)
    assert answer["saturated"] is True and answer["largest"] == 0.0 and answer["probability"] == 1.0
    assert not np.array(answer["saliency"]).any()


# ------------------------------------------------------------------ break it

def test_damage_measures_the_damaged_copy_and_undo_restores_the_figure(server, model, model_path, test_set):
    file_before = model_path.read_bytes()
    status, original, _ = ask(server, "GET", "/api/damage")
    assert status == 200 and original["damaged"] is False and original["test_images"] == 10000
    settings = {"zero_biases": True, "noise": 0.3, "prune": 0.2, "units_off": 0.1, "seed": 5}
    status, damaged, _ = post(server, "/api/damage", settings)
    assert status == 200, damaged
    expected, _ = damage.accuracy(damage.damaged_copy(model, damage.check_settings(settings, 3)), *test_set)
    # The same float32 code here and in the server; another BLAS thread count adds in
    # another order, which may flip an image whose two best logits tie within rounding.
    assert abs(damaged["test_accuracy"] - expected) <= 2 / 10000
    assert damaged["test_accuracy"] != original["test_accuracy"]
    assert damaged["original_test_accuracy"] == original["test_accuracy"]
    assert 0 < damaged["seconds"] < 5  # reported, not timed: the figure is the server's own measure
    status, undone, _ = post(server, "/api/damage", {})
    assert undone["damaged"] is False and undone["test_accuracy"] == original["test_accuracy"]  # exactly
    assert model_path.read_bytes() == file_before  # never the file


def test_the_drawing_is_read_with_the_damaged_model_until_undone(server):
    """Each reading carries damage_number, the count of damage settings made on the server, so
    that every page of a class shows the damage that read its drawing (explore.js)."""
    _, before, _ = post(server, "/api/predict", json.loads(as_json(drawing())))
    _, set_, _ = post(server, "/api/damage", {"zero_layer": 3})  # the output layer: every logit 0
    _, broken, _ = post(server, "/api/predict", json.loads(as_json(drawing())))
    assert broken["probabilities"] == [float(np.float32(0.1))] * 10  # softmax of ten equal logits: 1/10 in float32, sent unrounded
    assert broken["damage_number"] == set_["damage_number"] == before["damage_number"] + 1
    post(server, "/api/damage", {})
    _, after, _ = post(server, "/api/predict", json.loads(as_json(drawing())))
    assert after["damage_number"] == before["damage_number"] + 2
    assert {**after, "damage_number": None} == {**before, "damage_number": None}


def test_the_weights_in_use_are_measured_once_however_many_pages_ask(model, monkeypatch):
    """A class shares one server: every page asks GET /api/damage when the damage changes, and
    each answer measured the 10,000 test images again. The weights in use are measured once;
    new weights (other damage, a training run's snapshot) are measured anew."""
    import types
    from app.page import explore
    served = types.SimpleNamespace(model=model)
    explorer = explore.Explorer(served, PROJECT_DIR / "datasets")
    measured = []
    real_accuracy = damage.accuracy
    monkeypatch.setattr(damage, "accuracy", lambda m, *data: measured.append(m) or real_accuracy(m, *data))
    first, again = explorer.damage_state(), explorer.damage_state()
    assert again == first and measured == [model, model]  # the original and the weights in use: the same model
    explorer.set_damage({"zero_biases": True})
    explorer.damage_state()
    assert len(measured) == 3 and measured[-1] is served.model is not model
    snapshot = model.copy()
    explorer.use_model(snapshot)  # a training run's weights
    assert explorer.damage_state()["test_accuracy"] == first["test_accuracy"] and measured[-1] is snapshot


def test_a_training_run_that_undoes_the_damage_gives_a_new_damage_number(model):
    """Starting a training run reads with its weights, undamaged: the pages of a class, which
    showed the damage, must hear that it is undone."""
    import types
    from app.page import explore
    explorer = explore.Explorer(types.SimpleNamespace(model=model), PROJECT_DIR / "datasets")
    explorer.set_damage({"noise": 0.5})
    number = explorer.damage_number
    explorer.use_model(model.copy())
    assert explorer.damage_number == number + 1 and not explorer.damage_state()["damaged"]
    explorer.use_model(model.copy())  # undamaged already: the next snapshot changes nothing shown
    assert explorer.damage_number == number + 1


def test_damage_settings_apply_what_they_say(model):
    settings = damage.check_settings({"prune": 0.5, "zero_biases": True}, 3)
    damaged = damage.damaged_copy(model, settings)
    n_weights = sum(layer.W.size for layer in model.layers)
    assert sum(int(np.count_nonzero(layer.W == 0)) for layer in damaged.layers) == round(0.5 * n_weights)
    assert all(not layer.b.any() for layer in damaged.layers)
    assert all(layer.b.any() for layer in model.layers)  # the original is untouched
    off = damage.damaged_copy(model, damage.check_settings({"units_off": 0.2}, 3))
    assert [int((~off.layers[i].W.any(axis=1)).sum()) for i in (1, 2)] == [30, 30]  # 20 % of 150 units each
    noisy = [damage.damaged_copy(model, damage.check_settings({"noise": 0.5, "seed": s}, 3)) for s in (1, 1, 2)]
    np.testing.assert_array_equal(noisy[0].flat_parameters, noisy[1].flat_parameters)  # seeded
    assert not np.array_equal(noisy[0].flat_parameters, noisy[2].flat_parameters)
    ratio = float((noisy[0].layers[0].W - model.layers[0].W).std() / model.layers[0].W.std())
    # the sample std of n normal draws has a standard deviation of sigma / sqrt(2 n): 0.001 here
    # (n = 117,600); allow five of those
    assert abs(ratio - 0.5) < 5 * 0.5 / np.sqrt(2 * model.layers[0].W.size)
    zeroed = damage.damaged_copy(model, damage.check_settings({"zero_layer": 2}, 3))
    assert not zeroed.layers[1].W.any() and not zeroed.layers[1].b.any() and zeroed.layers[0].W.any()


BAD_DAMAGE = [
    ("noise above 1", {"noise": 1.5}, "noise"),
    ("negative prune", {"prune": -0.1}, "prune"),
    ("units_off as text", {"units_off": "0.5"}, "units_off"),
    ("zero_biases as 1", {"zero_biases": 1}, "zero_biases"),
    ("zero_layer 0", {"zero_layer": 0}, "zero_layer"),
    ("zero_layer 4 of 3", {"zero_layer": 4}, "zero_layer"),
    ("zero_layer true", {"zero_layer": True}, "zero_layer"),
    ("a negative seed", {"seed": -1}, "seed"),
    ("a seed of 2**32", {"seed": 2 ** 32}, "seed"),
    ("an unknown toggle", {"flip_signs": True}, "damage: unknown setting 'flip_signs'"),
    ("not an object", [1, 2], "damage: expected a JSON object"),
]


@pytest.mark.parametrize("value, reason", [case[1:] for case in BAD_DAMAGE], ids=[case[0] for case in BAD_DAMAGE])
def test_bad_damage_settings_get_400_and_one_line_and_change_nothing(server, value, reason):
    post(server, "/api/damage", {"zero_biases": True})
    status, answer, _ = post(server, "/api/damage", value)
    assert status == 400
    assert set(answer) == {"error"} and "\n" not in answer["error"] and answer["error"].startswith(reason)
    _, state, _ = ask(server, "GET", "/api/damage")
    assert state["settings"]["zero_biases"] is True  # the refused settings changed nothing
    post(server, "/api/damage", {})


def test_infinite_numbers_are_refused(server):
    status, answer, _ = ask(server, "POST", "/api/damage", b'{"noise": Infinity}')
    assert status == 400 and answer["error"] == "body: Infinity is not a number"
    status, answer, _ = ask(server, "POST", "/api/damage", b'{"noise": 1e400}')  # parsed as inf
    assert status == 400 and answer["error"].startswith("noise")


def test_without_test_images_damage_gets_503_and_one_line(model_path, tmp_path):
    process, url = start_server(model_path, "--data", tmp_path)
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    try:
        status, answer, _ = post((host, int(port)), "/api/damage", {"zero_biases": True})
        assert status == 503 and "no test images" in answer["error"] and "\n" not in answer["error"]
        _, reading, _ = post((host, int(port)), "/api/predict", json.loads(as_json(drawing())))
        assert reading["digit"] is not None  # the drawing is still read, undamaged
    finally:
        process.terminate()
        process.wait(timeout=10)
