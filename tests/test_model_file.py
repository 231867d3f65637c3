"""The model file (app/model_file.py): save and load round trips, refusals of files that
are not ours, loading bounded by the table of members, the training state."""

import io
import json
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from app import model_file, ood
from app.model_file import ModelFileError
from conftest import PROJECT_DIR
from mlp import MLP


def test_save_then_load_predicts_identically(tmp_path):
    model = MLP([784, 20, 10], rng=np.random.default_rng(5))
    X = np.random.default_rng(6).random((50, 784), dtype=np.float32)
    path = tmp_path / "model.npz"
    history = {"loss_steps": [122, 123], "losses": [0.5, 0.25], "evaluations": [{"step": 123, "test_loss": 0.3}]}
    model_file.save(model, path, config={"lr": 0.1, "hidden": [20]}, steps_done=123, history=history)
    loaded, info = model_file.load(path, with_info=True)
    assert info["history"] == history
    assert np.array_equal(loaded.predict_logits(X), model.predict_logits(X))
    assert loaded.layer_sizes == [784, 20, 10] and loaded.activations == ["relu", "softmax"]
    assert info["config"] == {"lr": 0.1, "hidden": [20]} and info["steps_done"] == 123
    with np.load(path, allow_pickle=False) as archive:
        assert {"layer0.weights", "layer0.bias", "layer1.weights", "format_version"} <= set(archive.files)


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays.update(changes)
    for name in [k for k, v in changes.items() if v is None]:
        del arrays[name]
    np.savez(path, **arrays)


@pytest.mark.parametrize("change, message", [
    ({"format_version": np.array(99)}, "format version"),
    ({"layer0.weights": np.zeros((5, 5), np.float32)}, "layer0.weights has shape"),
    ({"layer1.bias": np.array([np.nan] * 10, np.float32)}, "NaN"),
    ({"layer_sizes": np.array([784, 20, 11])}, "shape"),
    ({"activations": np.array(["relu", "evil"])}, "unknown activations"),
    ({"layer0.bias": None}, "missing"),
    ({"layer0.weights": np.array([object()] * 3, dtype=object)}, "cannot be read|shape"),
])
def test_load_refuses_inconsistent_files(tmp_path, change, message):
    path = tmp_path / "model.npz"
    model_file.save(MLP([784, 20, 10]), path)
    _rewrite(path, **change)
    with pytest.raises(ModelFileError, match=message):
        model_file.load(path)


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04truncated"])
def test_load_refuses_files_that_are_not_npz(tmp_path, content):
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=str(path)):
        model_file.load(path)


def test_load_refuses_a_truncated_model(tmp_path):
    path = tmp_path / "model.npz"
    model_file.save(MLP([784, 20, 10]), path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ModelFileError):
        model_file.load(path)


def test_load_never_unpickles(tmp_path):
    import pickle
    path = tmp_path / "model.npz"
    path.write_bytes(pickle.dumps({"layer_sizes": [1, 2]}))
    with pytest.raises(ModelFileError):
        model_file.load(path)
    missing = tmp_path / "nothing.npz"
    with pytest.raises(ModelFileError, match="no such model file"):
        model_file.load(missing)


def test_saved_configuration_is_json(tmp_path):
    path = tmp_path / "model.npz"
    model_file.save(MLP([784, 20, 10]), path, config={"seed": 3})
    with np.load(path, allow_pickle=False) as archive:
        assert json.loads(str(archive["config_json"])) == {"seed": 3}


@pytest.mark.parametrize("sizes, activation", [([784, 32, 10], "tanh"), ([784, 64, 32, 16, 10], "gelu"),
                                               ([20, 5, 3], "sigmoid"), ([784, 10], None)])
def test_any_configuration_round_trips(tmp_path, sizes, activation):
    activations = None if activation is None else [activation] * (len(sizes) - 2) + ["softmax"]
    model = MLP(sizes, activations, np.random.default_rng(1), dropout=0.3)
    path = tmp_path / "model.npz"
    model_file.save(model, path)
    loaded = model_file.load(path)
    X = np.random.default_rng(2).random((7, sizes[0]), dtype=np.float32)
    assert loaded.layer_sizes == sizes and loaded.activations == model.activations
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))


# ------------------------------------------------------- loading is bounded

DECLARED_BYTES = 400 << 20  # far above what the members of a [784, 20, 10] model may hold


def _with_member_of_zeros(source, path, member, dtype, n_bytes):
    """Copy the model file source to path with member (NAME.npy) replaced or added:
    an .npy of n_bytes of zeros, streamed into the zip so that the test never holds it
    (zeros deflate about 1000:1, so the file stays small)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (n_bytes // np.dtype(dtype).itemsize,)})
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bomb:
        for info in original.infolist():
            if info.filename != member:
                bomb.writestr(info.filename, original.read(info))
        with bomb.open(member, "w", force_zip64=True) as f:
            f.write(header.getvalue())
            chunk = bytes(1 << 20)
            for _ in range(n_bytes >> 20):
                f.write(chunk)


def _peak_memory_of_loading(path):
    """(message, peak resident memory in MiB) of model_file.load(path) in a fresh Python."""
    script = (f"import resource, sys; sys.path.insert(0, {str(PROJECT_DIR)!r})\n"
              "from app import model_file\nfrom app.model_file import ModelFileError\n"
              f"try:\n    model_file.load({str(path)!r}); print('loaded')\n"
              "except ModelFileError as error:\n    print(error)\n"
              # Linux: VmHWM, this program's own peak (ru_maxrss keeps the peak of the process that
              # started it, a test run that holds MNIST); elsewhere ru_maxrss, bytes on macOS
              "try:\n    status = open('/proc/self/status').read()\n"
              "    print(int(status.split('VmHWM:')[1].split()[0]) / 1024)\n"
              "except OSError:\n    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "    print(peak / (1 << 20) if sys.platform == 'darwin' else peak / 1024)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    message, peak = result.stdout.strip().splitlines()
    return message, float(peak)


@pytest.mark.parametrize("member, dtype, message", [
    ("extra.npy", np.uint8, "unexpected member 'extra'"),
    ("history_losses.npy", np.float32, "history_losses declares 4194.* bytes packed into .*more than 10:1"),
    ("layer0.weights.npy", np.float32, "layer0.weights declares 4194.* bytes packed into .*more than 10:1"),
])
def test_load_refuses_a_large_member_before_decompressing_it(tmp_path, member, dtype, message):
    model_file.save(MLP([784, 20, 10]), tmp_path / "model.npz")
    bomb = tmp_path / "bomb.npz"
    _with_member_of_zeros(tmp_path / "model.npz", bomb, member, dtype, DECLARED_BYTES)
    assert bomb.stat().st_size < DECLARED_BYTES // 100
    refusal, peak_mib = _peak_memory_of_loading(bomb)
    assert peak_mib < 200, f"peak memory {peak_mib:.0f} MiB while refusing {DECLARED_BYTES >> 20} MiB declared"
    assert re.search(message, refusal) and refusal.startswith(str(bomb)), refusal


def test_load_refuses_a_member_larger_than_its_table_entry_unread(tmp_path):
    # Stored, not compressed, so that only the size check can refuse it: 1 MiB for ten biases.
    path = tmp_path / "model.npz"
    model_file.save(MLP([784, 20, 10]), path)
    with zipfile.ZipFile(path) as original, zipfile.ZipFile(tmp_path / "big.npz", "w") as copy:
        for info in original.infolist():
            data = original.read(info)
            copy.writestr(info.filename, data + bytes(1 << 20) if info.filename == "layer1.bias.npy" else data)
    with pytest.raises(ModelFileError, match=r"layer1.bias declares 1048744 bytes, more than the 10080 it may hold"):
        model_file.load(tmp_path / "big.npz")


def test_load_refuses_optimizer_arrays_of_no_single_optimizer(tmp_path):
    path = tmp_path / "model.npz"
    model_file.save(MLP([784, 20, 10]), path)
    _with_member_of_zeros(path, tmp_path / "odd.npz", "optimizer.m.0.npy", np.float32, 4 * 15910)
    with pytest.raises(ModelFileError, match="without training_state_json"):
        model_file.load(tmp_path / "odd.npz")


def test_load_refuses_a_header_that_does_not_fit_the_table(tmp_path):
    path = tmp_path / "model.npz"
    model_file.save(MLP([784, 20, 10]), path)
    _with_member_of_zeros(path, tmp_path / "wide.npz", "layer1.bias.npy", np.float64, 8 << 10)  # 1024 biases
    with pytest.raises(ModelFileError, match=r"layer1.bias has shape \(1024,\) and dtype float64, expected shape \(10,\)"):
        model_file.load(tmp_path / "wide.npz")


def _training_state(model, n_images=10):
    """A training_state as nn.py's train makes it, for Adam after 3 steps, mid-epoch."""
    rng = np.random.default_rng(7)
    rng.random(5)  # a generator somewhere along its stream
    size = model.flat_parameters.size
    return {"schedule_steps": 500, "generator": rng.bit_generator.state, "optimizer": "adam",
            "optimizer_numbers": {"t": 3}, "epoch_order": rng.permutation(n_images),
            "optimizer_arrays": {"m.0": np.full(size, 0.5, np.float32), "s.0": np.full(size, 0.25, np.float32)}}


def test_training_state_round_trips_without_pickles(tmp_path):
    model = MLP([784, 20, 10], rng=np.random.default_rng(5))
    path = tmp_path / "model.npz"
    state = _training_state(model)
    model_file.save(model, path, steps_done=3, training_state=state)
    _, info = model_file.load(path, with_info=True)
    loaded = info["training_state"]
    assert loaded["generator"] == state["generator"] and loaded["schedule_steps"] == 500
    assert loaded["optimizer"] == "adam" and loaded["optimizer_numbers"] == {"t": 3}
    assert np.array_equal(loaded["epoch_order"], state["epoch_order"])
    assert set(loaded["optimizer_arrays"]) == {"m.0", "s.0"}
    assert np.array_equal(loaded["optimizer_arrays"]["s.0"], state["optimizer_arrays"]["s.0"])
    continued = np.random.default_rng()
    continued.bit_generator.state = loaded["generator"]
    expected = np.random.default_rng(7)
    expected.random(5)
    assert np.array_equal(continued.random(4), expected.random(4))  # the generator goes on where it was
    model_file.save(MLP([784, 20, 10]), path)  # a model saved without one loads with None
    assert model_file.load(path, with_info=True)[1]["training_state"] is None


@pytest.mark.parametrize("change, message", [
    ({"epoch_order": np.array([0, 0, 1])}, "epoch_order is not a permutation"),
    ({"optimizer.m.0": np.zeros(3, np.float32)}, r"optimizer.m.0 has shape \(3,\)"),
    ({"training_state_json": np.array('{"schedule_steps": "500"}')}, "not the expected JSON object"),
    ({"training_state_json": np.array('{"schedule_steps": 0, "generator": null, "optimizer": null, '
                                      '"optimizer_numbers": {}}')}, "schedule_steps 0"),
    ({"training_state_json": np.array('{"schedule_steps": 5, "generator": {"bit_generator": "MT19937"}, '
                                      '"optimizer": null, "optimizer_numbers": {}}')}, "bad training state"),
    ({"training_state_json": None}, "without training_state_json"),
])
def test_load_refuses_a_bad_training_state(tmp_path, change, message):
    model = MLP([784, 20, 10])
    path = tmp_path / "model.npz"
    model_file.save(model, path, training_state=_training_state(model))
    _rewrite(path, **change)
    with pytest.raises(ModelFileError, match=message):
        model_file.load(path)


def test_a_training_set_without_some_digit_saves_a_model_without_digit_statistics(tmp_path):
    """A digit absent from the training images gave a class mean of NaN, written into the model
    file, which then could not be read back ('its digit statistics hold NaN'). The statistics
    are left out instead, and the file loads as one written without them."""
    import warnings
    from app import ood
    model = MLP([784, 8, 10], rng=np.random.default_rng(0))
    images = np.random.default_rng(1).integers(0, 256, (40, 784), dtype=np.uint8)
    labels = np.arange(40) % 9  # no 9
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Mean of empty slice"
        members = ood.fitted_members(model, images, labels)
    assert members == {}
    model_file.save(model, tmp_path / "model.npz", ood_members=members)
    assert model_file.load(tmp_path / "model.npz", with_info=True)[1]["ood"] == {}
    images = np.random.default_rng(1).integers(0, 256, (100, 784), dtype=np.uint8)
    assert ood.fitted_members(model, images, np.arange(100) % 10)  # two or more of each digit fitted: statistics


def _digit_statistics(model):
    """app/ood.py's members for model, from 100 random images, ten of each digit (half fitted)."""
    from app import ood
    images = np.random.default_rng(1).integers(0, 256, (100, 784), dtype=np.uint8)
    return ood.fitted_members(model, images, np.arange(100) % 10)


def test_the_digit_statistics_round_trip_and_come_all_or_none(tmp_path):
    """The statistics (app/ood.py) load as saved. A file with some of them is refused; one with
    an older version's (of the first hidden layer) loads as a file without statistics (predict
    and the page then say they cannot tell)."""
    model = MLP([784, 8, 10], rng=np.random.default_rng(0))
    members = _digit_statistics(model)
    assert set(members) == set(model_file.OOD_MEMBERS)
    path = tmp_path / "model.npz"
    model_file.save(model, path, ood_members=members)
    loaded = model_file.load(path, with_info=True)[1]["ood"]
    assert set(loaded) == set(members) and all(np.array_equal(loaded[name], members[name]) for name in members)
    _rewrite(path, **{"ood.pixel_noise": None})
    with pytest.raises(ModelFileError, match="only some of ood.pixel_means"):
        model_file.load(path)
    older = {"ood.class_means": np.zeros((10, 8), np.float32), "ood.precision": np.eye(8, dtype=np.float32),
             "ood.threshold": np.array(300.0, np.float32), "ood.shape_limits": members["ood.shape_limits"]}
    assert set(older) == set(model_file.OLDER_OOD_MEMBERS)
    model_file.save(model, path, ood_members=older)
    assert model_file.load(path, with_info=True)[1]["ood"] == {}
    _rewrite(path, **{"ood.precision": None})
    with pytest.raises(ModelFileError, match="only some of"):
        model_file.load(path)
    model_file.save(model, path, ood_members={**members, "ood.class_means": older["ood.class_means"]})
    with pytest.raises(ModelFileError, match="both the current digit statistics .* and an older version's"):
        model_file.load(path)


@pytest.mark.parametrize("name, value, message", [
    ("ood.pixel_directions", np.zeros((10, 3, 784), np.float32), r"ood.pixel_directions has shape \(10, 3, 784\)"),
    ("ood.pixel_noise", np.full(10, np.inf, np.float32), "its digit statistics: NaN or infinite values"),
    ("ood.pixel_noise", np.zeros(10, np.float32), "ood.pixel_noise not above 0"),  # every score NaN: no check
    ("ood.pixel_variances", np.full((10, ood.PIXEL_DIRECTIONS), -1, np.float32), "ood.pixel_variances not above 0"),
    ("ood.pixel_means", np.full((10, 784), 2, np.float32), r"ood.pixel_means outside \[0, 1\]"),
    ("ood.pixel_means", np.full((10, 784), -1, np.float32), r"ood.pixel_means outside \[0, 1\]"),
    ("ood.pixel_directions", np.full((10, ood.PIXEL_DIRECTIONS, 784), 1e30, np.float32), r"outside \[-1, 1\]"),
    ("ood.pixel_threshold", np.array("high"), "ood.pixel_threshold has shape"),
])
def test_bad_digit_statistics_are_refused(tmp_path, name, value, message):
    model = MLP([784, 8, 10], rng=np.random.default_rng(0))
    path = tmp_path / "model.npz"
    model_file.save(model, path, ood_members=_digit_statistics(model))
    _rewrite(path, **{name: value})
    with pytest.raises(ModelFileError, match=message):
        model_file.load(path)
