"""docs/how_it_works.ipynb: it runs from top to bottom, the outputs saved in it are the ones it
gives today, and every line of the project it quotes is still in its file."""

import copy
import json
import re
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import PROJECT_DIR

NOTEBOOK = PROJECT_DIR / "docs" / "how_it_works.ipynb"
QUOTE = re.compile(r"`((?:\w+/)*\w+\.py): ([^`]+)`")  # `dense_layer.py: np.matmul(...)` in the prose
DECIMAL = re.compile(r"-?\d+\.\d*(?:e[-+]?\d+)?|-?\d+e[-+]?\d+")  # a number with a point or an exponent


def text_outputs(cell):
    """What a code cell showed as text: its printed lines and the text of its results and figures."""
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif output["output_type"] in ("execute_result", "display_data"):
            parts.append(output["data"].get("text/plain", ""))
        else:
            parts.append(f"{output['output_type']}: {output.get('ename')}: {output.get('evalue')}")
    return "".join(parts)


def without_measurements(text):
    """text with every decimal number replaced by '#' and runs of blanks made one space.

    Measured values (timings, rounding errors, which depend on the CPU's order of
    addition, losses and accuracies) may differ from one run or machine to the next;
    the shapes, counts and labels (integers) and the words of every check may not."""
    return re.sub(r"\s+", " ", DECIMAL.sub("#", text))


@pytest.fixture
def kernel_name(tmp_path, monkeypatch):
    """A kernel spec for this interpreter, found first on JUPYTER_PATH: the notebook runs with
    the Python and the packages of the test run, whatever `python3` means elsewhere."""
    name = "nn-project-tests"
    spec = tmp_path / "jupyter" / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (tests)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return name


def test_notebook_runs_and_its_saved_outputs_are_current(kernel_name):
    """Executes a copy of the notebook in docs/, as Jupyter would; a cell that raises (its
    own gradient checks are asserts) fails the test. Then each code cell's text must be
    the saved one, measurements aside."""
    saved = nbformat.read(NOTEBOOK, as_version=4)
    fresh = copy.deepcopy(saved)
    NotebookClient(fresh, timeout=300, kernel_name=kernel_name,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    for index, (old, new) in enumerate(zip(saved.cells, fresh.cells)):
        if old.cell_type == "code":
            assert without_measurements(text_outputs(old)) == without_measurements(text_outputs(new)), (
                f"cell {index}: the saved outputs are stale: run the notebook again and save it with its outputs")


def test_saved_notebook_ran_top_to_bottom_and_stays_small():
    """Saved as executed in one go (counts 1, 2, 3, ... in cell order), with no error, every
    cell after the imports showing something, and small enough to read on GitHub."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code_cells] == list(range(1, len(code_cells) + 1))
    for cell in code_cells[1:]:
        assert cell.outputs, f"a code cell has no saved output: {cell.source[:60]!r}"
    assert not any(output["output_type"] == "error" for cell in code_cells for output in cell.outputs)
    assert NOTEBOOK.stat().st_size < 300_000


def test_every_quoted_line_of_the_project_is_in_its_file():
    """The prose quotes the lines that compute each equation as `file.py: code`; a quote
    that no longer matches its file means the notebook explains code that is gone."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    quotes = [match.groups() for cell in notebook.cells if cell.cell_type == "markdown"
              for match in QUOTE.finditer(cell.source)]
    assert len(quotes) >= 15
    for file_name, line in quotes:
        assert (PROJECT_DIR / file_name).is_file(), f"the notebook quotes {file_name}, which is not in the project"
        assert line in (PROJECT_DIR / file_name).read_text(), f"{file_name} no longer has: {line}"
