"""The Markdown pages: every relative link and file path in them exists, and docs/usage.md
documents every key of the stats.json that nn.py writes. A page that points at a moved or
renamed file misleads the newcomer it was written for."""

import json
import re

import pytest

from conftest import PROJECT_DIR, run_nn

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
