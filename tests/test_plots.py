"""The pictures: drawn from the numbers they show."""

import gc
import re
import subprocess
import sys

import matplotlib.image
import matplotlib.ticker
import numpy as np
import pytest

from app import plots
from app import words
from conftest import PROJECT_DIR

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


def test_weights_picture_shows_the_units_the_next_layer_weighs_most(figures, tmp_path):
    """weights.png draws the units whose outgoing weights (rows of the next layer's W) have the
    largest norm, largest first, each tile numbered, and its title says so: not units 0-35,
    which may include units the network does not use."""
    rng = np.random.default_rng(1)
    W = rng.standard_normal((784, 5)).astype(np.float32)
    next_layer_W = np.zeros((5, 10), np.float32)
    next_layer_W[:, 0] = [1, 5, 0, 3, 2]  # row norms: units 1, 3, 4 weigh most, in that order
    assert plots.strongest_units(next_layer_W, count=3).tolist() == [1, 3, 4]
    plots.first_layer_weights(tmp_path / "w.png", W, count=3, columns=3, next_layer_W=next_layer_W)
    axes = figures[0].axes[0]
    drawn = np.ma.filled(axes.images[0].get_array(), np.nan)
    assert np.array_equal(drawn, plots.weight_mosaic(W, columns=3, units=[1, 3, 4]), equal_nan=True)
    assert [text.get_text() for text in axes.texts] == ["1", "3", "4"]
    assert "largest outgoing weights" in axes.get_title()


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


def test_image_mosaic_places_each_image_under_its_caption_space():
    """Image k sits at row k // columns, column k % columns, below `caption` blank rows,
    with gap // 2 blank columns on its left; everything else is 0 (white in gray_r)."""
    images = np.arange(1, 6, dtype=np.uint8)[:, None] * np.ones((1, 784), np.uint8)  # image k is all k + 1
    mosaic, (row_pitch, column_pitch) = plots.image_mosaic(images, columns=3, gap=6, caption=18)
    assert (row_pitch, column_pitch) == (18 + 28, 28 + 6)
    assert mosaic.shape == (2 * 46, 3 * 34) and mosaic.dtype == np.uint8
    expected = np.zeros_like(mosaic)
    for k in range(5):
        row, column = divmod(k, 3)
        expected[row * 46 + 18:row * 46 + 46, column * 34 + 3:column * 34 + 31] = k + 1
    assert np.array_equal(mosaic, expected)


def test_misclassified_picture_shows_every_image(tmp_path):
    """24 black images come out as 24 black squares of the expected size on the PNG."""
    images = np.full((24, 784), 255, np.uint8)
    labels = np.arange(24) % 10
    path = tmp_path / "misclassified.png"
    plots.misclassified_grid(path, images, labels, (labels + 1) % 10, np.full(24, 0.5))
    pixels = matplotlib.image.imread(path)[..., :3].mean(axis=2)
    screen_pixels_per_pixel = pixels.shape[1] / (8 * 34)  # the mosaic spans the figure's width
    black_square = (28 * screen_pixels_per_pixel) ** 2
    black = (pixels < 0.05).sum()
    assert 24 * 0.8 * black_square < black < 24 * 1.2 * black_square  # antialiased edges and text: +-20 %


def test_pictures_are_drawn_without_importing_pyplot(tmp_path):
    """Headless, the pictures use a bare Figure: pyplot and its backend machinery
    (a third of a second to import) are never loaded."""
    code = ("import sys, numpy as np; from app import plots; plots.use_display(False); "
            f"plots.confusion_matrix_plot({str(tmp_path / 'c.png')!r}, np.eye(10, dtype=int)); "
            f"plots.loss_graph({str(tmp_path / 'l.png')!r}, [1, 2, 3], [2.0, 1.0, 0.5], []); "
            "print('matplotlib.pyplot' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_DIR)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    assert (tmp_path / "c.png").stat().st_size > 0 and (tmp_path / "l.png").stat().st_size > 0


def test_a_failed_save_leaves_no_figure_open_and_matplotlib_settings_as_they_were():
    """With pyplot loaded (a notebook), a picture that cannot be written is still closed, and
    the text setting the pictures are drawn with is the user's again afterwards."""
    code = ("import io, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt; from app import plots; "
            "before = matplotlib.rcParams['text.hinting']; closed = io.BytesIO(); closed.close()\n"
            "try:\n    plots.loss_graph(closed, [1, 2, 3], [2.0, 1.0, 0.5], [])\n"
            "except ValueError:\n    pass\n"
            "print(plt.get_fignums(), matplotlib.rcParams['text.hinting'] == before)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_DIR)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "True"]


@pytest.mark.parametrize("probability, text", [
    (0.9996, ">99.9 %"), (0.999, ">99.9 %"), (np.float32(1.0), ">99.9 %"),  # 0.9996 said "100% sure"
    (0.9989, "99.8 %"), (0.8746, "87.4 %"), (0.123, "12.3 %"), (0.5, "50.0 %"),
])
def test_a_wrong_answer_never_claims_to_be_100_percent_sure(probability, text):
    assert words.confidence_text(probability) == text


def test_a_confidence_that_is_not_a_number_is_captioned_not_raised(figures, tmp_path):
    """A Train run of the page whose weights overflow has NaN probabilities: its save failed
    on misclassified.png's captions with "ValueError: cannot convert float NaN to integer"."""
    assert words.confidence_text(float("nan")) == words.confidence_text(np.float32("nan")) == "? %"
    images = np.zeros((2, 784), dtype=np.uint8)
    plots.misclassified_grid(tmp_path / "m.png", images, [3, 5], [0, 0], np.array([np.nan, np.nan], np.float32))
    captions = [text.get_text() for text in figures[0].axes[0].texts]
    assert captions == ["true 3 \u2192 0\np(0) ? %", "true 5 \u2192 0\np(0) ? %"]


@pytest.mark.parametrize("lowest, highest", [(0.0002, 2.5), (0.2, 0.6), (1.85, 2.35), (0.5, 2.5)])  # 4 decades; under 1; from 1 to 10; across 1
def test_loss_graph_labels_matplotlibs_log_ticks_in_plain_text(figures, tmp_path, lowest, highest):
    """The log axis of the loss graph labels the ticks that matplotlib's own formatter
    labels, with the same numbers (10⁻¹, 6 × 10⁻¹), in plain text: matplotlib's labels are
    maths ($10^{-1}$), whose parser costs about 40 ms to set up on every run. From 1 to 10
    a number is written as itself (1 and 2.3, where matplotlib writes 10⁰ and 2.3 × 10⁰:
    an axis read 6 × 10⁻¹, 10⁰, 2)."""
    plots.loss_graph(tmp_path / "l.png", [1, 2, 3], [highest, (lowest * highest) ** 0.5, lowest], [])
    y_axis = figures[0].axes[0].yaxis
    reference = matplotlib.ticker.LogFormatterSciNotation()
    reference.set_axis(y_axis)
    superscripts = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")

    def as_plain_text(maths):  # r"$\mathdefault{6\times10^{-1}}$" -> "6 × 10⁻¹" (thin spaces)
        text = maths.replace(r"$\mathdefault{", "").replace("}$", "").replace(r"\times", "\u2009×\u2009")
        text = re.sub(r"\^\{(-?\d+)\}", lambda power: power.group(1).translate(superscripts), text)
        return "1" if text == "10⁰" else text.removesuffix("\u2009×\u200910⁰")

    labelled = 0
    for locator in (y_axis.get_major_locator(), y_axis.get_minor_locator()):
        ticks = [tick for tick in locator() if lowest / 2 < tick < highest * 2]
        is_major = locator is y_axis.get_major_locator()
        formatter = y_axis.get_major_formatter() if is_major else y_axis.get_minor_formatter()
        labels = formatter.format_ticks(ticks)
        assert labels == [as_plain_text(label) for label in reference.format_ticks(ticks)]
        assert not any("$" in label for label in labels)
        labelled += sum(1 for label in labels if label)
    assert labelled >= 2  # something was compared


def test_collector_paused_resumes_the_collector_as_it_found_it():
    """The garbage collector is off while the pictures are drawn, and back as it was after,
    also when drawing fails; a collector that the caller had switched off stays off."""
    assert gc.isenabled()
    with pytest.raises(OSError):
        with plots.collector_paused():
            assert not gc.isenabled()
            raise OSError("disk full")
    assert gc.isenabled()
    gc.disable()
    try:
        with plots.collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("steps", [[1], [1, 2, 3]])
def test_loss_graph_of_a_few_steps_shows_whole_steps_from_0(figures, tmp_path, steps):
    """`nn.py --steps 1 --eval-every 0` drew its one step on an axis from 0.945 to 1.050
    (ticks 0.960, 0.975, ...) and the point itself not at all (a line needs two points)."""
    plots.loss_graph(tmp_path / "l.png", steps, [2.3] * len(steps), [])
    axes = figures[0].axes[0]
    assert axes.get_xlim() == (0, steps[-1] + 1)
    ticks = axes.get_xticks()
    assert np.all(ticks == np.round(ticks)) and steps[-1] in ticks, ticks
    if len(steps) == 1:
        assert axes.lines[0].get_marker() == "o"


def test_the_confusion_matrix_colour_bar_reads_in_counts(figures, tmp_path):
    """The colours follow log(1 + count); the bar's ticks said 0-7, the logarithms, which no
    reader turns back into counts. Now the ticks sit at counts and say them."""
    matrix = np.diag([1135, 980, 12, 3, 1, 0, 7, 50, 400, 9]) + 1
    plots.confusion_matrix_plot(tmp_path / "c.png", matrix)
    colour_bar = figures[0].axes[1]
    ticks = colour_bar.get_yticks()
    labels = [label.get_text() for label in colour_bar.get_yticklabels()]
    assert labels == ["0", "1", "10", "100", "1,000"]
    np.testing.assert_allclose(np.expm1(ticks), [0, 1, 10, 100, 1000], rtol=1e-12)  # each at its count's colour


@pytest.mark.parametrize("points, columns", [(20_000, 761), (1_000, 100), (4_001, 1_000)])
def test_thinned_line_keeps_the_first_last_lowest_and_highest_point_of_each_pixel_column(points, columns):
    rng = np.random.default_rng(points)
    steps = np.arange(1, points + 1) * 3  # any increasing x
    losses = rng.lognormal(size=points)
    x, y = plots.thinned_line(steps, losses, columns)
    kept = np.searchsorted(steps, x)
    assert np.all(np.diff(kept) > 0) and np.array_equal(losses[kept], y)  # a subsequence, in the line's order
    assert len(x) <= 4 * columns
    column = (steps - steps[0]) * columns // (steps[-1] - steps[0] + 1)
    for c in np.unique(column):
        inside = np.flatnonzero(column == c)
        expected = {inside[0], inside[-1], inside[np.argmin(losses[inside])], inside[np.argmax(losses[inside])]}
        assert expected <= set(kept[column[kept] == c].tolist()), c
        assert len(set(kept[column[kept] == c].tolist())) == len(expected)  # and nothing else


def test_thinned_line_leaves_short_or_broken_lines_whole():
    steps = np.arange(100)
    assert len(plots.thinned_line(steps, np.ones(100), 30)[0]) == 100  # under 4 points a column
    losses = np.ones(1000)
    losses[500] = np.nan  # a step that overflowed: not to be hidden by a minimum or maximum
    assert len(plots.thinned_line(np.arange(1000), losses, 30)[0]) == 1000


def test_the_loss_graph_says_why_training_loss_can_sit_above_the_test_loss():
    """With dropout or augmented images the training loss is measured on a harder task than
    the test: the graph says so (--preset best's test loss sits below its training loss);
    the default run, trained and tested alike, gets no note."""
    from app import plots
    assert plots.training_loss_note(0.0, False) is None
    assert "dropout" in plots.training_loss_note(0.2, False) and "shifted" not in plots.training_loss_note(0.2, False)
    assert "shifted or turned" in plots.training_loss_note(0.0, True)
    assert "dropout and shifted or turned images" in plots.training_loss_note(0.2, True)
