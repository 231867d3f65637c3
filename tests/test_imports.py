"""The two floors, read from the source with `ast`: the maths (mlp, dense_layer, functions,
optimizers, augment) imports NumPy, the standard library and the maths, nothing else; no
module imports nn.py (the driver hands over what the package needs, such as train); and no
module of the project imports, through others, a module that imports it (no cycle).

Every import counts, also one inside a function: it runs as soon as that function does."""

import ast
import sys
from pathlib import Path

from conftest import PROJECT_DIR

MATHS = {"mlp", "dense_layer", "functions", "optimizers", "augment"}


def project_modules(root):
    """{dotted module name: its file} of the top-level .py files and of the package app/."""
    modules = {path.stem: path for path in root.glob("*.py")}
    for path in (root / "app").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(path, known):
    """The modules the file at path imports: a project module by its dotted name (`from app
    import data` is app.data), anything else by its top-level name (numpy, os)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name if alias.name in known else alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else
                          node.module if node.module in known else node.module.split(".")[0])
    return found


def import_graph(root):
    """{module: the project's modules it imports, other imports}."""
    modules = project_modules(root)
    graph = {}
    for name, path in modules.items():
        imported = imports_of(path, modules)
        graph[name] = ({m for m in imported if m in modules and m != name}, {m for m in imported if m not in modules})
    return graph


def cycles(graph):
    """Every cycle of project imports, each as the list of its modules, first one again last."""
    found, state = [], {}  # state: 1 while a module's imports are being followed, 2 when done

    def visit(module, path):
        state[module] = 1
        for imported in sorted(graph[module][0]):
            if state.get(imported) == 1:
                found.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                visit(imported, path + [imported])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_no_module_imports_another_that_imports_it():
    assert cycles(import_graph(PROJECT_DIR)) == []


def test_the_maths_imports_numpy_the_standard_library_and_the_maths_only():
    graph = import_graph(PROJECT_DIR)
    assert MATHS <= set(graph)
    for module in MATHS:
        project, other = graph[module]
        assert project <= MATHS, (module, project - MATHS)
        assert all(name == "numpy" or name in sys.stdlib_module_names for name in other), (module, other)


def test_no_module_imports_nn():
    graph = import_graph(PROJECT_DIR)
    assert [module for module, (project, _) in graph.items() if "nn" in project] == []


def test_a_cycle_and_a_maths_module_importing_the_package_are_found(tmp_path):
    """The checker itself, on a made-up project: app.a -> app.b -> app.a is a cycle, also
    when the import hides in a function; mlp importing app is seen."""
    (tmp_path / "app" / "page").mkdir(parents=True)
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "a.py").write_text("import os\nfrom app import b\n")
    (tmp_path / "app" / "b.py").write_text("def f():\n    from app.a import f\n")
    (tmp_path / "app" / "page" / "c.py").write_text("import nn\n")
    (tmp_path / "mlp.py").write_text("import numpy as np\nfrom app.page import c\n")
    (tmp_path / "nn.py").write_text("import os\n")
    graph = import_graph(tmp_path)
    assert cycles(graph) == [["app.a", "app.b", "app.a"]]
    assert graph["mlp"] == ({"app.page.c"}, {"numpy"}) and graph["app.page.c"][0] == {"nn"}
