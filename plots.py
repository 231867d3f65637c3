"""The pictures of a run: loss and accuracy curves, confusion matrix, worst mistakes,
first-layer weights.

Every function draws one figure and writes it atomically as PNG. Matplotlib is
used through its headless Agg backend unless ``use_display`` chose a window
backend, so a run without a display never blocks or fails.
"""

import os

import matplotlib
import matplotlib.ticker

from atomic import atomic_write

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


def save_figure(figure, path):
    """Write a figure as PNG, atomically, and close it unless it is to be shown."""
    with atomic_write(path) as f:
        figure.savefig(f, format="png", dpi=110)
    if not _display_wanted:
        _pyplot().close(figure)


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


def loss_graph(path, steps, losses, evaluations, title="Training loss"):
    """Training loss per step (raw and smoothed) with the evaluated losses on top.

    steps, losses: the per-step (or sampled) training loss. evaluations: a list of
    dicts with "step" and any of "test_loss", "val_loss".
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 4.8))
    window = max(1, len(losses) // 100)
    axes.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.6, label="training loss (per step)")
    if window > 1:
        axes.plot(steps, moving_average(losses, window), color="tab:blue", linewidth=1.6,
                  label=f"training loss (mean of {window} steps)")
    for key, colour, label in (("val_loss", "tab:green", "validation loss"), ("test_loss", "tab:red", "test loss")):
        points = [(e["step"], e[key]) for e in evaluations if key in e]
        if points:
            axes.plot(*zip(*points), "o-", color=colour, markersize=3, linewidth=1.2, label=label)
    axes.set_yscale("log")
    axes.set_xlabel("training step")
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.set_ylabel("cross-entropy loss (log scale)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    save_figure(figure, path)


def accuracy_graph(path, evaluations, title="Accuracy during training"):
    """Evaluated accuracies (test and validation) against the training step."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 4.8))
    for key, colour, label in (("train_accuracy", "tab:blue", "training batch accuracy"),
                               ("val_accuracy", "tab:green", "validation accuracy"),
                               ("test_accuracy", "tab:red", "test accuracy")):
        points = [(e["step"], 100 * e[key]) for e in evaluations if key in e]
        if points:
            axes.plot(*zip(*points), "o-", color=colour, markersize=3, label=label)
    axes.set_xlabel("training step")
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # no step 32.5 on short runs
    axes.set_ylabel("accuracy (%)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend()
    figure.tight_layout()
    save_figure(figure, path)


def confusion_matrix_plot(path, matrix, title="Confusion matrix (test set)"):
    """Counts of (true digit, predicted digit), with the count written in each cell."""
    plt = _pyplot()
    import numpy as np
    matrix = np.asarray(matrix)
    figure, axes = plt.subplots(figsize=(7, 6.2))
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
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="log(1 + count)")
    figure.tight_layout()
    save_figure(figure, path)


def misclassified_grid(path, images, true_labels, predicted, confidences, columns=8,
                       title="Test images the model gets most wrong"):
    """A grid of 28x28 images titled 'true 7 -> 2 (98%)': the most confident mistakes first;
    with no image, a picture that says there was no mistake."""
    plt = _pyplot()
    count = len(images)
    rows = max(1, -(-count // columns))
    figure, grid = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * 1.55 + 0.5), squeeze=False)
    for index, axes in enumerate(grid.flat):
        axes.axis("off")
        if index < count:
            axes.imshow(images[index].reshape(28, 28), cmap="gray_r", vmin=0, vmax=255)
            axes.set_title(f"true {true_labels[index]} \u2192 {predicted[index]}\n{100 * confidences[index]:.0f}% sure",
                           fontsize=8)
    if count == 0:
        figure.text(0.5, 0.45, "No mistakes: every test image was read correctly.", ha="center", va="center")
    figure.suptitle(title)
    figure.tight_layout()
    save_figure(figure, path)


def weight_mosaic(W, count=36, columns=6, side=28):
    """The incoming weights of the first `count` hidden units as one image of side x side tiles.

    W: first-layer weights (side * side, n_hidden); column k holds what unit k
    multiplies each pixel by, in the pixel order of the images. Tile k (row
    k // columns, column k % columns) is W[:, k] as a side x side image, divided by
    its largest |weight| so that every unit spans -1..1 with its sign kept. A line
    of NaN separates the tiles. Returns an array (rows * (side + 1) - 1,
    columns * (side + 1) - 1), rows = ceil(count / columns).
    """
    import numpy as np
    count = min(count, W.shape[1])
    rows = -(-count // columns)
    pitch = side + 1
    mosaic = np.full((rows * pitch - 1, columns * pitch - 1), np.nan)
    for k in range(count):
        weights = W[:, k].astype(np.float64)
        largest = np.abs(weights).max()
        tile = weights.reshape(side, side) / (largest if largest > 0 else 1.0)
        row, column = divmod(k, columns)
        mosaic[row * pitch:row * pitch + side, column * pitch:column * pitch + side] = tile
    return mosaic


def first_layer_weights_figure(W, count=36, columns=6, title=None, width=7.2, quantity="weight"):
    """A figure, `width` inches wide, of the weights of the first `count` hidden units as
    28x28 images (not saved). W: (784, n_hidden), or any array of that shape, such as the
    change of the weights over some steps (then say so in `title`, and name it in
    `quantity` for the colour bar).

    Red pixels push a unit on, blue ones hold it off (a diverging colour map
    centred on 0); each tile is scaled to its own largest |weight| (see
    weight_mosaic). One imshow of the whole mosaic, so it is quick to draw.
    """
    plt = _pyplot()
    colours = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.45")
    mosaic = weight_mosaic(W, count, columns)
    figure, axes = plt.subplots(figsize=(width, (width - 1.4) * mosaic.shape[0] / mosaic.shape[1] + 0.8))
    image = axes.imshow(mosaic, cmap=colours, vmin=-1, vmax=1, interpolation="nearest")
    axes.axis("off")
    if title is None:
        title = (f"What the first hidden units look for\n"
                 f"(incoming weights of units 0-{min(count, W.shape[1]) - 1} of the first layer)")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, shrink=0.8, label=f"{quantity} / largest |{quantity}| of its unit")
    figure.tight_layout()
    return figure


def first_layer_weights(path, W, count=36, columns=6, title=None):
    """Write first_layer_weights_figure(W, ...) to path as PNG (weights.png of a run)."""
    save_figure(first_layer_weights_figure(W, count, columns, title), path)
