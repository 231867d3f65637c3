"""predict: MNIST-form conversion of photos, the command on images and CSV rows."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import data  # noqa: E402
import predict  # noqa: E402
from conftest import PROJECT_DIR, run_nn  # noqa: E402


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    result = run_nn("--steps", 8000, "--eval-every", 0, "--out", folder, "--quiet")
    assert result.returncode == 0, result.stderr
    return folder / "model_mnist.npz"


@pytest.fixture(scope="module")
def test_digits():
    images, labels, _ = data.load_csv(PROJECT_DIR / "datasets" / "mnist_test.csv")
    return images, labels


def photo_like(digit, rng):
    """A 28x28 MNIST digit as a photo of dark ink on light, unevenly lit paper, with
    uneven margins, noise and a colour cast, as RGB in [0, 1]."""
    ink = np.kron(digit.reshape(28, 28) / 255.0, np.ones((5, 5)))  # 140x140
    ink = np.pad(ink, ((30, 55), (62, 18)))
    height, width = ink.shape
    paper = 0.93 - 0.15 * np.linspace(0, 1, width)[None, :] - 0.05 * np.linspace(0, 1, height)[:, None]
    grey = paper * (1 - 0.85 * ink) + rng.normal(0, 0.02, size=ink.shape)
    rgb = np.clip(np.stack([grey * 1.0, grey * 0.97, grey * 0.9], axis=-1), 0, 1)
    return rgb


def test_photos_of_mnist_digits_are_read(tmp_path, trained_model, test_digits, capsys):
    images, labels = test_digits
    rng = np.random.default_rng(0)
    paths = []
    for index in range(10):
        path = tmp_path / f"digit{index}.png"
        plt.imsave(path, photo_like(images[index], rng))
        paths.append(path)
    assert predict.main(["--model", str(trained_model), *map(str, paths)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    predicted = [int(line.split(": ", 1)[1][0]) for line in lines]
    assert sum(p == y for p, y in zip(predicted, labels[:10])) >= 9, (predicted, labels[:10].tolist())


def test_to_mnist_keeps_mnist_images_and_centres_photos(test_digits):
    images, _ = test_digits
    digit = images[0].reshape(28, 28) / 255.0
    np.testing.assert_array_equal(predict.to_mnist(digit), digit)
    converted = predict.to_mnist(photo_like(images[0], np.random.default_rng(1)).mean(axis=2))
    assert converted.shape == (28, 28) and converted.max() == pytest.approx(1, rel=1e-9)  # float64
    rows, columns = np.flatnonzero(converted.any(axis=1)), np.flatnonzero(converted.any(axis=0))
    assert max(rows[-1] - rows[0], columns[-1] - columns[0]) + 1 <= 20
    centre = (converted.sum(axis=1) @ np.arange(28) / converted.sum(), converted.sum(axis=0) @ np.arange(28) / converted.sum())
    assert abs(centre[0] - 14) <= 0.5 and abs(centre[1] - 14) <= 0.5


def test_predict_command_on_csv_and_bad_inputs(tmp_path, trained_model):
    csv = tmp_path / "few.csv"
    images, labels, _ = data.load_csv(PROJECT_DIR / "datasets" / "mnist_test.csv")
    data.write_csv(csv, images[:20], labels[:20])
    result = run_nn("predict", "--model", trained_model, "--csv", csv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("row ") == 20 and "20 rows, accuracy against their labels" in result.stdout
    blank = tmp_path / "blank.png"
    plt.imsave(blank, np.ones((40, 40, 3)))
    result = run_nn("predict", "--model", trained_model, blank, tmp_path / "missing.png")
    assert result.returncode == 1
    assert f"{blank}: no digit found" in result.stderr and "missing.png: file not found" in result.stderr
    result = run_nn("predict", "--model", tmp_path / "none.npz", blank)
    assert result.returncode == 1 and "no such model file" in result.stderr and "python nn.py" in result.stderr
