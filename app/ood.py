"""Is this a digit at all? How unlike the digits the model learned from an input is.

A softmax always names some digit: its ten outputs are made to add up to 1, so
noise, a scribble or a letter gets a "most likely digit" too, often with a
probability near 1 (the default model gives uniform noise more than 0.99 nine
times out of ten). The probability says which digit, not whether it is one.

So the question is asked of the pixels instead: do they look like one of the ten
digits? A probabilistic PCA for each digit (Tipping and Bishop, 1999,
"Probabilistic principal component analysis"), fitted on 10,000 of the training
images: a Gaussian over the D = 784 pixels that spreads along the
k = PIXEL_DIRECTIONS directions in which the training images of digit c vary
most, and a little, equally, in all the others:

    m_c        the mean image of digit c, (D,)
    U_c        its k directions of largest variance, orthonormal rows (k, D)
    lambda_c   the variance along each, (k,)
    sigma2_c   the variance left, per remaining direction: (the total variance
               - the sum of lambda_c) / (D - k)
    the covariance U_c^T (diag(lambda_c) - sigma2_c I) U_c + sigma2_c I, so that
    -log p(x | c) = 1/2 [ sum_j p_j^2 / lambda_j + (|x - m_c|^2 - |p|^2) / sigma2_c
                          + sum_j log lambda_j + (D - k) log sigma2_c + D log 2 pi ]
    with p = U_c (x - m_c), and the score e(x) = min over c of -log p(x | c).

The directions are found by subspace iteration from a random start (Halko,
Martinsson and Tropp, 2011): a few products with each digit's images, where the
eigenvectors of ten 784 x 784 covariances would take about 1 s. An input is
unlike the digits when e(x) is above the threshold that THRESHOLD_QUANTILE of
10,000 other training images stay at or under: images the fit has not seen, as a
new digit is, so that about 1 % of new digits are flagged.

Why this one:
  - the maximum softmax probability (Hendrycks and Gimpel, 2017), the baseline,
    fails here: noise gets above 0.99; on benchmarks/ood.py's sets it flags 3 %
    of the MNIST test digits and still misses most non-digits;
  - the energy score (Liu et al., 2020) reads the same ten logits, and missed
    95 % of uniform noise there;
  - the Mahalanobis distance of Lee et al. (2018) on the first hidden layer asks
    whether the network sees one of the ten patterns it learned. But the
    network's features are made to tell digits apart, not to describe them:
    most letters make a pattern close to some digit's. On benchmarks/ood.py's
    sets (the default model, shape limits included, seeds 0 and 1), each with a
    threshold set as here, it flags 58-60 % of the non-digits (letters 14 %),
    the pixels' model 71-74 % (letters 51 %), both 0.8 % of the test digits;
    the two together did no better than the pixels' model alone. (With the
    tilt limit below, the check flags 76-77 %.)
  Nothing is trained: means, a few products and ten small eigendecompositions,
  saved in the model file (float32, and the threshold float64: about 0.35 MB).
What the model misses, the ink's own shape shows: a box filled solid (drawn light
on the page's dark canvas; on paper a dark patch that wide is the paper's shade,
and predict.find_ink finds no stroke in it), more ink or a flatter shape than any
training digit has (SHAPE_QUANTILE of them stay within each limit), long ink
leaning further from upright than a 1 does (a line drawn at 30 degrees, which
the pixel model takes for a slanted 1); and predict.prepare reports what it
leaves out (ink scattered as specks, a second mark). benchmarks/ood.py measures
all of it on home-made non-digits and digits: letters, which are strokes like
digits, are the hardest, and many of them pass as digits.
"""

import numpy as np

FIT_IMAGES = 10_000         # training images the statistics are fitted on, and as many set the threshold
THRESHOLD_QUANTILE = 0.99   # of the images that set the threshold, this share score at or under it
SHAPE_QUANTILE = 0.9995     # 0.05 % of the fitted images lie beyond each limit of the ink's shape
NARROW = 0.25               # a box narrower than this for its height holds one stroke: its fill says nothing
STRAY_LIMIT = 0.5           # more than this share of the ink dropped as specks: no one digit
LONG_SHAPE = 8              # ink whose variance along its main axis is this many times that across is
                            # long, about 2.8 (the square root) times as long as wide: a 1, a line
TILT_LIMIT = 55             # degrees from upright: long ink leaning further is no 1 (34 of the
                            # 60,000 training images lie beyond, most of them 5s; none of the 10,000 test digits)
RIDGE = 1e-3                # times the mean pixel variance: the least variance sigma2 a digit's model keeps
PIXEL_DIRECTIONS = 10       # k: the directions of largest variance each digit's pixel model keeps
SPARE_DIRECTIONS = 10       # the subspace iteration follows k + this many, for accuracy in the first k
ITERATIONS = 3              # of the subspace iteration: the k found then hold 99.8 % of the variance of
                            # the exact top k, and flag the same share of test digits as those


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


def stroke_tilt(X):
    """(N,) for 28x28 inputs X (N, 784): how far, in degrees, long ink leans from upright; 0 for
    ink that is not long. The ink's second moments give its main axis and the variance of its
    pixels (weighted by their ink) along it and across it; ink is long when the one is more than
    LONG_SHAPE times the other (a 1, a line, a ring lying flat). A 1 leaning 30 degrees measures
    30, a horizontal line 90."""
    ink = np.asarray(X, dtype=np.float64).reshape(-1, 28, 28)
    rows, columns = np.indices((28, 28))
    mass = np.maximum(ink.sum(axis=(1, 2)), 1e-12)

    def mean(values):
        return np.einsum("nij,ij->n", ink, values) / mass
    centre_row, centre_column = mean(rows), mean(columns)
    row_variance = mean(rows * rows) - centre_row ** 2
    column_variance = mean(columns * columns) - centre_column ** 2
    covariance = mean(rows * columns) - centre_row * centre_column
    half_sum, half_difference = (row_variance + column_variance) / 2, (row_variance - column_variance) / 2
    spread = np.hypot(half_difference, covariance)
    along, across = half_sum + spread, np.maximum(half_sum - spread, 1e-12)  # the covariance's eigenvalues
    tilt = np.abs(np.degrees(0.5 * np.arctan2(2 * covariance, row_variance - column_variance)))
    return np.where(along > LONG_SHAPE * across, tilt, 0.0)


def as_inputs(images):
    """Network inputs (N, 784) float32 in [0, 1] from uint8 pixels (as data.to_inputs makes
    them: the same float32 product), or the inputs themselves when they are floats already."""
    if images.dtype == np.uint8:
        inputs = images.astype(np.float32)
        inputs *= np.float32(1 / 255)  # in place: no second copy of them all
        return inputs
    return np.asarray(images, dtype=np.float32)


# ------------------------------------------------------------------ fitting

def fit(images, labels, check_images, n_classes=10, seed=0):
    """The statistics of the training images: {"pixel_means": (C, D), "pixel_directions":
    (C, k, D), "pixel_variances": (C, k), "pixel_noise": (C,) (each digit's probabilistic
    PCA), "threshold" (the score THRESHOLD_QUANTILE of check_images stay at or under),
    "shape_limits": (3,) the ink_shape that SHAPE_QUANTILE of images stay within}, with
    pixel_constants' entries.
    images (N, D): uint8 pixels, or inputs in [0, 1] (as_inputs); labels (N,) with every
    digit 0..C-1 present (C = n_classes); check_images (M, D): other training images, which
    set the threshold (see fitted_members); seed: the subspace iteration's random start."""
    by_digit = np.argsort(labels, kind="stable")  # each digit's images side by side: slices, not copies
    images, labels = images[by_digit], labels[by_digit]
    counts = np.bincount(labels, minlength=n_classes)
    digits = [slice(end - count, end) for end, count in zip(np.cumsum(counts), counts)]
    statistics = {**fit_pixels(images, digits, np.random.default_rng(seed)), "threshold": np.inf,
                  "shape_limits": np.quantile(in_chunks(ink_shape, images), SHAPE_QUANTILE, axis=0)}
    # The statistics as the model file keeps them (float32): a loaded file gives the very scores
    # that the threshold is chosen on.
    fitted = from_members(to_members(statistics))
    scores = np.sort(in_chunks(lambda X: pixel_score(fitted, X), check_images))
    fitted["threshold"] = float(scores[max(int(np.ceil(THRESHOLD_QUANTILE * len(scores))) - 1, 0)])
    return fitted


def in_chunks(function, images, size=1000):
    """function(inputs) for the inputs of `size` images at a time (as_inputs), concatenated.
    Those of 10,000 images at once would take 31 MB of memory the process has not touched
    before, and a first touch costs time (about 0.1 s for two such sets on this project's
    machine); a chunk's memory is used again by the next."""
    return np.concatenate([function(as_inputs(images[start:start + size])) for start in range(0, len(images), size)])


def fit_pixels(X, digits, rng, k=PIXEL_DIRECTIONS):
    """{"pixel_means": (C, D), "pixel_directions": (C, k, D), "pixel_variances": (C, k),
    "pixel_noise": (C,)}, float32: each digit's probabilistic PCA of images X (N, D), uint8
    pixels or inputs (as_inputs, one digit at a time), whose rows X[digits[c]] are digit c's.

    The variances are floored as the maximum-likelihood model has them: lambda_j at least
    sigma2 (the model's spread along a direction is never below the rest's), and sigma2 at
    least RIDGE times the mean pixel variance (a digit with fewer images than directions)."""
    n = X.shape[1]
    means, directions, variances, noise = [], [], [], []
    for rows in digits:
        images = as_inputs(X[rows])
        mean = (np.ones(len(images), np.float32) @ images).astype(np.float64) / len(images)  # one float32 product
        U, lam = top_directions(images, mean.astype(np.float32), k, rng)
        squares = np.einsum("ij,ij->i", images, images)  # |x|^2, float32: sums of D terms, see pixel_score
        total = squares.mean(dtype=np.float64) - mean @ mean  # the variance in all D directions
        sigma2 = max((total - lam.sum()) / (n - k), RIDGE * total / n, 1e-12)
        means.append(mean)
        directions.append(U)
        variances.append(np.maximum(lam, sigma2))
        noise.append(sigma2)
    fitted = {"pixel_means": means, "pixel_directions": directions, "pixel_variances": variances, "pixel_noise": noise}
    return {name: np.asarray(values, dtype=np.float32) for name, values in fitted.items()}


def top_directions(images, mean, k, rng):
    """(U (k, D) orthonormal rows, lambda (k,) float64): the k directions along which images
    (n, D) float32 vary most around their mean (D,), and the mean square along each, by
    subspace iteration (Halko, Martinsson and Tropp, 2011, algorithm 4.4): start from
    k + SPARE_DIRECTIONS random directions Q, multiply them by the covariance ITERATIONS times
    (which stretches each direction by its variance, so that the largest come to dominate),
    keeping them orthonormal, then diagonalise the small covariance within the subspace.
    The centred images D = images - mean are never made: D Q = images Q - mean Q for each row,
    and D^T (D Q) = images^T (D Q), since the columns of D Q add up to 0."""
    def centred_times(Q):  # D Q (n, k + spare)
        return images @ Q - mean @ Q
    Q = rng.standard_normal((images.shape[1], k + SPARE_DIRECTIONS)).astype(np.float32)
    for _ in range(ITERATIONS):
        Q, _ = np.linalg.qr(images.T @ centred_times(Q))
    B = centred_times(Q).astype(np.float64)  # the images' coordinates in the subspace
    lam, vectors = np.linalg.eigh(B.T @ B / len(images))  # ascending
    top = vectors[:, ::-1][:, :k]
    return (Q @ top.astype(np.float32)).T, np.maximum(lam[::-1][:k], 0)


def pixel_constants(fitted):
    """What pixel_score needs, made once from the saved pixel models: {"pixel_basis": (D, C + C k)
    every digit's mean and directions side by side, "mean_along": (C, k) U_c m_c,
    "mean_square": (C,) |m_c|^2, "log_constant": (C,) the terms of -log p(x | c) that do not
    depend on x}."""
    means, U = fitted["pixel_means"], fitted["pixel_directions"]
    n_classes, k, n = U.shape
    lam, sigma2 = fitted["pixel_variances"].astype(np.float64), fitted["pixel_noise"].astype(np.float64)
    return {"pixel_basis": np.concatenate([means, U.reshape(n_classes * k, n)]).T.copy(),
            "mean_along": np.einsum("ckd,cd->ck", U.astype(np.float64), means.astype(np.float64)),
            "mean_square": (means.astype(np.float64) ** 2).sum(axis=1),
            "log_constant": 0.5 * (np.log(lam).sum(axis=1) + (n - k) * np.log(sigma2) + n * np.log(2 * np.pi))}


# ------------------------------------------------------------------ scoring

def pixel_score(fitted, X):
    """e(x) (N,) float64: min over the digits c of -log p(x | c), the negative log-likelihood
    of inputs X (N, D) under each digit's probabilistic PCA (see the module's docstring).

    One float32 product of X with every digit's mean and directions at once gives x . m_c and
    U_c x; then |x - m_c|^2 = |x|^2 - 2 x . m_c + |m_c|^2 and p = U_c x - U_c m_c. Each
    product sums D = 784 terms of size at most 1 (inputs and means in [0, 1], unit directions),
    so it is within 784 float32 epsilons (1e-4) of its value times |x|^2 ~ 100: about 0.01 on
    |x - m_c|^2, under 2 on a score divided by sigma2 (0.007 for MNIST's 1s, the least; at most
    0.004 measured on the 10,000 test digits), where the scores of the training digits spread
    over more than a thousand."""
    X = np.asarray(X, dtype=np.float32)
    n_classes, k = fitted["pixel_variances"].shape
    products = (X @ fitted["pixel_basis"]).astype(np.float64)  # (N, C + C k)
    squares = np.einsum("ij,ij->i", X, X).astype(np.float64)
    to_mean = squares[:, None] - 2 * products[:, :n_classes] + fitted["mean_square"]  # |x - m_c|^2 (N, C)
    along = products[:, n_classes:].reshape(len(X), n_classes, k) - fitted["mean_along"]  # p (N, C, k)
    along **= 2  # p_j^2, in place
    rest = np.maximum(to_mean - np.einsum("ick->ic", along), 0)  # |x - m_c|^2 - |p|^2: outside the directions
    lam, sigma2 = fitted["pixel_variances"].astype(np.float64), fitted["pixel_noise"].astype(np.float64)
    nll = 0.5 * (np.einsum("ick,ck->ic", along, 1 / lam) + rest / sigma2) + fitted["log_constant"]
    return nll.min(axis=1)


def unlike_digits(fitted, X):
    """unlike (N,) bool for inputs X (N, 784): True where the input's pixel score is above the
    threshold, or its ink's shape beyond a limit, or its ink long and leaning further than a 1
    (stroke_tilt). fitted None (a model file without the statistics): all False."""
    if fitted is None:
        return np.zeros(len(X), dtype=bool)
    X = np.asarray(X, dtype=np.float32)
    shape = ink_shape(X)
    beyond = shape > fitted["shape_limits"]
    beyond[:, 1] &= shape[:, 2] >= NARROW  # an upright stroke, a 1, fills its narrow box: no blob
    return (pixel_score(fitted, X) > fitted["threshold"]) | beyond.any(axis=1) | (stroke_tilt(X) > TILT_LIMIT)


def verdict(fitted, prepared):
    """Why the input of a predict.Prepared is not read as one digit, in the page's words, or
    None when it is one (or the model file has no statistics to tell)."""
    if prepared.marks > 1:
        return f"{prepared.marks} separate marks: the network reads one digit at a time"
    if fitted is None:
        return None
    if prepared.stray_ink > STRAY_LIMIT:
        return "most of the ink is scattered specks, not one mark"
    unlike = unlike_digits(fitted, prepared.image.reshape(1, 784))
    return "unlike the digits it learned from" if unlike[0] else None


# ------------------------------------------------------------------ the model file

SAVED = {"pixel_means": "ood.pixel_means", "pixel_directions": "ood.pixel_directions",
         "pixel_variances": "ood.pixel_variances", "pixel_noise": "ood.pixel_noise",
         "threshold": "ood.pixel_threshold", "shape_limits": "ood.shape_limits"}  # fitted key: member


def to_members(fitted):
    """The model-file members for fitted statistics (model_file.OOD_MEMBERS): float32 arrays,
    and the threshold as it is (float64), chosen on the float32 statistics' scores."""
    return {member: np.asarray(fitted[key], dtype=np.float64 if key == "threshold" else np.float32)
            for key, member in SAVED.items()}


def members_problem(members):
    """Why a model file's statistics (its SAVED members) cannot be what fit() makes, or None:
    a value that is not a finite number, a mean outside [0, 1] (the mean of inputs in [0, 1]),
    a direction's entry outside [-1, 1] (a unit vector's), or a variance not above 0 (the
    score divides by them: 0 or less would make every score NaN, and the check silently none)."""
    fitted = {key: np.asarray(members[member], dtype=np.float64) for key, member in SAVED.items()}
    if not all(np.isfinite(value).all() for value in fitted.values()):
        return "NaN or infinite values"
    if not (0 <= fitted["pixel_means"]).all() or not (fitted["pixel_means"] <= 1).all():
        return "ood.pixel_means outside [0, 1]"
    if not (np.abs(fitted["pixel_directions"]) <= 1).all():
        return "ood.pixel_directions outside [-1, 1]"
    for key in ("pixel_variances", "pixel_noise"):
        if not (fitted[key] > 0).all():
            return f"{SAVED[key]} not above 0"
    return None


def from_members(members):
    """Fitted statistics from a model file's members ({} for a file without them: None)."""
    if not members:
        return None
    fitted = {key: members[member] for key, member in SAVED.items()}
    fitted["threshold"] = float(fitted["threshold"])
    fitted.update(pixel_constants(fitted))  # once for the model, not at every reading
    return fitted


def fitted_members(model, images, labels):
    """The model-file members of fit() for a model's training images: what a run saves beside
    its weights (one model for each of the model's outputs).

    The statistics are fitted on FIT_IMAGES of the training images, drawn at random (a
    seeded choice: MNIST's order is not random, and every second image is not a fair half
    of it), and the threshold is set on as many others, which the statistics have not
    seen, as a new digit is: a threshold set on the fitted images themselves flags more
    than 1 % of new ones (about 1.2 %), since the statistics fit their own images best.
    With fewer than 2 FIT_IMAGES images, half are fitted and half set the threshold.
    None ({}) when a digit has fewer than 2 fitted images (a mean and a spread need two),
    so that the model file simply lacks them, as one written before they existed does."""
    order = np.random.default_rng(0).permutation(len(labels))
    half = min(FIT_IMAGES, len(labels) // 2)
    fitted_rows, check_rows = np.sort(order[:half]), np.sort(order[half:2 * half])
    n_classes = model.layer_sizes[-1]
    if np.bincount(labels[fitted_rows], minlength=n_classes).min() < 2:
        return {}
    return to_members(fit(images[fitted_rows], labels[fitted_rows], images[check_rows], n_classes))
