"""Is this a digit at all? How far an input is from the digits the model learned from.

A softmax always names some digit: its ten outputs are made to add up to 1, so
noise, a scribble or a letter gets a "most likely digit" too, often with a
probability near 1 (the default model gives uniform noise more than 0.99 nine
times out of ten). The probability says which digit, not whether it is one.

Two measures of how unlike the training digits an input is, both fitted on
10,000 of the training images, each asking a different question:

1. Does the network's first hidden layer see one of the ten patterns it learned?
   The Mahalanobis distance of Lee et al. (2018, "A simple unified framework for
   detecting out-of-distribution samples and adversarial attacks"), with one
   covariance shared by the ten digits:

    A       the first hidden layer's outputs for an input (H,) (H = 150 for the
            default network; the input itself for a network without hidden layers)
    mu_c    the mean of A over the training images of digit c, (10, H)
    Sigma   the covariance of A - mu_label over the training images, (H, H)
    d(x)    min over c of (A - mu_c)^T Sigma^-1 (A - mu_c)

2. Do the pixels look like a digit? A probabilistic PCA for each digit (Tipping
   and Bishop, 1999, "Probabilistic principal component analysis"): a Gaussian
   over the D = 784 pixels that spreads along the k = PIXEL_DIRECTIONS directions
   in which the training images of digit c vary most, and a little, equally, in
   all the others:

    m_c        the mean image of digit c, (D,)
    U_c        its k directions of largest variance, orthonormal rows (k, D)
    lambda_c   the variance along each, (k,)
    sigma2_c   the variance left, per remaining direction: (the total variance
               - the sum of lambda_c) / (D - k)
    the covariance U_c^T (diag(lambda_c) - sigma2_c I) U_c + sigma2_c I, so that
    -log p(x | c) = 1/2 [ sum_j p_j^2 / lambda_j + (|x - m_c|^2 - |p|^2) / sigma2_c
                          + sum_j log lambda_j + (D - k) log sigma2_c + D log 2 pi ]
    with p = U_c (x - m_c), and e(x) = min over c of -log p(x | c).

   The directions are found by subspace iteration from a random start (Halko,
   Martinsson and Tropp, 2011): a few products with each digit's images, where
   the eigenvectors of ten 784 x 784 covariances would take about 1 s.

An input is unlike the digits when d(x) or e(x) is above its threshold. Both
thresholds are the same quantile of the scores of 10,000 other training images,
which the fit has not seen, chosen so that 1 - THRESHOLD_QUANTILE (1 %) of them are
above one or the other: the share of new digits flagged.
Why these two:
  - the maximum softmax probability (Hendrycks and Gimpel, 2017), the baseline,
    fails here: noise gets above 0.99; on benchmarks/ood.py's sets it flags 3 %
    of the MNIST test digits and still misses most non-digits;
  - the energy score (Liu et al., 2020) reads the same ten logits, and missed
    95 % of uniform noise there;
  - the Mahalanobis distance asks whether the hidden layer's pattern is one of
    the ten clusters the training digits form. Lee et al. found earlier layers
    useful too; on our sets the first hidden layer flags more non-digits than
    the last at the same rate of test digits flagged;
  - the network's features are made to tell digits apart, not to describe
    them: most letters make a pattern close to some digit's. The pixels' model
    describes what each digit looks like. On benchmarks/ood.py's sets (the
    default model, shape limits included, seeds 0 and 1), each alone with a
    threshold that 1 % of its fitted images pass: the distance flags 62 % of
    the non-digits (letters 20 %), the pixels' model 75 % (letters 60 %), each
    1.1 % of the test digits. United, with thresholds set on training digits
    the fit has not seen: 69 % (letters 34 %) and 0.84 % of the test digits.
    The pixels' model alone, made as strict, does about as well on these sets;
    the pair keeps the network's own view of an input in the verdict.
  Neither is trained: means, a few products and two small eigendecompositions.
  Saved in the model file (float32, about 0.4 MB for the default network).
What the network's features miss, the ink's own shape shows: a box filled solid,
more ink or a flatter shape than any training digit has (SHAPE_QUANTILE of them
stay within each limit); and predict.prepare reports what it leaves out (ink
scattered as specks, a second mark). benchmarks/ood.py measures all of it on
home-made non-digits and digits: letters, which are strokes like digits, are the
hardest, and many of them pass as digits.
"""

import numpy as np

FIT_IMAGES = 10_000         # training images the statistics are fitted on, and as many set the thresholds
THRESHOLD_QUANTILE = 0.99   # 1 % of the images that set the thresholds lie above one or the other
SHAPE_QUANTILE = 0.9995     # 0.05 % of the fitted images lie beyond each limit of the ink's shape
NARROW = 0.25               # a box narrower than this for its height holds one stroke: its fill says nothing
STRAY_LIMIT = 0.5           # more than this share of the ink dropped as specks: no one digit
RIDGE = 1e-3                # times the mean variance, added to the covariance's diagonal: units that
                            # never fire make it singular, and their precision stays moderate
PIXEL_DIRECTIONS = 10       # k: the directions of largest variance each digit's pixel model keeps
SPARE_DIRECTIONS = 10       # the subspace iteration follows k + this many, for accuracy in the first k
ITERATIONS = 3              # of the subspace iteration: the k found then hold 99.8 % of the variance of
                            # the exact top k, and flag the same share of test digits as those


def features(model, X):
    """The first hidden layer's outputs (N, H) float32 for inputs X (N, 784) float32 (X itself
    for a network without hidden layers)."""
    A = np.asarray(X, dtype=np.float32)
    if len(model.layers) > 1:
        with np.errstate(over="ignore", invalid="ignore"):  # a model whose sums overflow: NaN, said by its caller
            A = model.layers[0].forward(A)
    return A


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
        inputs = images.astype(np.float32)
        inputs *= np.float32(1 / 255)  # in place: no second copy of them all
        return inputs
    return np.asarray(images, dtype=np.float32)


# ------------------------------------------------------------------ fitting

def fit(model, images, labels, check_images, seed=0):
    """The statistics of the training images: {"class_means": (C, H), "precision": (H, H)
    (the hidden layer's), "pixel_means": (C, D), "pixel_directions": (C, k, D),
    "pixel_variances": (C, k), "pixel_noise": (C,) (the pixels' probabilistic PCA),
    "threshold", "pixel_threshold" (see union_thresholds, over the scores of check_images),
    "shape_limits": (3,) the ink_shape that SHAPE_QUANTILE of images stay within}.
    images (N, D): uint8 pixels, or inputs in [0, 1] (as_inputs); labels (N,) with every
    class 0..C-1 present; check_images (M, D): other training images, which set the
    thresholds (see fitted_members); seed: the subspace iteration's random start."""
    n_classes = model.layer_sizes[-1]
    by_digit = np.argsort(labels, kind="stable")  # each digit's images side by side: slices, not copies
    X, labels = as_inputs(images[by_digit]), labels[by_digit]
    ends = np.cumsum(np.bincount(labels, minlength=n_classes))
    digits = [slice(end - count, end) for end, count in zip(ends, np.bincount(labels, minlength=n_classes))]
    A = features(model, X)
    statistics = {**fit_hidden(A, digits), **fit_pixels(X, digits, np.random.default_rng(seed)),
                  "threshold": np.inf, "pixel_threshold": np.inf,
                  "shape_limits": np.quantile(ink_shape(X), SHAPE_QUANTILE, axis=0)}
    # The statistics as the model file keeps them (float32): a loaded file gives the very scores
    # that the thresholds are chosen on.
    fitted = from_members(to_members(statistics))
    check = as_inputs(check_images)
    fitted["threshold"], fitted["pixel_threshold"] = union_thresholds(distance(fitted, features(model, check)),
                                                                      pixel_score(fitted, check))
    return fitted


def fit_hidden(A, digits):
    """{"class_means": (C, H) float64, "precision": (H, H) float64} of features A (N, H)
    float32, whose rows A[digits[c]] are digit c's."""
    means = np.stack([A[rows].mean(axis=0, dtype=np.float64) for rows in digits])
    # One covariance for all the digits, each image around its own class's mean:
    # mean of (a - mu_y)(a - mu_y)^T = mean of a a^T - sum over c of (n_c / N) mu_c mu_c^T,
    # with a a^T summed by one float32 product (the features are float32 already).
    shares = np.array([rows.stop - rows.start for rows in digits]) / len(A)
    covariance = (A.T @ A).astype(np.float64) / len(A) - (means * shares[:, None]).T @ means
    covariance += RIDGE * max(float(np.trace(covariance)) / len(covariance), 1e-12) * np.eye(len(covariance))
    return {"class_means": means, "precision": np.linalg.pinv(covariance, hermitian=True)}


def fit_pixels(X, digits, rng, k=PIXEL_DIRECTIONS):
    """{"pixel_means": (C, D), "pixel_directions": (C, k, D), "pixel_variances": (C, k),
    "pixel_noise": (C,)}, float32: each digit's probabilistic PCA of inputs X (N, D) float32,
    whose rows X[digits[c]] are digit c's.

    The variances are floored as the maximum-likelihood model has them: lambda_j at least
    sigma2 (the model's spread along a direction is never below the rest's), and sigma2 at
    least RIDGE times the mean pixel variance (a digit with fewer images than directions)."""
    n = X.shape[1]
    squares = np.einsum("ij,ij->i", X, X)  # |x|^2 (N,), float32: sums of D terms, see pixel_score
    means, directions, variances, noise = [], [], [], []
    for rows in digits:
        images = X[rows]
        mean = (np.ones(len(images), np.float32) @ images).astype(np.float64) / len(images)  # one float32 product
        U, lam = top_directions(images, mean.astype(np.float32), k, rng)
        total = squares[rows].mean(dtype=np.float64) - mean @ mean  # the variance in all D directions
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


def union_thresholds(distances, scores):
    """(distance threshold, pixel-score threshold) for the training images' distances and
    pixel scores (N,): the same quantile of each, chosen so that 1 - THRESHOLD_QUANTILE of the
    images are above one threshold or the other (one image more where ranks tie).

    Each image has a rank in each list (0 for the lowest score). With each threshold the
    score at rank cut - 1, an image is above a threshold when its rank in that list is cut or
    more, and above one or the other when the higher of its two ranks is: cut is the
    THRESHOLD_QUANTILE quantile of those higher ranks."""
    by_distance, by_score = np.sort(distances), np.sort(scores)
    higher = np.maximum(np.searchsorted(by_distance, distances), np.searchsorted(by_score, scores))
    cut = int(np.sort(higher)[int(THRESHOLD_QUANTILE * len(higher))])
    below = max(cut - 1, 0)
    return float(by_distance[below]), float(by_score[below])


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

def whitened(fitted):
    """(W (H, H), the class means times W (C, H)), float32, where W W^T = P, the precision
    matrix (W from P's eigenvectors, scaled by the square roots of its eigenvalues)."""
    eigenvalues, eigenvectors = np.linalg.eigh(fitted["precision"])
    W = eigenvectors * np.sqrt(np.maximum(eigenvalues, 0))
    return W.astype(np.float32), (fitted["class_means"] @ W).astype(np.float32)


def distance(fitted, A):
    """The squared Mahalanobis distance (N,) float64 of features A (N, H) to the nearest class
    mean: min over c of (A - mu_c)^T P (A - mu_c) = |Z - z_c|^2 with Z = A W, z_c = mu_c W
    (W: fitted["whitening"], made once by whitened), = |Z|^2 - 2 Z . z_c + |z_c|^2: two
    products for all the classes. In float32, each product sums H terms and is within H
    float32 epsilons of |Z|^2 (1.8e-5 of it for H = 150; |Z|^2 is a few hundred for a digit,
    as the distances are), far finer than the threshold needs."""
    W, centres = fitted["whitening"]
    Z = np.asarray(A, dtype=np.float32) @ W
    squares = np.einsum("ij,ij->i", Z, Z).astype(np.float64)
    centre_squares = (centres.astype(np.float64) ** 2).sum(axis=1)
    to_centres = squares[:, None] - 2 * (Z @ centres.T).astype(np.float64) + centre_squares
    return np.maximum(to_centres.min(axis=1), 0)


def pixel_score(fitted, X):
    """e(x) (N,) float64: min over the digits c of -log p(x | c), the negative log-likelihood
    of inputs X (N, D) under each digit's probabilistic PCA (see the module's docstring).

    One float32 product of X with every digit's mean and directions at once gives x . m_c and
    U_c x; then |x - m_c|^2 = |x|^2 - 2 x . m_c + |m_c|^2 and p = U_c x - U_c m_c. Each
    product sums D = 784 terms of size at most 1 (inputs and means in [0, 1], unit directions),
    so it is within 784 float32 epsilons (1e-4) of its value times |x|^2 ~ 100: about 0.01 on
    |x - m_c|^2, 0.3 on a score divided by sigma2 ~ 0.03, where the scores of the training
    digits spread over more than a thousand."""
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


def unlike_digits(fitted, model, X):
    """unlike (N,) bool for inputs X (N, 784): True where the input's hidden-layer distance or
    pixel score is above its threshold, or its ink's shape beyond a limit. fitted None (a
    model file without the statistics): all False."""
    if fitted is None:
        return np.zeros(len(X), dtype=bool)
    X = np.asarray(X, dtype=np.float32)
    far = distance(fitted, features(model, X)) > fitted["threshold"]
    far |= pixel_score(fitted, X) > fitted["pixel_threshold"]
    shape = ink_shape(X)
    beyond = shape > fitted["shape_limits"]
    beyond[:, 1] &= shape[:, 2] >= NARROW  # an upright stroke, a 1, fills its narrow box: no blob
    return far | beyond.any(axis=1)


def verdict(fitted, model, prepared):
    """Why the input of a predict.Prepared is not read as one digit, in the page's words, or
    None when it is one (or the model file has no statistics to tell)."""
    if prepared.marks > 1:
        return f"{prepared.marks} separate marks: the network reads one digit at a time"
    if fitted is None:
        return None
    if prepared.stray_ink > STRAY_LIMIT:
        return "most of the ink is scattered specks, not one mark"
    unlike = unlike_digits(fitted, model, prepared.image.reshape(1, 784))
    return "unlike the digits it learned from" if unlike[0] else None


# ------------------------------------------------------------------ the model file

SAVED = {"class_means": "ood.class_means", "precision": "ood.precision", "threshold": "ood.threshold",
         "pixel_means": "ood.pixel_means", "pixel_directions": "ood.pixel_directions",
         "pixel_variances": "ood.pixel_variances", "pixel_noise": "ood.pixel_noise",
         "pixel_threshold": "ood.pixel_threshold", "shape_limits": "ood.shape_limits"}  # fitted key: member


def to_members(fitted):
    """The model-file members for fitted statistics (model_file.OOD_MEMBERS): float32 arrays,
    and the two thresholds as they are (float64), chosen on the float32 statistics' scores."""
    exact = ("threshold", "pixel_threshold")
    return {member: np.asarray(fitted[key], dtype=np.float64 if key in exact else np.float32)
            for key, member in SAVED.items()}


def from_members(members):
    """Fitted statistics from a model file's members ({} for a file without them: None)."""
    if not members:
        return None
    fitted = {key: members[member] for key, member in SAVED.items()}
    fitted["class_means"] = fitted["class_means"].astype(np.float64)
    fitted["precision"] = fitted["precision"].astype(np.float64)
    fitted["threshold"], fitted["pixel_threshold"] = float(fitted["threshold"]), float(fitted["pixel_threshold"])
    fitted["whitening"] = whitened(fitted)  # once for the model, not at every reading
    fitted.update(pixel_constants(fitted))
    return fitted


def fitted_members(model, images, labels):
    """The model-file members of fit(): what a run saves beside the weights.

    The statistics are fitted on FIT_IMAGES of the training images, drawn at random (a
    seeded choice: MNIST's order is not random, and every second image is not a fair half
    of it), and the thresholds are set on as many others, which the statistics have not
    seen, as a new digit is: a threshold set on the fitted images themselves flags more
    than 1 % of new ones (about 1.2 %), since the statistics fit their own images best.
    With fewer than 2 FIT_IMAGES images, half are fitted and half set the thresholds.
    None ({}) when a digit has fewer than 2 fitted images (a mean and a spread need two),
    so that the model file simply lacks them, as one written before they existed does."""
    order = np.random.default_rng(0).permutation(len(labels))
    half = min(FIT_IMAGES, len(labels) // 2)
    fitted_rows, check_rows = np.sort(order[:half]), np.sort(order[half:2 * half])
    if np.bincount(labels[fitted_rows], minlength=model.layer_sizes[-1]).min() < 2:
        return {}
    return to_members(fit(model, images[fitted_rows], labels[fitted_rows], images[check_rows]))
