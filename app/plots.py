"""The pictures of a run: loss and accuracy curves, confusion matrix, worst mistakes,
first-layer weights.

Every function draws one figure and writes it as PNG, to a path (atomically) or into a
file object (the save of a run writes the same bytes twice). Matplotlib is used through
its headless Agg backend unless ``use_display`` chose a window backend, so a run without
a display never blocks or fails.

Drawn for speed: pyplot is imported only when windows are wanted (or it is loaded
already, as in a notebook); margins are fixed rather than measured by ``tight_layout``,
and titles sit at the top of their axes (``y=1.0``) rather than being placed by
measuring the tick labels; many small images are one image (a mosaic), not many axes;
log-axis labels are plain text, not maths; text is drawn from its letters' outlines as
they are, without FreeType's hinting, which nudges each glyph onto the pixel grid (at 110
pixels per inch the text looks the same; with Matplotlib 3.11 the pictures of a run take
12-16 % less time, with 3.7 no less).
"""

import contextlib
import gc
import math
import os
import sys

import matplotlib
import matplotlib.ticker

from app.atomic import atomic_write
from app.report import LOSS_CURVE_POINTS, loss_window
from app.words import confidence_text

_display_wanted = False


def use_display(wanted):
    """Choose the backend before pyplot is imported: a window only when wanted and
    a display exists. Returns True when figures will be shown."""
    global _display_wanted
    has_display = os.name == "nt" or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    _display_wanted = wanted and has_display
    if not _display_wanted:
        matplotlib.use("Agg")
    return _display_wanted


def _pyplot():
    import matplotlib.pyplot as plt  # imported late: after use_display() picked the backend
    return plt


def new_figure(width, height, margins=(0.1, 0.12, 0.97, 0.9)):
    """A figure of width x height inches with one axes placed at fixed `margins` (left,
    bottom, right, top, as fractions of the figure): (figure, axes).

    A pyplot figure when windows are wanted or pyplot is loaded already (a notebook
    shows it); otherwise a bare Figure, which spares importing pyplot and its backend."""
    if _display_wanted or "matplotlib.pyplot" in sys.modules:
        figure = _pyplot().figure(figsize=(width, height))
    else:
        from matplotlib.figure import Figure
        figure = Figure(figsize=(width, height))
    left, bottom, right, top = margins
    return figure, figure.add_axes((left, bottom, right - left, top - bottom))


DPI = 110  # pixels per inch of the PNG files: an 8-inch graph is 880 pixels wide


def _write_png(figure, file):
    with matplotlib.rc_context({"text.hinting": "no_hinting"}):  # see the module's docstring
        figure.savefig(file, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})  # 3x quicker than 6, 1.5x the bytes


def save_figure(figure, path):
    """Write a figure as PNG to `path` (atomically) or to a file object (the save of a run
    passes one, to write the same bytes twice), and close it unless it is to be shown, also
    when the writing fails."""
    try:
        if hasattr(path, "write"):
            _write_png(figure, path)
        else:
            with atomic_write(path) as f:
                _write_png(figure, f)
    finally:
        if not _display_wanted and "matplotlib.pyplot" in sys.modules:
            _pyplot().close(figure)


@contextlib.contextmanager
def collector_paused():
    """Draw the pictures inside `with collector_paused():` to pause Python's cyclic
    garbage collector meanwhile, and resume it after.

    A figure is tens of thousands of small objects (ticks, texts, transforms), and
    allocating them sets the collector off again and again, each time to walk the
    objects of the process: about 160 passes and 50 ms of CPU over the pictures of a
    run. Paused, it makes one pass when it resumes (about 25 ms), which frees the
    figures' objects."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def show():
    """Open the windows of the figures drawn so far (only after use_display(True))."""
    if _display_wanted:
        _pyplot().show()


def moving_average(values, window):
    """Mean of each run of `window` consecutive values (shorter at the start)."""
    import numpy as np
    values = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.concatenate([[0.0], values]))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def thinned_line(x, y, columns):
    """The points of the line through (x, y) that decide how it looks when drawn `columns`
    pixels wide: in each of `columns` equal slices of the x range, the first and the last
    point and the lowest and the highest one, in their order (the "M4" reduction).

    A line through these points covers nearly the same pixels as the line through all of
    them, since within a slice the line runs between its extremes anyway (what differs is
    the anti-aliased edge of some spikes: 0.6 % of the loss graph's pixels by more than
    16/255): 20,000 training steps on an 880-pixel graph come down to about 2,900 points,
    and the graph is drawn in 0.14 s instead of 0.2 s. x must increase; a line with fewer
    than 4 points a slice, or with values that are not finite, is returned whole. Returns
    (x, y) as arrays."""
    import numpy as np
    x, y = np.asarray(x), np.asarray(y, dtype=np.float64)
    if len(y) < 4 * columns or not np.isfinite(y).all():
        return x, y
    column = ((x - x[0]) * columns // (x[-1] - x[0] + 1)).astype(np.int64)  # 0 .. columns - 1, increasing
    starts = np.flatnonzero(np.r_[True, column[1:] != column[:-1]])  # the first point of each slice
    ends = np.r_[starts[1:], len(y)] - 1
    by_value = np.lexsort((y, column))  # the points slice by slice, each slice from its lowest to its highest
    lowest, highest = by_value[starts], by_value[ends]
    keep = np.unique(np.concatenate([starts, lowest, highest, ends]))  # sorted: the line's own order
    return x[keep], y[keep]


SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


class PowerOfTenFormatter(matplotlib.ticker.LogFormatterSciNotation):
    """Log-axis tick labels such as 10⁻¹ and 6 × 10⁻¹, on the ticks that matplotlib's
    own LogFormatterSciNotation labels, written in plain text with superscript digits;
    from 1 to 10 a number is written as itself (1, 2.3).

    Matplotlib writes them as maths ($10^{-1}$), and setting up its maths parser
    and fonts costs about 40 ms of CPU on every run that draws a log axis."""

    def __call__(self, x, pos=None):
        if x <= 0 or not super().__call__(x, pos):  # matplotlib leaves this tick unlabelled
            return ""
        exponent = math.floor(math.log10(x) + 1e-9)  # 1e-9: log10 of 1000 may come out as 2.9999999
        coefficient = x / 10.0 ** exponent
        power = "10" + str(exponent).translate(SUPERSCRIPTS)
        thin_space = "\u2009"  # the space maths puts around ×
        if exponent == 0:  # 1 and 2.3, not 10⁰ and 2.3 × 10⁰
            return f"{coefficient:.6g}"
        if round(coefficient, 6) == 1:
            return power
        return f"{coefficient:.6g}{thin_space}×{thin_space}{power}"


def wrap_subtitle(subtitle):
    """A subtitle (or None) as lines of about what 9-point text fits in 8 inches."""
    import textwrap
    return textwrap.wrap(subtitle or "", 100)


def top_margin(subtitle_lines):
    """Where the axes of an 8 x 4.8-inch graph end, as a fraction of its height: lower by a line
    for each subtitle line, which set_titles writes above them."""
    return 0.93 - 0.04 * len(subtitle_lines)


def set_titles(axes, title, subtitle_lines):
    """The title at the top of the axes and, between them, the subtitle's lines in smaller type."""
    axes.set_title(title, y=1.0, pad=6 + 13 * len(subtitle_lines))
    if subtitle_lines:
        axes.text(0.5, 1.015, "\n".join(subtitle_lines), transform=axes.transAxes, ha="center", va="bottom",
                  fontsize=9)


def loss_graph(path, steps, losses, evaluations, title="Training loss", subtitle=None, note=None):
    """Training loss per step (raw and smoothed) with the evaluated losses on top.

    steps, losses: the per-step (or sampled) training loss. evaluations: a list of
    dicts with "step" and any of "test_loss", "val_loss". subtitle: a second, smaller
    title line, such as the recipe that produced the curve. note: a line in the corner of the
    axes explaining something the curves show (see training_loss_note).
    """
    subtitle_lines = wrap_subtitle(subtitle)
    figure, axes = new_figure(8, 4.8, margins=(0.115, 0.1, 0.98, top_margin(subtitle_lines)))  # room for 6 x 10^-1
    window = loss_window(len(losses))  # the window of stats.json's loss_curve
    faint = window > 1  # pale under its running mean; alone (LOSS_CURVE_POINTS steps or fewer) drawn fully
    columns = round(figure.get_figwidth() * DPI * axes.get_position().width)  # the axes' width in pixels
    axes.plot(*thinned_line(steps, losses, columns), color="tab:blue", alpha=0.25 if faint else 1.0,
              linewidth=0.6 if faint else 1.2, label="training loss (per step)",
              marker="o" if len(losses) == 1 else None)  # a line through one point draws nothing
    if window > 1:
        axes.plot(*thinned_line(steps, moving_average(losses, window), columns), color="tab:blue", linewidth=1.6,
                  label=f"training loss (mean of {window} steps)")
    for key, colour, label in (("val_loss", "tab:green", "validation loss"), ("test_loss", "tab:red", "test loss")):
        points = [(e["step"], e[key]) for e in evaluations if key in e]
        if points:
            axes.plot(*zip(*points), "o-", color=colour, markersize=3, linewidth=1.2, label=label)
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(PowerOfTenFormatter())
    axes.yaxis.set_minor_formatter(PowerOfTenFormatter())
    axes.set_xlabel("training step")
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    last_step = max([*steps, *(e["step"] for e in evaluations)], default=0)
    if last_step < 10:  # a few steps: from step 0, not spread over fractions of a step (0.945 to 1.050)
        axes.set_xlim(0, last_step + 1)
    axes.set_ylabel("cross-entropy loss (log scale)")
    set_titles(axes, title, subtitle_lines)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    if note:  # bottom left, where the early steps' high losses leave the axes empty
        axes.text(0.01, 0.02, note, transform=axes.transAxes, ha="left", va="bottom", fontsize=8, color="0.2",
                  bbox={"facecolor": "white", "edgecolor": "0.8", "alpha": 0.9})
    save_figure(figure, path)


def training_loss_note(dropout, augmented):
    """A line for the loss graph when the training loss is measured on a harder task than the
    test loss (dropout, or shifted and turned images, are on in training only), so that it can
    sit above the test loss; None otherwise."""
    causes = [cause for cause, on in (("dropout", dropout), ("shifted or turned images", augmented)) if on]
    if not causes:
        return None
    return (f"The training loss is measured with {' and '.join(causes)}, which the test is not:\n"
            "it can sit above the test loss without anything being wrong.")


def accuracy_graph(path, evaluations, title="Accuracy during training", subtitle=None):
    """Evaluated accuracies (test and validation) against the training step. subtitle: a
    second, smaller title line, such as the recipe (as on the loss graph)."""
    subtitle_lines = wrap_subtitle(subtitle)
    figure, axes = new_figure(8, 4.8, margins=(0.09, 0.1, 0.98, top_margin(subtitle_lines)))
    for key, colour, label in (("train_accuracy", "tab:blue", "training batch accuracy"),
                               ("val_accuracy", "tab:green", "validation accuracy"),
                               ("test_accuracy", "tab:red", "test accuracy")):
        points = [(e["step"], 100 * e[key]) for e in evaluations if key in e]
        if points:
            axes.plot(*zip(*points), "o-", color=colour, markersize=3, label=label)
    axes.set_xlabel("training step")
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # no step 32.5 on short runs
    axes.set_ylabel("accuracy (%)")
    set_titles(axes, title, subtitle_lines)
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend()
    save_figure(figure, path)


def confusion_matrix_plot(path, matrix, title="Confusion matrix (test set)"):
    """Counts of (true digit, predicted digit), with the count written in each cell."""
    import numpy as np
    matrix = np.asarray(matrix)
    figure, axes = new_figure(7, 6.2, margins=(0.1, 0.09, 0.8, 0.93))
    image = axes.imshow(np.log1p(matrix), cmap="Blues")
    threshold = np.log1p(matrix).max() / 2
    for true in range(matrix.shape[0]):
        for predicted in range(matrix.shape[1]):
            count = matrix[true, predicted]
            axes.text(predicted, true, str(count), ha="center", va="center", fontsize=8,
                      color="white" if np.log1p(count) > threshold else "black")
    axes.set_xticks(range(matrix.shape[1]))
    axes.set_yticks(range(matrix.shape[0]))
    axes.set_xlabel("predicted digit")
    axes.set_ylabel("true digit")
    axes.set_title(title, y=1.0)
    colour_bar = figure.colorbar(image, cax=figure.add_axes((0.83, 0.09, 0.03, 0.84)),
                                 label="count (colour on a log(1 + count) scale)")
    counts = [c for c in (0, 1, 10, 100, 1000, 10000) if c <= max(matrix.max(), 1)]
    colour_bar.set_ticks(np.log1p(counts), labels=[f"{c:,}" for c in counts])  # counts, not their logarithms
    save_figure(figure, path)


def misclassified_grid(path, images, true_labels, predicted, confidences, columns=8,
                       title="Test images the model gets most wrong"):
    """The 28x28 images captioned 'true 7 -> 2, p(2) 98.1 %' (the network's probability for
    the digit it read), the most confident mistakes first; with no image, a picture that says
    there was no mistake.

    images: (count, 784) uint8; true_labels, predicted, confidences: (count,). The
    images are drawn as one mosaic (see image_mosaic): one image and `count` captions
    are far quicker to draw than `count` axes.
    """
    mosaic, pitch = image_mosaic(images, columns)
    width = columns * 1.3
    height = width * mosaic.shape[0] / mosaic.shape[1]
    figure, axes = new_figure(width, height + 0.5, margins=(0, 0, 1, height / (height + 0.5)))
    axes.imshow(mosaic, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    axes.axis("off")
    for index in range(len(images)):
        row, column = divmod(index, columns)
        axes.text(column * pitch[1] + pitch[1] / 2 - 0.5, row * pitch[0] + pitch[0] - 29.5,
                  f"true {true_labels[index]} \u2192 {predicted[index]}\np({predicted[index]}) {confidence_text(confidences[index])}",
                  ha="center", va="bottom", fontsize=8, linespacing=1.2)
    if len(images) == 0:
        figure.text(0.5, 0.45, "No mistakes: every test image was read correctly.", ha="center", va="center")
    figure.suptitle(title, y=1 - 0.1 / (height + 0.5), va="top")
    save_figure(figure, path)


def image_mosaic(images, columns=8, side=28, gap=6, caption=12):
    """The images side by side, `columns` to a row, as one uint8 image; 0 (white in
    gray_r) between them, and `caption` empty pixels above each row for its captions.

    images: (count, side * side). Returns (mosaic (rows * (caption + side),
    columns * (side + gap)), (row pitch, column pitch)); rows = ceil(count / columns),
    at least 1. Image k has its top left corner at (row * row pitch + caption,
    column * column pitch + gap // 2), row, column = divmod(k, columns).
    """
    import numpy as np
    rows = max(1, -(-len(images) // columns))
    pitch = (caption + side, side + gap)
    mosaic = np.zeros((rows * pitch[0], columns * pitch[1]), np.uint8)
    for k, image in enumerate(images):
        row, column = divmod(k, columns)
        top, left = row * pitch[0] + caption, column * pitch[1] + gap // 2
        mosaic[top:top + side, left:left + side] = np.asarray(image).reshape(side, side)
    return mosaic, pitch


def strongest_units(next_layer_W, count=36):
    """The `count` hidden units whose outgoing weights are largest: their indices, the
    largest first, as an int array (min(count, n_hidden),).

    next_layer_W: (n_hidden, n_next), the weights of the layer above; row k holds what
    unit k's output is multiplied by on its way up, so its norm ||next_layer_W[k, :]||
    measures how much the rest of the network listens to unit k. Units the network
    hardly uses (such as units that never fire, whose outgoing weights keep their
    small random start) come last. Ties keep the lower unit first."""
    import numpy as np
    norms = np.linalg.norm(next_layer_W.astype(np.float64), axis=1)
    return np.argsort(-norms, kind="stable")[:count]


def weight_mosaic(W, count=36, columns=6, side=28, units=None):
    """The incoming weights of `units` (default: the first `count` hidden units) as one
    image of side x side tiles.

    W: first-layer weights (side * side, n_hidden); column k holds what unit k
    multiplies each pixel by, in the pixel order of the images. Tile i (row
    i // columns, column i % columns) is W[:, units[i]] as a side x side image, divided
    by its largest |weight| so that every unit spans -1..1 with its sign kept. A line
    of NaN separates the tiles. Returns an array (rows * (side + 1) - 1,
    columns * (side + 1) - 1), rows = ceil(number of tiles / columns).
    """
    import numpy as np
    if units is None:
        units = range(min(count, W.shape[1]))
    rows = -(-len(units) // columns)
    pitch = side + 1
    mosaic = np.full((rows * pitch - 1, columns * pitch - 1), np.nan)
    for i, unit in enumerate(units):
        weights = W[:, unit].astype(np.float64)
        largest = np.abs(weights).max()
        tile = weights.reshape(side, side) / (largest if largest > 0 else 1.0)
        row, column = divmod(i, columns)
        mosaic[row * pitch:row * pitch + side, column * pitch:column * pitch + side] = tile
    return mosaic


def first_layer_weights_figure(W, count=36, columns=6, title=None, width=7.2, quantity="weight", next_layer_W=None):
    """A figure, `width` inches wide, of the incoming weights of `count` hidden units as
    28x28 images (not saved), each tile marked with its unit's number. W: (784, n_hidden),
    or any array of that shape, such as the change of the weights over some steps (then
    say so in `title`, and name it in `quantity` for the colour bar).

    Which units: given next_layer_W (the weights of the layer above, (n_hidden, n_next)),
    the `count` units with the largest outgoing weights (strongest_units), the units the
    network relies on most; otherwise units 0 to count - 1.

    Red pixels push a unit on, blue ones hold it off (a diverging colour map
    centred on 0); each tile is scaled to its own largest |weight| (see
    weight_mosaic). One imshow of the whole mosaic, so it is quick to draw.
    """
    if next_layer_W is None:
        units = list(range(min(count, W.shape[1])))
        chosen = f"units 0-{len(units) - 1} of the first layer"
    else:
        units = [int(unit) for unit in strongest_units(next_layer_W, count)]
        chosen = f"{len(units)} units with the largest outgoing weights"
    colours = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.45")
    mosaic = weight_mosaic(W, columns=columns, units=units)
    image_width = width - 1.5  # inches; the colour bar and its label take the rest
    image_height = image_width * mosaic.shape[0] / mosaic.shape[1]
    height = image_height + 0.8  # two lines of title above
    figure, axes = new_figure(width, height, margins=(0.1 / width, 0.1 / height, (0.1 + image_width) / width,
                                                      (0.1 + image_height) / height))
    image = axes.imshow(mosaic, cmap=colours, vmin=-1, vmax=1, interpolation="nearest")
    pitch = 28 + 1  # a tile and the line between tiles, in mosaic pixels
    for i, unit in enumerate(units):  # the unit's number in the tile's top-left corner
        row, column = divmod(i, columns)
        axes.text(column * pitch + 0.7, row * pitch + 0.7, str(unit), fontsize=7.5, color="black", va="top",
                  ha="left", bbox={"boxstyle": "square,pad=0.15", "facecolor": "white", "edgecolor": "none",
                                   "alpha": 0.85})
    axes.axis("off")
    if title is None:
        title = f"What the first hidden units look for\n({chosen}, numbered)"
    axes.set_title(title, y=1.0)
    colour_bar = figure.add_axes(((0.35 + image_width) / width, 0.1 / height + 0.1 * image_height / height,
                                  0.15 / width, 0.8 * image_height / height))
    figure.colorbar(image, cax=colour_bar, label=f"{quantity} / largest |{quantity}| of its unit")
    more = "" if quantity == "weight" else " more"  # a change of the weights pushes further one way
    colour_bar.text(1.6, 1.02, f"red: ink here\nturns it on{more}", transform=colour_bar.transAxes, ha="center",
                    va="bottom", fontsize=8, color="#b2182b")
    colour_bar.text(1.6, -0.02, f"blue: ink here\nholds it off{more}", transform=colour_bar.transAxes,
                    ha="center", va="top", fontsize=8, color="#2166ac")
    return figure


def first_layer_weights(path, W, count=36, columns=6, title=None, next_layer_W=None):
    """Write first_layer_weights_figure(W, ...) to path as PNG (weights.png of a run, which
    passes the second layer's weights as next_layer_W: the units that matter most)."""
    save_figure(first_layer_weights_figure(W, count, columns, title, next_layer_W=next_layer_W), path)
