"""The layout of runner/ stays true (issue 18, /work/shared/LAYOUT.md): read every module's
imports with `ast` and fail, naming modules and lines, on

- an import circle between modules of runner/ (a strongly connected component of the import
  graph; the message walks one cycle through it);
- a part importing what it must not: recipe/ neither plan, engine nor providers; plan/ no
  engine; providers/ neither store nor engine;
- an entry at the top of runner/ that is not in TOP (a new shared module or folder is a
  decision, made here on purpose);
- a module over MAX_LINES lines (the fake aside: it is a test double, not the product).

Which imports count: every `import` / `from ... import` anywhere in a module, at the top, inside
a function (a lazy import runs as soon as the function does, so it is a real dependency, and
LAYOUT says so) and under `if TYPE_CHECKING:`. Type-only imports count for circles and for the
forbidden imports alike, because the rules are about what a part *knows*, not about import
order at runtime: a type-only import of the engine makes providers/ break when the engine's
types change (mypy reads it), and hiding a circle behind TYPE_CHECKING is how circles survive
(LAYOUT's recipe/plan circle runs through `refs`' type-only import of `plan.build._Unit`).
The cure is a small type (a Protocol or a record) in the lower part, not a hidden import.

What an import points at: `from runner.a import b` points at the module `runner.a.b` when there
is one, else at `runner.a` (b is a name in it); `import runner.a.b` points at `runner.a.b`.
The parents a Python import also runs (`runner/a/__init__.py`) are not counted: they hold
docstrings and re-exports, and counting them would make every package a circle with its own
modules.

Known breaks would go in ALLOWED (empty today), one commented entry each naming the cut that removes
it. An entry that no longer matches anything fails the test too, so each is deleted when its
fix lands instead of hiding the next break.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[1] / "runner"

# The top of runner/: the folders (one part each) and the small shared modules. LAYOUT asks
# for "a dozen-ish"; the lead's step 1 settled on these 13 folders plus 4 shared modules and
# the package's own two files. Adding one is a decision: make it here, in review.
TOP = frozenset({
    "recipe", "plan", "steps", "engine", "callbacks", "store", "providers", "report",
    "album", "studio", "cli", "review", "fake",
    "errors.py", "paths.py", "pacing.py", "terminal.py", "__init__.py", "__main__.py",
})
MAX_LINES = 700
SIZE_EXEMPT = ("runner.fake",)  # the fake services: a test double, not the product
# part -> the parts it must never import (LAYOUT: "arrows point one way, top to bottom")
# The first three are LAYOUT's; the rest are what the folders' docstrings promise.
FORBIDDEN = {
    "runner.recipe": ("runner.plan", "runner.engine", "runner.providers"),
    "runner.plan": ("runner.engine",),
    "runner.providers": ("runner.store", "runner.engine"),
    "runner.steps": ("runner.recipe", "runner.plan", "runner.engine", "runner.store",
                     "runner.providers", "runner.cli"),
    "runner.store": ("runner.engine", "runner.providers", "runner.cli"),
    "runner.callbacks": ("runner.engine", "runner.store", "runner.providers"),
    "runner.report": ("runner.engine", "runner.store", "runner.providers", "runner.cli"),
    "runner.album": ("runner.engine", "runner.providers", "runner.cli"),
    "runner.studio": ("runner.engine", "runner.store", "runner.providers", "runner.cli"),
    "runner.engine": ("runner.cli", "runner.review", "runner.album"),
    "runner.review": ("runner.providers",),
    "runner.fake": ("runner.recipe", "runner.plan", "runner.engine", "runner.store",
                    "runner.providers", "runner.cli"),
}

# Today's known breaks, each removed by a helper's cut of issue 18 now in progress. Delete an
# entry when its fix lands (the test says which entries have become stale).
#   ("circle", {modules}): a circle is allowed while all its modules are in the set;
#   ("import", importer, imported): one forbidden import (every line of it);
#   ("size", module): one module allowed over MAX_LINES.
# Known breaks, one commented entry each naming the cut that removes it. Empty: every
# break found when this test was written (the recipe/plan circle, the engine/status circle,
# engine/core.py's and plan/build.py's size, downloads importing the store) was removed by
# the cuts of issue 18. A new entry needs a reason and an owner.
ALLOWED: tuple[tuple[object, ...], ...] = ()


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module name it points at (see the docstring)
    line: int
    lazy: bool  # inside a function
    type_only: bool  # under `if TYPE_CHECKING:`

    def where(self) -> str:
        how = " (inside a function)" if self.lazy else ""
        how += " (under TYPE_CHECKING)" if self.type_only else ""
        return f"{self.importer}:{self.line} imports {self.target}{how}"


@dataclass(frozen=True)
class Violation:
    key: tuple[object, ...]  # what an ALLOWED entry matches
    message: str


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module below root, by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join([package, *parts])] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Reader(ast.NodeVisitor):
    def __init__(self, name: str, is_package: bool, known: set[str], package: str) -> None:
        self.name, self.is_package, self.known, self.package = name, is_package, known, package
        self.found: list[Import] = []
        self.lazy = 0
        self.type_only = 0

    def _add(self, target: str, line: int) -> None:
        if target == self.package or target.startswith(self.package + "."):
            # a name below a module (runner.a.b.C) points at the module that holds it
            while target not in self.known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != self.name:
                self.found.append(Import(self.name, target, line, self.lazy > 0,
                                         self.type_only > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: from the importer's package, up level - 1
            here = self.name.split(".") if self.is_package else self.name.split(".")[:-1]
            here = here[: len(here) - (node.level - 1)]
            base = ".".join(here + ([base] if base else []))
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            self._add(sub if sub in self.known else base, node.lineno)

    def _inside_function(self, node: ast.AST) -> None:
        self.lazy += 1
        self.generic_visit(node)
        self.lazy -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _inside_function

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self.type_only += 1
            for child in node.body:
                self.visit(child)
            self.type_only -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)


def read_imports(root: Path, package: str) -> tuple[dict[str, Path], list[Import]]:
    mods = modules(root, package)
    known = set(mods)
    found: list[Import] = []
    for name, path in mods.items():
        reader = _Reader(name, path.name == "__init__.py", known, package)
        reader.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        found += reader.found
    return mods, found


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One cycle through the component's first module (shortest, by breadth-first search)."""
    inside = set(component)
    start = component[0]
    came: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & inside):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came[path[-1]])
                    return [*reversed(path), start]
                if child not in came:
                    came[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"no cycle in component {component}")  # Tarjan said there was


def _part(module: str, package: str) -> str:
    return ".".join(module.split(".")[:2]) if module.startswith(package + ".") else module


def check(root: Path, package: str = "runner", top: Iterable[str] = TOP,
          forbidden: dict[str, tuple[str, ...]] | None = None,
          max_lines: int = MAX_LINES, size_exempt: tuple[str, ...] = SIZE_EXEMPT,
          ) -> list[Violation]:
    """Every break of the layout's rules in the package at root, allowed or not."""
    forbidden = FORBIDDEN if forbidden is None else forbidden
    mods, found = read_imports(root, package)
    out: list[Violation] = []

    graph: dict[str, set[str]] = {name: set() for name in mods}
    lines: dict[tuple[str, str], list[Import]] = {}
    for imp in found:
        graph[imp.importer].add(imp.target)
        lines.setdefault((imp.importer, imp.target), []).append(imp)
    for component in strongly_connected(graph):
        cycle = a_cycle(graph, component)
        steps = "\n".join(f"    {lines[(a, b)][0].where()}" for a, b in itertools.pairwise(cycle))
        out.append(Violation(
            ("circle", frozenset(component)),
            f"import circle among {len(component)} modules ({', '.join(component)}); "
            f"one cycle:\n{steps}"))

    for (importer, target), imps in sorted(lines.items()):
        for bad in forbidden.get(_part(importer, package), ()):
            if target == bad or target.startswith(bad + "."):
                where = "; ".join(i.where() for i in imps)
                out.append(Violation(
                    ("import", importer, target),
                    f"{_part(importer, package)}/ must not import {bad}: {where}"))

    for entry in sorted(p.name for p in root.iterdir()
                        if p.name != "__pycache__" and (p.is_dir() or p.suffix == ".py")):
        if entry not in set(top):
            out.append(Violation(
                ("top", entry),
                f"{package}/{entry} is a new entry at the top of {package}/; put it in a "
                f"part's folder, or add it to TOP in tests/test_layout.py on purpose"))

    for name, path in sorted(mods.items()):
        if any(name == e or name.startswith(e + ".") for e in size_exempt):
            continue
        count = len(path.read_text(encoding="utf-8").splitlines())
        if count > max_lines:
            out.append(Violation(
                ("size", name),
                f"{path.relative_to(root.parent)} has {count} lines, over {max_lines}: "
                f"split it by concept"))
    return out


def _allows(entry: tuple[object, ...], v: Violation) -> bool:
    if entry[0] == "circle" and v.key[0] == "circle":
        # a smaller circle is allowed too: a partial fix must not fail the test
        return isinstance(v.key[1], frozenset) and isinstance(entry[1], frozenset) and (
            v.key[1] <= entry[1])
    return entry == v.key


def test_runner_keeps_the_layout() -> None:
    found = check(RUNNER)
    unexpected = [v for v in found if not any(_allows(e, v) for e in ALLOWED)]
    stale = [e for e in ALLOWED if not any(_allows(e, v) for v in found)]
    problems = [v.message for v in unexpected]
    problems += [f"ALLOWED entry {e!r} matches nothing any more: delete it" for e in stale]
    assert not problems, "runner/ breaks its layout (LAYOUT.md):\n" + "\n".join(problems)


# -- the checker itself, on a tiny synthetic package ------------------------------------------

def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


CLEAN = {
    "__init__.py": "",
    "recipe/__init__.py": '"""the language"""\n',
    "recipe/load.py": "from pkg.recipe import source\n",
    "recipe/source.py": "import yaml\n",
    "plan/__init__.py": "",
    "plan/build.py": "from pkg.recipe.load import x\nfrom . import scopes\n",
    "plan/scopes.py": "from ..recipe import source\n",
    "engine/__init__.py": "",
    "engine/core.py": "from pkg.plan import build\n",
    "fake/__init__.py": "",
    "fake/big.py": "x = 1\n" * 50,
}


def check_tiny(root: Path) -> list[Violation]:
    return check(root, package="pkg", top={"__init__.py", "recipe", "plan", "engine", "fake"},
                 forbidden={"pkg.recipe": ("pkg.plan", "pkg.engine")}, max_lines=20,
                 size_exempt=("pkg.fake",))


def test_the_checker_passes_a_clean_package(tmp_path: Path) -> None:
    assert check_tiny(_package(tmp_path, CLEAN)) == []


def test_the_checker_fails_every_kind_of_break(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        **CLEAN,
        # a circle through a lazy import and a relative one: source -> load -> source
        "recipe/source.py": "def f():\n    from pkg.recipe import load\n",
        # a forbidden import hidden under TYPE_CHECKING
        "recipe/include.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from pkg.engine.core import Engine\n"),
        "engine/core.py": "from pkg.plan import build\n" + "y = 2\n" * 30,  # oversize
        "helpers.py": "",  # a new top-level module
    })
    found = {v.key: v.message for v in check_tiny(root)}
    assert set(found) == {
        ("circle", frozenset({"pkg.recipe.load", "pkg.recipe.source"})),
        ("import", "pkg.recipe.include", "pkg.engine.core"),
        ("size", "pkg.engine.core"),
        ("top", "helpers.py"),
    }
    circle = found[("circle", frozenset({"pkg.recipe.load", "pkg.recipe.source"}))]
    assert "pkg.recipe.load:1 imports pkg.recipe.source" in circle
    assert "pkg.recipe.source:2 imports pkg.recipe.load (inside a function)" in circle
    assert found[("import", "pkg.recipe.include", "pkg.engine.core")] == (
        "pkg.recipe/ must not import pkg.engine: pkg.recipe.include:3 imports "
        "pkg.engine.core (under TYPE_CHECKING)")
    assert "pkg/engine/core.py has 31 lines, over 20" in found[("size", "pkg.engine.core")]


def test_a_longer_circle_is_reported_as_one_path(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "", "a.py": "import pkg.b\n", "b.py": "from pkg import c\n",
        "c.py": "from pkg.a import thing\n", "d.py": "import pkg.a\n"})
    [v] = check(root, package="pkg", top={"__init__.py", "a.py", "b.py", "c.py", "d.py"},
                forbidden={})
    assert v.key == ("circle", frozenset({"pkg.a", "pkg.b", "pkg.c"}))
    assert v.message.splitlines()[1:] == [
        "    pkg.a:1 imports pkg.b", "    pkg.b:1 imports pkg.c", "    pkg.c:1 imports pkg.a"]


@pytest.mark.parametrize(("entry", "key", "allowed"), [
    (("circle", frozenset({"a", "b", "c"})), ("circle", frozenset({"a", "b"})), True),
    (("circle", frozenset({"a", "b"})), ("circle", frozenset({"a", "b", "c"})), False),
    (("size", "a"), ("size", "a"), True),
    (("size", "a"), ("size", "b"), False),
])
def test_an_allowlist_entry_covers_only_its_own_break(
        entry: tuple[object, ...], key: tuple[object, ...], allowed: bool) -> None:
    assert _allows(entry, Violation(key, "")) is allowed


def test_a_run_that_downloads_nothing_never_imports_the_http_stack() -> None:
    """What a run imports is time every run pays: the local album, a resume, `validate`.
    httpx and httpcore (which brings trio in when it is installed) cost ~0.15 s of a
    20,000-instance resume (docs/BENCHMARKS.md, "Engine overhead and resume") when the
    downloads module imported its chunk reader at the top; they load when a download or a
    remote provider starts."""
    import subprocess
    import sys
    code = ("import sys, runner.cli.main, runner.cli.commands, runner.cli.run, "
            "runner.engine.scheduler, runner.providers.download, runner.providers.registry; "
            "print(sorted(m for m in ('httpx', 'httpcore', 'trio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
