"""The pictures: drawn from the numbers they show."""

import matplotlib.image
import numpy as np
import pytest

import plots

plots.use_display(False)


def test_weight_mosaic_tiles_are_the_units_weights():
    """Tile k is column k of W as a 28x28 image, scaled by its largest |weight|, sign kept;
    tiles sit row by row with a NaN line between them."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((784, 10)).astype(np.float32)
    W[:, 3] = 0  # a unit with no weights stays 0, not NaN
    mosaic = plots.weight_mosaic(W, count=7, columns=3)
    assert mosaic.shape == (3 * 29 - 1, 3 * 29 - 1)
    for k in range(7):
        row, column = divmod(k, 3)
        tile = mosaic[row * 29:row * 29 + 28, column * 29:column * 29 + 28]
        largest = np.abs(W[:, k].astype(np.float64)).max() or 1.0
        assert np.array_equal(tile, W[:, k].astype(np.float64).reshape(28, 28) / largest)  # the same division
    assert np.isnan(mosaic[28, :]).all() and np.isnan(mosaic[:, 28]).all()
    assert np.isnan(mosaic[2 * 29:, 29:]).all()  # tiles 7 and 8 do not exist: background


def test_weights_picture_is_red_where_weights_are_positive(tmp_path):
    """The PNG shows the weights: a unit whose top half is positive and bottom half negative
    draws red above blue (RdBu_r), and the opposite weights draw blue above red."""
    W = np.zeros((784, 1), np.float32)
    W[:392, 0], W[392:, 0] = 0.5, -0.5
    for sign, red_on_top in ((1, True), (-1, False)):
        path = tmp_path / f"weights{sign}.png"
        plots.first_layer_weights(path, sign * W, count=1, columns=1)
        pixels = matplotlib.image.imread(path)[..., :3]
        tile = pixels[:, :pixels.shape[1] * 2 // 3]  # left of the colour bar
        red_minus_blue = tile[..., 0] - tile[..., 2]
        red_rows = np.nonzero(red_minus_blue > 0.2)[0]
        blue_rows = np.nonzero(red_minus_blue < -0.2)[0]
        assert red_rows.size > 1000 and blue_rows.size > 1000  # half the tile each: hundreds of screen pixels
        assert (red_rows.max() < blue_rows.min()) == red_on_top
        assert (blue_rows.max() < red_rows.min()) == (not red_on_top)


@pytest.fixture
def figures(monkeypatch):
    """The figures the plotting functions draw, kept open instead of saved."""
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: drawn.append(figure))
    plots.use_display(False)
    return drawn


def test_misclassified_picture_says_when_there_is_no_mistake(figures, tmp_path):
    empty = np.zeros((0, 784), np.uint8)
    plots.misclassified_grid(tmp_path / "m.png", empty, [], [], [])
    texts = [text.get_text() for text in figures[0].texts]
    assert any("No mistakes" in text for text in texts), texts


def test_accuracy_graph_has_whole_steps_on_short_runs(figures, tmp_path):
    evaluations = [{"step": step, "test_accuracy": 0.5 + step / 200} for step in (31, 32, 33, 34, 35)]
    plots.accuracy_graph(tmp_path / "a.png", evaluations)
    ticks = figures[0].axes[0].get_xticks()
    assert len(ticks) >= 3 and np.all(ticks == np.round(ticks)), ticks
