"""How far the model's probabilities can be taken at their word: calibration.

A model is calibrated when, of the inputs it gives a top probability near 0.8,
about 80 % are read right. The reliability diagram (Guo et al., 2017, "On
calibration of modern neural networks") sorts the test images into BINS equal
bins of top probability and sets each bin's accuracy against its mean top
probability; the expected calibration error (ECE) is the gap between them,
averaged over the bins weighted by how many images each holds:

    ECE = sum over bins b of (n_b / N) |accuracy_b - confidence_b|

It says how far the probabilities are from the frequencies on images like the
test set: on inputs unlike the digits (app/ood.py) they mean nothing at all.
"""

import numpy as np

BINS = 15  # Guo et al.'s number of bins, the one most papers report


def reliability(probabilities, labels, bins=BINS):
    """(counts (bins,) int, confidence (bins,), accuracy (bins,)) of probabilities (N, C) against
    labels (N,): per bin of top probability ((0, 1/bins], ..., up to 1], how many images, their
    mean top probability and the share read right; NaN for an empty bin."""
    top = probabilities.max(axis=1)
    right = probabilities.argmax(axis=1) == labels
    which = np.clip(np.ceil(top * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):  # an empty bin: 0 / 0, NaN
        confidence = np.bincount(which, weights=top, minlength=bins) / counts
        accuracy = np.bincount(which, weights=right, minlength=bins) / counts
    return counts, confidence, accuracy


def expected_calibration_error(probabilities, labels, bins=BINS):
    """The ECE of probabilities (N, C) against labels (N,), a number in [0, 1]."""
    counts, confidence, accuracy = reliability(probabilities, labels, bins)
    filled = counts > 0
    return float(np.sum(counts[filled] * np.abs(accuracy[filled] - confidence[filled])) / counts.sum())


def summary(probabilities, labels, bins=BINS):
    """stats.json's "calibration": {"expected_calibration_error", "bins", "bin_counts",
    "bin_confidence", "bin_accuracy"} (null for an empty bin), 6 decimals."""
    counts, confidence, accuracy = reliability(probabilities, labels, bins)

    def listed(values):
        return [None if np.isnan(v) else round(float(v), 6) for v in values]

    return {"expected_calibration_error": round(expected_calibration_error(probabilities, labels, bins), 6),
            "bins": bins, "bin_counts": counts.tolist(), "bin_confidence": listed(confidence),
            "bin_accuracy": listed(accuracy)}
