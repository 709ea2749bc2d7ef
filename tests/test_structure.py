"""The package's shape, read from its source (nothing is imported): no import cycle between modules or between
folders, and no module of a subpackage importing an entry point.

Only module-level imports are edges (not those under `if TYPE_CHECKING:`, which never run). An import inside a
function ("lazy") is how the entry points keep `--help` at about a second (their stage's code loads when work
starts), so the entry points may import lazily at will; anywhere else a lazy import must be listed in `LAZY` with
its reason, so that none hides a cycle.
"""

import ast
import graphlib
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (importer, imported) -> why the import waits until the function runs
LAZY = {
    ("pipeline", "pipeline.training.devices"): "torch loads only when a config reads a `${device:...}` default",
    ("pipeline.prepare", "pipeline.data.demos"): "the demo exporters load only when a demo's files are missing",
    ("pipeline.schema", "pipeline.data.demos"): "every command line is checked; the demos load only if data.demo is",
    ("pipeline.schema", "pipeline.metrics"): "every command line is checked; sklearn loads only if data.metric is",
    ("pipeline.training.job", "pipeline.training.loop"): "Lightning (and the torchmetrics, torchvision and "
    "transformers it imports) loads only for torch heads; an sklearn head's job starts without them",
    ("pipeline.search", "pipeline.prepare"): "every ensemble run imports search (beyond_best); the data stage is "
    "needed only when an Optuna study starts",
}


def entry_points(root: Path = ROOT) -> set[str]:
    """The modules behind the console scripts (pyproject's [project.scripts]): train, ensemble, predict, ...

    `pipeline/prepare.py` is not one: it is the data stage that training and the zoo call (`Prepared`); its
    `python -m pipeline.prepare` is a convenience.
    """
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    return {target.split(":")[0] for target in scripts.values()}


def module_name(path: Path, pkg: Path) -> str:
    parts = path.relative_to(pkg.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """The dotted names an import statement reaches (`from a.b import c` -> `a.b.c`); relative ones from `package`."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        parts = package.split(".")
        base = ".".join([*parts[: len(parts) - node.level + 1], base]).strip(".")
    return [f"{base}.{a.name}" for a in node.names]


def _type_checking(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:`: imports for type hints only, never run."""
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(pkg: Path) -> dict[str, tuple[set[str], set[str]]]:
    """Every module of `pkg` -> (the package's modules it imports at module level, those it imports lazily).

    `from a.b import c` counts as importing `a.b.c` when that is a module, else `a.b` (a package's __init__).
    """
    paths = {module_name(p, pkg): p for p in sorted(pkg.rglob("*.py"))}

    def resolve(name: str) -> str:
        while name not in paths:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = top, lazy = set(), set()
        stack = [(ast.parse(path.read_text()), False)]
        while stack:
            node, in_function = stack.pop()
            if isinstance(node, ast.Import | ast.ImportFrom):
                ours = [t for t in _targets(node, package) if t.split(".")[0] == pkg.name]
                (lazy if in_function else top).update(resolve(t) for t in ours if resolve(t) != name)
            nested = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            children = node.orelse if _type_checking(node) else ast.iter_child_nodes(node)
            stack += [(child, nested) for child in children]
    return graph


def folder(module: str) -> str:
    """`pipeline.data.folds` -> `pipeline.data`; a top-level module is its own folder."""
    return ".".join(module.split(".")[:2])


def cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle (`[a, b, a]`), or [] when there is none."""
    try:
        graphlib.TopologicalSorter(edges).prepare()
    except graphlib.CycleError as e:
        return e.args[1]
    return []


def problems(pkg: Path, entries: set[str], lazy_allowed: dict) -> list[str]:
    """What breaks the rules in `pkg`, one line each ([] when nothing does)."""
    graph = imports(pkg)
    found = []
    if c := cycle({m: top for m, (top, _) in graph.items()}):
        found.append("module import cycle: " + " -> ".join(c))
    folders: dict[str, set[str]] = {}
    for m, (top, _) in graph.items():
        folders.setdefault(folder(m), set()).update(folder(t) for t in top if folder(t) != folder(m))
    if c := cycle(folders):
        found.append("folder import cycle: " + " -> ".join(c))
    subpackages = {folder(m) for m in graph if m.count(".") >= 2}
    for m, (top, lazy) in sorted(graph.items()):
        if folder(m) in subpackages:
            found += [
                f"{m} imports the entry point {t} (entry points import stages, not the reverse)" for t in top & entries
            ]
        if m not in entries:
            found += [
                f"{m} imports {t} inside a function: add it to LAZY with the reason"
                for t in lazy - top
                if (m, t) not in lazy_allowed
            ]
    return found


def test_pipeline_has_no_cycles_upward_imports_or_unlisted_lazy_imports():
    assert problems(ROOT / "pipeline", entry_points(), LAZY) == []


def test_every_listed_lazy_import_exists():
    graph = imports(ROOT / "pipeline")
    assert [pair for pair in LAZY if pair[1] not in graph.get(pair[0], (set(), set()))[1]] == []


PLANTED = {  # a small package with one violation each: file -> source
    "module import cycle": {"data/a.py": "from pipeline.data import b", "data/b.py": "import pipeline.data.a"},
    "folder import cycle": {
        "data/a.py": "from pipeline.models.b import f",
        "models/b.py": "from pipeline.data.c import g",
        "data/c.py": "def g(): pass",
    },
    "entry point": {"data/a.py": "from pipeline.train import main"},
    "inside a function": {"data/a.py": "def f():\n    from pipeline.models import b\n", "models/b.py": ""},
}


@pytest.mark.parametrize("kind", PLANTED)
def test_a_planted_violation_is_caught(tmp_path, kind):
    pkg = tmp_path / "pipeline"
    for file, source in {
        "__init__.py": "",
        "train.py": "",
        "data/__init__.py": "",
        "models/__init__.py": "",
        **PLANTED[kind],
    }.items():
        (pkg / file).parent.mkdir(parents=True, exist_ok=True)
        (pkg / file).write_text(source + "\n")
    found = problems(pkg, {"pipeline.train"}, {})
    assert len(found) == 1 and kind in found[0], found


def test_an_import_for_type_hints_only_is_no_cycle(tmp_path):
    pkg = tmp_path / "pipeline"
    (pkg / "zoo").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "zoo" / "__init__.py").write_text("")
    (pkg / "zoo" / "a.py").write_text("from pipeline.zoo import b\n")
    (pkg / "zoo" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pipeline.zoo.a import A\n"
    )
    assert problems(pkg, set(), {}) == []
