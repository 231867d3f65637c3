"""The Markdown pages: every relative link and file path in them exists, docs/usage.md
documents every key of the stats.json that nn.py writes, and every number a page quotes about
the program's own behaviour (defaults, presets, sizes, limits) is the one in the code. A page
that points at a moved file, or quotes a number the code no longer has, misleads its reader."""

import inspect
import json
import re

import pytest

from conftest import PROJECT_DIR, run_nn

from app import calibration, cli, plots, report
from app.page import server, training_session
from app.predict import IMAGE_TYPES, MAX_PIXELS
from optimizers import learning_rate_at


def flags_of(settings):
    """'--optimizer nesterov --lr 0.2 ...': a preset's settings as flags, in cli.PRESETS's order."""
    return " ".join(f"--{key.replace('_', '-')} " + (" ".join(map(str, value)) if isinstance(value, list) else str(value))
                    for key, value in settings.items())


NUMBER_WORDS = dict(enumerate("zero one two three four five six seven eight nine ten".split()))
D, FAST = cli.DEFAULTS, cli.PRESETS["fast"]
STEPS_PER_EPOCH = 60_000 // D["batch_size"]  # the training set's 60,000 images, the last incomplete batch left out
# One evaluation at the end of each epoch (step % STEPS_PER_EPOCH == 0), one after the last step (app/monitor.py)
EVALUATIONS = D["steps"] // STEPS_PER_EPOCH + (D["steps"] % STEPS_PER_EPOCH != 0)
SIZES = [784, *D["hidden"], 10]
PARAMETERS = sum(n_in * n_out + n_out for n_in, n_out in zip(SIZES, SIZES[1:]))
FAST_LAST_RATE = learning_rate_at(FAST["steps"] - 1, FAST["steps"], FAST["lr"], FAST["lr_schedule"], FAST["warmup_steps"])
WEIGHT_TILES = inspect.signature(plots.first_layer_weights).parameters["count"].default  # weights.png
FAST_DRY_RUN_WARMUP = round(FAST["warmup_steps"] * cli.DRY_RUN_STEPS / FAST["steps"])

# Numbers the pages quote about the program, each against the code: (page, regular expression
# whose one group is the number as the page writes it, the text the code gives). Every match on
# the page must read the code's text, and there must be at least one. A number may run onto the
# next line, or the next line of a comment in a code block: spaces, line ends and # count as one
# space. Timings and accuracies are measurements, not the code's settings: they say which
# machine and are not checked here. README.md's rows go here too, in the same form.
FIGURES = [
    # the README: the original configuration, which the defaults are
    ("README.md", r"this configuration: (\d+) inputs", str(SIZES[0])),
    ("README.md", r"inputs -> (\d+ ReLU -> \d+ ReLU) -> \d+", " ReLU -> ".join(map(str, D["hidden"])) + " ReLU"),
    ("README.md", r"ReLU -> (\d+)\s+softmax", str(SIZES[-1])),
    ("README.md", r"plain\s+SGD \(learning rate ([\d.]+),", str(D["lr"])),
    ("README.md", r"rate [\d.]+, batch (\d+),", str(D["batch_size"])),
    ("README.md", r"batch \d+, ([\d,]+) steps\)", f"{D['steps']:,}"),
    # the defaults, the original configuration
    ("docs/usage.md", r"\| `--steps N` \| (\S+) \|", str(D["steps"])),
    ("docs/usage.md", r"\| `--batch-size N` \| (\S+) \|", str(D["batch_size"])),
    ("docs/usage.md", r"\| `--lr F` \| (\S+) \|", str(cli.DEFAULT_LR["sgd"])),
    ("docs/usage.md", r"\| `--hidden N \[N \.\.\.\]` \| ([\d ]+) \|", " ".join(map(str, D["hidden"]))),
    ("docs/usage.md", r"\| `--seed N` \| (\S+) \|", str(D["seed"])),
    ("docs/usage.md", r"\| `--log-interval N` \| (\S+) \|", str(cli.build_parser().get_default("log_interval"))),
    ("docs/usage.md", r"momentum and nesterov ([\d.]+), adam", str(cli.DEFAULT_LR["momentum"])),
    ("docs/usage.md", r"nesterov [\d.]+, adam ([\d.]+)\)", str(cli.DEFAULT_LR["adam"])),
    ("docs/usage.md", r"Plain SGD, learning rate ([\d.]+),", str(D["lr"])),
    ("docs/usage.md", r"Plain SGD, learning rate [\d.]+, batch (\d+),", str(D["batch_size"])),
    ("docs/usage.md", r"batch \d+, ([\d,]+) steps \(", f"{D['steps']:,}"),
    ("docs/usage.md", r"steps \(([\d.]+) epochs of", f"{D['steps'] / STEPS_PER_EPOCH:.1f}"),
    ("docs/usage.md", r"epochs of ([\d,]+)\s+steps\)", f"{STEPS_PER_EPOCH:,}"),
    ("docs/usage.md", r"(\d[\d,]*) parameters", f"{PARAMETERS:,}"),
    ("docs/usage.md", r"\((\d+) times in\s+the default run\)", str(EVALUATIONS)),
    ("docs/usage.md", r"`--momentum` \(([\d.]+)\) for momentum", str(D["momentum"])),
    ("docs/usage.md", r"randomly by up to (\d+) \(or PIXELS\)", str(cli.build_parser().parse_args(["--augment"]).augment)),
    ("docs/usage.md", r"a plain line every\s+(\d+) steps", str(cli.build_parser().get_default("log_interval"))),
    ("docs/usage.md", r"\(`--log-interval`, ([\d,]+) steps\)", f"{cli.build_parser().get_default('log_interval'):,}"),
    ("docs/usage.md", r"over `bins` \((\d+)\) bins", str(calibration.BINS)),
    ("docs/usage.md", r"calibration error of its probabilities \((\d+) bins", str(calibration.BINS)),
    ("docs/usage.md", r"It shows the (\d+) units with the largest", str(WEIGHT_TILES)),
    # the presets, as the pages list them
    ("docs/usage.md", r"- `--preset best`: `([^`]+)`", flags_of(cli.PRESETS["best"])),
    ("docs/usage.md", r"- `--preset fast`: `([^`]+)`", flags_of(FAST)),
    ("docs/results.md", r"`--preset fast` \(`([^`]+)`\)", flags_of(FAST)),
    ("docs/results.md", r"on\s+([\d,]+) images \([\d.]+ epochs\) instead", f"{FAST['steps'] * FAST['batch_size']:,}"),
    ("docs/results.md", r"images \(([\d.]+) epochs\) instead", f"{FAST['steps'] * FAST['batch_size'] / 60_000:.1f}"),
    ("docs/results.md", r"instead of the default's ([\d,]+),", f"{D['steps'] * D['batch_size']:,}"),
    ("docs/results.md", r"python nn.py --preset best +# = ([^`]+?)\n```", flags_of(cli.PRESETS["best"])),
    ("docs/usage.md", r"the last step of `--preset fast` uses ([\d.e-]+)\)", f"{FAST_LAST_RATE:.1e}"),
    ("docs/usage.md", r"\(`fast`: (\d+) steps\)", str(FAST_DRY_RUN_WARMUP)),
    # --dry-run
    ("docs/usage.md", r"\| `--dry-run` \| \| (\d+) steps", str(cli.DRY_RUN_STEPS)),
    ("docs/usage.md", r"steps \(or `--steps`\) on ([\d,]+) training", f"{cli.DRY_RUN_TRAIN_IMAGES:,}"),
    ("docs/usage.md", r"training and ([\d,]+) test images", f"{cli.DRY_RUN_TEST_IMAGES:,}"),
    ("docs/usage.md", r"or the first ([\d,]+) with `--dry-run`", f"{cli.DRY_RUN_TEST_IMAGES:,}"),
    # the loss curve's window
    ("docs/usage.md", r"the window is the run's steps / (\d+)", str(report.LOSS_CURVE_POINTS)),
    ("docs/usage.md", r"rounded up \((\d+) for the default's", str(report.loss_window(D["steps"]))),
    ("docs/usage.md", r"for the default's ([\d,]+) steps,", f"{D['steps']:,}"),
    ("docs/usage.md", r"steps, (\d+) for `fast`'s", str(report.loss_window(FAST["steps"]))),
    ("docs/usage.md", r"for `fast`'s ([\d,]+)\)", f"{FAST['steps']:,}"),
    ("docs/usage.md", r"same window as `loss_curve` in `stats.json`, below; (\d+) steps", str(report.loss_window(D["steps"]))),
    # predict
    ("docs/usage.md", r"It reads ([A-Za-z, ]+) and any other format Pillow reads", ", ".join(IMAGE_TYPES)),
    ("docs/usage.md", r"Images over (\d+) megapixels", str(MAX_PIXELS // 10**6)),
    ("benchmarks/README.md", r"default network \((\d+(?:-\d+)+), batch", "-".join(map(str, SIZES))),
    ("benchmarks/README.md", r"default network \([\d-]+, batch (\d+),", str(D["batch_size"])),
    ("benchmarks/README.md", r"of the ([\d,]+) at the end", f"{PARAMETERS:,}"),
    # the page's limits
    ("docs/serve.md", r"a body over (\d+) MB \(", str(server.MAX_BODY_BYTES // 2**20)),
    ("docs/serve.md", r"MB \(([\d,]+) bytes\)", f"{server.MAX_BODY_BYTES:,}"),
    ("docs/serve.md", r"Bodies over (\d+) MB", str(server.MAX_BODY_BYTES // 2**20)),
    ("docs/serve.md", r"images over (\d+) pixels a side", str(server.MAX_IMAGE_SIDE)),
    ("docs/serve.md", r"an image over (\d+) pixels a side", str(server.MAX_IMAGE_SIDE)),
    ("docs/serve.md", r"a whole number from 2 to (\d+)", str(server.MAX_IMAGE_SIDE)),
    ("docs/serve.md", r"drops up to (\d+) MB of the body", str(server.MAX_DRAINED_BYTES // 2**20)),
    ("docs/serve.md", r"falls silent for (\d+) s is closed", str(server.CHANNEL_TIMEOUT_S)),
    ("docs/serve.md", r"is closed after (\d+) s\.", str(server.CHANNEL_TIMEOUT_S)),
    ("docs/serve.md", r"at most (\w+) requests are answered at once", NUMBER_WORDS[server.THREADS]),
    ("docs/serve.md", r"them (\w+) drawings? (?:is|are) decoded and read at a time", NUMBER_WORDS[server.DECODE_SLOTS]),
    ("docs/serve.md", r"\| 503 \| (\w+) drawings? (?:is|are) read at a time", NUMBER_WORDS[server.DECODE_SLOTS]),
    ("docs/serve.md", r"waited (\d+) s for its turn", str(server.DECODE_WAIT_S)),
    ("docs/serve.md", r"up to (\d+) s for a drawing", str(server.DECODE_WAIT_S)),
    ("docs/serve.md", r"At most about (\d+)\s+connections", str(server.CONNECTION_LIMIT)),
    ("docs/explore.md", r'\{"steps": 1-(\d+),', str(training_session.MAX_STEPS)),
    ("docs/explore.md", r'"seed": 0-(\d+)\}', str(training_session.MAX_SEED)),
]

PAGES = sorted([PROJECT_DIR / "README.md", *(PROJECT_DIR / "docs").glob("*.md"),
                PROJECT_DIR / "benchmarks" / "README.md", PROJECT_DIR / "datasets" / "README.md"])
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
CODE_PATH = re.compile(r"`((?:[\w.-]+/)*[\w-]+\.(?:py|md|ipynb|txt))`")  # `docs/how_it_works.ipynb`
HEADING = re.compile(r"^#+\s+(.+?)\s*$", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def prose(page):
    """The page's text without its fenced code blocks (commands and console output)."""
    return FENCE.sub("", page.read_text(encoding="utf-8"))


def anchor(heading):
    """GitHub's anchor for a heading: lower case, punctuation but - and _ dropped, spaces as -."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def anchors(page):
    return {anchor(heading) for heading in HEADING.findall(prose(page))}


def broken_links(page):
    """The relative links of page whose file (or #heading) does not exist, as 'target' strings."""
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not checked here (no network in tests)
            continue
        path_part, _, fragment = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists():
            broken.append(target)
        elif fragment and path.suffix == ".md" and fragment not in anchors(path):
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(PROJECT_DIR).as_posix())
def test_every_relative_link_resolves(page):
    assert broken_links(page) == [], f"{page.name}: links to what does not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(PROJECT_DIR).as_posix())
def test_every_file_path_named_in_the_prose_exists(page):
    """`nn.py`, `docs/how_it_works.ipynb`, `.ci/lowest.txt`: source files named in backquotes
    exist, beside the page or from the project's root."""
    missing = [name for name in CODE_PATH.findall(prose(page))
               if not (page.parent / name).exists() and not (PROJECT_DIR / name).exists()]
    assert missing == [], f"{page.name} names files that do not exist"


def test_a_broken_link_or_heading_is_found(tmp_path):
    """The checker itself: a missing file and a missing heading are reported, good ones are not."""
    (tmp_path / "there.md").write_text("# A heading: with `code`\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [ok](there.md#a-heading-with-code) [gone](gone.md) "
                    "[bad](there.md#no-such-heading) ![ok](there.md) [web](https://example.org/x)\n"
                    "```\n[in a code block](not-checked.md)\n```\n")
    assert broken_links(page) == ["gone.md", "there.md#no-such-heading"]


def test_usage_documents_every_stats_key_and_every_config_flag(tmp_path):
    """Each top-level key of a real stats.json has its own row in docs/usage.md's table, and each
    key of its `config` is a flag (--eval-every for eval_every) that the page explains."""
    result = run_nn("--dry-run", "--steps", 5, "--quiet", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "stats.json").read_text())
    usage = (PROJECT_DIR / "docs" / "usage.md").read_text(encoding="utf-8")
    undocumented = [key for key in stats if f"| `{key}` |" not in usage]
    assert undocumented == [], "stats.json keys without a row in docs/usage.md"
    unexplained = [key for key in stats["config"] if f"`--{key.replace('_', '-')}" not in usage]
    assert unexplained == [], "configuration keys whose flag docs/usage.md does not explain"


def test_the_readme_quotes_the_training_loop_as_it_is_in_nn_py():
    """The README shows one batch of train() in four lines: each must still be a line of nn.py,
    so that a reader who opens nn.py finds what the README promised."""
    readme = (PROJECT_DIR / "README.md").read_text(encoding="utf-8")
    driver = {line.strip() for line in (PROJECT_DIR / "nn.py").read_text(encoding="utf-8").splitlines()}
    block = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert block is not None, "README.md shows no Python block of the training loop"
    lines = [line.strip() for line in block.group(1).strip().splitlines()]
    assert len(lines) >= 4 and all(line in driver for line in lines), [line for line in lines if line not in driver]


@pytest.mark.parametrize("page, pattern, expected", FIGURES, ids=lambda value: str(value)[:40])
def test_a_number_the_docs_quote_is_the_codes(page, pattern, expected):
    """A number typed into a page by hand, or left behind when the code changed, fails here."""
    quoted = [" ".join(text.replace("#", " ").split())
              for text in re.findall(pattern, (PROJECT_DIR / page).read_text(encoding="utf-8"))]
    assert quoted, f"{page}: no longer says /{pattern}/: reword the row of FIGURES with the page"
    assert set(quoted) == {expected}, f"{page} quotes {quoted}, the code gives {expected!r}"


@pytest.mark.parametrize("image_type", IMAGE_TYPES)
def test_predict_reads_each_image_type_it_names(tmp_path, image_type):
    """`predict --help` and docs/usage.md name these types: each one, written by Pillow, is read."""
    from PIL import Image

    from app.predict import load_grey
    path = tmp_path / f"digit.{image_type.lower()}"
    picture = Image.new("L", (28, 28), 255)
    picture.paste(0, (10, 4, 18, 24))  # a dark bar on white paper: a 1
    picture.save(path, format=image_type)
    grey = load_grey(path)
    assert grey.shape == (28, 28) and grey[14, 14] < 0.1 < 0.9 < grey[0, 0]


MODULES = {path.stem: path for folder in (PROJECT_DIR, PROJECT_DIR / "app", PROJECT_DIR / "app" / "page")
           for path in folder.glob("*.py")}
DOTTED_NAME = re.compile(r"`(\w+)\.(?!(?:py|md|ipynb|txt|json|png|npz|csv|cfg)`)(\w+)`")  # `nn.train`, not `nn.py`


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(PROJECT_DIR).as_posix())
def test_every_function_named_in_the_prose_exists(page):
    """`module.name` in backquotes, where module is one of the project's: the module defines name
    (a function, a class or a module-level name), so a page never sends its reader to code that moved."""
    missing = [f"{module}.{name}" for module, name in DOTTED_NAME.findall(prose(page)) if module in MODULES
               and not re.search(rf"^\s*(def|class) {name}\b|^{name}\b.*=", MODULES[module].read_text(encoding="utf-8"),
                                 re.MULTILINE)]
    assert missing == [], f"{page.name} names functions that do not exist"
