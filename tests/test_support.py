"""The declared support range: the lowest versions are the same everywhere they are written,
and `python nn.py` below them says so in one line."""

import re
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path

import pytest

from app import startup
from conftest import PROJECT_DIR, run_nn


def declared_lowest(requirements_text):
    """{package: (major, minor, patch)} from the `name>=X.Y.Z` lines of a requirements file."""
    return {name: startup.version_tuple(version)[:3]
            for name, version in re.findall(r"^([A-Za-z0-9_-]+)>=([0-9.]+)", requirements_text, re.M)}


def test_lowest_versions_agree_in_code_requirements_ci_and_readme():
    requirements = declared_lowest((PROJECT_DIR / "requirements.txt").read_text())
    declared = {**startup.LOWEST_PACKAGES, **startup.PAGE_PACKAGES}
    assert requirements == declared
    pins = dict(re.findall(r"^([A-Za-z0-9_-]+)==([0-9.]+)", (PROJECT_DIR / ".ci" / "lowest.txt").read_text(), re.M))
    for name, lowest in declared.items():
        assert startup.version_tuple(pins[name]) == lowest + (1,), name  # CI tests exactly the declared lowest
    readme = (PROJECT_DIR / "README.md").read_text()
    python = ".".join(map(str, startup.LOWEST_PYTHON))
    assert f"Python {python}" in readme
    for name, lowest in declared.items():
        assert f"{name} {'.'.join(map(str, lowest))}" in readme.lower(), name
    ci = (PROJECT_DIR / ".ci" / "run").read_text()
    assert f'LOWEST_PYTHON={python}' in ci


@pytest.mark.parametrize("text, expected", [
    ("1.25.2", (1, 25, 2, 1)), ("1.25", (1, 25, 0, 1)), ("2.0.0rc1", (2, 0, 0, 0)),
    ("3.7.5.post1", (3, 7, 5, 1)), ("2.10.0.dev0+git", (2, 10, 0, 0)), ("1.26b1", (1, 26, 0, 0)),
    ("1.25.2+local", (1, 25, 2, 1)),
])
def test_version_numbers_compare_by_their_leading_numbers(text, expected):
    assert startup.version_tuple(text) == expected


def test_a_pre_release_of_the_lowest_version_is_older_than_it():
    assert startup.version_tuple("1.25.2rc1") < startup.LOWEST_PACKAGES["numpy"] + (1,) <= startup.version_tuple("1.25.2")


@pytest.mark.parametrize("package", sorted(startup.LOWEST_PACKAGES))
def test_an_old_package_gets_one_line_before_anything_runs(tmp_path, package):
    # A stand-in distribution that is found first on the path, one patch release too old.
    major, minor, patch = startup.LOWEST_PACKAGES[package]
    old = f"{major}.{minor}.{patch - 1}" if patch else f"{major}.{minor - 1}.99"
    dist = tmp_path / f"{package}-{old}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {old}\n")
    result = run_nn("--help", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"nn.py: error: {package} {old} is older than {'.'.join(map(str, startup.LOWEST_PACKAGES[package]))}, "
        f"the lowest this project supports: pip install -r requirements.txt"]


def test_a_package_without_metadata_is_judged_by_its_version_attribute(monkeypatch):
    # A bare copy of NumPy (importable, but no dist-info) that reports an old version.
    def no_metadata(name):
        raise metadata.PackageNotFoundError(name)
    monkeypatch.setattr(metadata, "version", no_metadata)
    monkeypatch.setitem(sys.modules, "numpy", types.SimpleNamespace(__version__="1.24.0"))
    assert startup.unsupported_versions() == ("numpy 1.24.0 is older than 1.25.2, the lowest this project "
                                         "supports: pip install -r requirements.txt")
    monkeypatch.setitem(sys.modules, "numpy", types.SimpleNamespace(__version__="2.4.6"))
    monkeypatch.setitem(sys.modules, "matplotlib", types.SimpleNamespace(__version__="3.11.2"))
    assert startup.unsupported_versions() is None


def older_pythons():
    """Interpreters older than the lowest supported one that pyenv has installed here."""
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return []
    found = []
    for python in sorted(Path(root).glob("versions/3.*/bin/python3")):
        version = tuple(int(n) for n in python.parent.parent.name.split(".")[:2] if n.isdigit())
        if (3, 6) <= version < startup.LOWEST_PYTHON:  # f-strings need 3.6 to read nn.py at all
            found.append(python)
    return found


@pytest.mark.skipif(not older_pythons(), reason="no Python from 3.6 to below the lowest supported one here")
@pytest.mark.parametrize("python", older_pythons() or [None])
def test_an_old_python_gets_one_line(python):
    result = subprocess.run([str(python), str(PROJECT_DIR / "nn.py"), "predict", "digit.png"],
                            capture_output=True, text=True, timeout=60)
    version = python.parent.parent.name
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"nn.py: error: Python {version} is older than {'.'.join(map(str, startup.LOWEST_PYTHON))}, "
        f"the lowest this project supports: run nn.py with a newer one"]


def test_this_python_is_supported():
    assert sys.version_info >= startup.LOWEST_PYTHON and startup.unsupported_versions() is None


def test_outside_the_projects_virtual_environment_the_advice_is_to_activate_it(tmp_path, monkeypatch):
    """A new shell forgets the activated .venv that the README makes: 'pip install' there
    meets PEP 668 ("externally managed environment"), activating is what helps."""
    monkeypatch.setattr(sys, "prefix", sys.base_prefix)  # a Python outside any virtual environment
    assert startup.install_advice(tmp_path) == "pip install -r requirements.txt"  # no .venv: nothing to activate
    (tmp_path / ".venv").mkdir()
    advice = startup.install_advice(tmp_path)
    assert advice.startswith("activate the project's virtual environment first (. ") and str(tmp_path / ".venv") in advice
    monkeypatch.undo()
    if sys.prefix != sys.base_prefix:  # these tests run in a virtual environment: activating is done
        assert startup.install_advice(tmp_path) == "pip install -r requirements.txt"
