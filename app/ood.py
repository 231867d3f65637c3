"""Is this a digit at all? How far an input is from the digits the model learned from.

A softmax always names some digit: its ten outputs are made to add up to 1, so
noise, a scribble or a letter gets a "most likely digit" too, often with a
probability near 1 (the default model gives uniform noise more than 0.99 nine
times out of ten). The probability says which digit, not whether it is one.

The method: the Mahalanobis distance of Lee et al. (2018, "A simple unified
framework for detecting out-of-distribution samples and adversarial attacks"),
fitted on the training images (20,000 of them), with one covariance shared by the ten digits:

    A       the first hidden layer's outputs for an input (H,) (H = 150 for the
            default network; the input itself for a network without hidden layers)
    mu_c    the mean of A over the training images of digit c, (10, H)
    Sigma   the covariance of A - mu_label over the training images, (H, H)
    d(x)    min over c of (A - mu_c)^T Sigma^-1 (A - mu_c)

An input is unlike the digits when d(x) is above the distance that
THRESHOLD_QUANTILE of the training images stay under. Why this one:
  - the maximum softmax probability (Hendrycks and Gimpel, 2017), the baseline,
    fails here: noise gets above 0.99; on benchmarks/ood.py's sets it flags 3 %
    of the MNIST test digits and still misses most non-digits;
  - the energy score (Liu et al., 2020) reads the same ten logits, and missed
    95 % of uniform noise there;
  - the Mahalanobis distance asks whether the hidden layer's pattern is one of
    the ten clusters that the training digits form. It needs a mean, a
    covariance and a pseudo-inverse, nothing trained again, and keeps little:
    10 x H means, an H x H precision matrix, a threshold (about 90 kB), saved in
    the model file. Lee et al. found earlier layers useful too; on our sets the
    first hidden layer flags more non-digits than the last at the same rate of
    test digits flagged (lines 35 % against 22 %, scribbles 42 % against 35 %).
What the network's features miss, the ink's own shape shows: a box filled solid,
more ink or a flatter shape than any training digit has (SHAPE_QUANTILE of them
stay within each limit); and predict.prepare reports what it leaves out (ink
scattered as specks, a second mark). benchmarks/ood.py measures all of it on
home-made non-digits and digits: letters, which are strokes like digits, are the
hardest, and most of them pass as digits.
"""

import numpy as np

FIT_IMAGES = 20_000         # training images the statistics are fitted on, at most (fitted_members)
THRESHOLD_QUANTILE = 0.99   # the training images' distances: 1 % of them lie above the threshold
SHAPE_QUANTILE = 0.9995     # ... and 0.05 % of them lie beyond each limit of the ink's shape
NARROW = 0.25               # a box narrower than this for its height holds one stroke: its fill says nothing
STRAY_LIMIT = 0.5           # more than this share of the ink dropped as specks: no one digit
RIDGE = 1e-3                # times the mean variance, added to the covariance's diagonal: units that
                            # never fire make it singular, and their precision stays moderate


def features(model, X):
    """The first hidden layer's outputs (N, H) float64 for inputs X (N, 784) (X itself for a
    network without hidden layers)."""
    A = np.asarray(X, dtype=np.float32)
    if len(model.layers) > 1:
        with np.errstate(over="ignore", invalid="ignore"):  # a model whose sums overflow: NaN, said by its caller
            A = model.layers[0].forward(A)
    return A.astype(np.float64)


SHAPES = ("ink", "fill", "flatness")  # what ink_shape measures, in order


def ink_shape(X):
    """(N, 3) for 28x28 inputs X (N, 784): the pixels of ink (over 0.5), the share of its box
    they fill, and the box's width over its height."""
    ink = np.asarray(X).reshape(-1, 28, 28) > 0.5
    rows, columns = ink.any(axis=2), ink.any(axis=1)
    height = 28 - rows.argmax(axis=1) - rows[:, ::-1].argmax(axis=1)
    width = 28 - columns.argmax(axis=1) - columns[:, ::-1].argmax(axis=1)
    pixels = ink.sum(axis=(1, 2))
    return np.stack([pixels, pixels / np.maximum(height * width, 1), width / np.maximum(height, 1)], axis=1)


def as_inputs(images):
    """Network inputs (N, 784) float32 in [0, 1] from uint8 pixels (as data.to_inputs makes
    them: the same float32 product), or the inputs themselves when they are floats already."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) * np.float32(1 / 255)
    return images


def fit(model, images, labels, chunk=10_000):
    """The statistics of the training images' features: {"class_means": (C, H),
    "precision": (H, H), "threshold": the distance THRESHOLD_QUANTILE of them stay under,
    "shape_limits": (3,) the ink_shape that SHAPE_QUANTILE of them stay within}.
    images (N, 784): uint8 pixels, or inputs in [0, 1] (as_inputs), read `chunk` at a time
    so that the inputs of all of them are never in memory at once; labels (N,) with every
    class 0..C-1 present."""
    n_classes = model.layer_sizes[-1]
    chunks = [slice(start, start + chunk) for start in range(0, len(labels), chunk)]
    A, shapes = [], []
    for part in chunks:
        inputs = as_inputs(images[part])
        A.append(features(model, inputs).astype(np.float32))  # kept as float32: (N, H) is all that stays
        shapes.append(ink_shape(inputs))
    A = np.concatenate(A)
    means = np.stack([A[labels == digit].mean(axis=0, dtype=np.float64) for digit in range(n_classes)])
    # One covariance for all the digits, each image around its own class's mean:
    # mean of (a - mu_y)(a - mu_y)^T = mean of a a^T - sum over c of (n_c / N) mu_c mu_c^T,
    # with a a^T summed by one float32 product (the features are float32 already).
    shares = np.bincount(labels, minlength=n_classes) / len(labels)
    covariance = (A.T @ A).astype(np.float64) / len(labels) - (means * shares[:, None]).T @ means
    covariance += RIDGE * max(float(np.trace(covariance)) / len(covariance), 1e-12) * np.eye(len(covariance))
    fitted = {"class_means": means, "precision": np.linalg.pinv(covariance, hermitian=True)}
    fitted["whitening"] = whitened(fitted)
    distances = np.concatenate([distance(fitted, A[part]) for part in chunks])
    fitted["threshold"] = float(np.quantile(distances, THRESHOLD_QUANTILE))
    fitted["shape_limits"] = np.quantile(np.concatenate(shapes), SHAPE_QUANTILE, axis=0)
    return fitted


def whitened(fitted):
    """(W (H, H), the class means times W (C, H)), where W W^T = P, the precision matrix (W
    from P's eigenvectors, scaled by the square roots of its eigenvalues)."""
    eigenvalues, eigenvectors = np.linalg.eigh(fitted["precision"])
    W = eigenvectors * np.sqrt(np.maximum(eigenvalues, 0))
    return W, fitted["class_means"] @ W


def distance(fitted, A):
    """The squared Mahalanobis distance (N,) of features A (N, H) to the nearest class mean:
    min over c of (A - mu_c)^T P (A - mu_c) = |A W - mu_c W|^2 (W: fitted["whitening"], made
    once by whitened): one product for all the classes, and squares summed, with no large
    numbers subtracted."""
    W, centres = fitted["whitening"]
    Z = A @ W
    return np.min([((Z - centre) ** 2).sum(axis=1) for centre in centres], axis=0)


def unlike_digits(fitted, model, X):
    """(unlike (N,) bool, distance (N,)) for inputs X (N, 784): True where the input's distance
    is above the threshold, or its ink's shape beyond a limit. fitted None (a model file
    without the statistics): all False, NaN."""
    if fitted is None:
        return np.zeros(len(X), dtype=bool), np.full(len(X), np.nan)
    d = distance(fitted, features(model, X))
    shape = ink_shape(X)
    beyond = shape > fitted["shape_limits"]
    beyond[:, 1] &= shape[:, 2] >= NARROW  # an upright stroke, a 1, fills its narrow box: no blob
    return (d > fitted["threshold"]) | beyond.any(axis=1), d


def verdict(fitted, model, prepared):
    """Why the input of a predict.Prepared is not read as one digit, in the page's words, or
    None when it is one (or the model file has no statistics to tell)."""
    if prepared.marks > 1:
        return f"{prepared.marks} separate marks: the network reads one digit at a time"
    if fitted is None:
        return None
    if prepared.stray_ink > STRAY_LIMIT:
        return "most of the ink is scattered specks, not one mark"
    unlike, _ = unlike_digits(fitted, model, prepared.image.reshape(1, 784))
    return "unlike the digits it learned from" if unlike[0] else None


def to_members(fitted):
    """The model-file members (float32 arrays) for fitted statistics (mlp.OOD_MEMBERS)."""
    return {"ood.class_means": fitted["class_means"].astype(np.float32),
            "ood.precision": fitted["precision"].astype(np.float32),
            "ood.threshold": np.array(fitted["threshold"], dtype=np.float32),
            "ood.shape_limits": np.asarray(fitted["shape_limits"], dtype=np.float32)}


def from_members(members):
    """Fitted statistics from a model file's members ({} for a file without them: None)."""
    if not members:
        return None
    fitted = {"class_means": members["ood.class_means"].astype(np.float64),
              "precision": members["ood.precision"].astype(np.float64),
              "threshold": float(members["ood.threshold"]),
              "shape_limits": members["ood.shape_limits"].astype(np.float64)}
    fitted["whitening"] = whitened(fitted)  # once for the model, not at every reading
    return fitted


def fitted_members(model, images, labels):
    """The model-file members of fit(model, images, labels): what a run saves beside the weights.

    Fitted on FIT_IMAGES of the training images at most, evenly spread (every third of MNIST's
    60,000), in a third of the time all of them take: on benchmarks/ood.py's sets the default
    model then flags 63 % of the non-digits and 1.1 % of the test digits, against 61 % and
    0.95 % fitted on all 60,000. None ({}) when a digit has
    fewer than 2 of them (a mean and a spread need two), so that the model file simply lacks
    them, as one written before they existed does."""
    stride = max(1, len(labels) // FIT_IMAGES)
    images, labels = images[::stride], labels[::stride]
    if np.bincount(labels, minlength=model.layer_sizes[-1]).min() < 2:
        return {}
    return to_members(fit(model, images, labels))
