"""Reusable recipes, as the loader sees them: a step `uses: ./path/to/recipe.yaml` loads
another recipe (its callee) through the same loader, once per file, and refuses a recipe
that includes itself, directly or through others.

Paths are relative to the file that names them, and must stay inside the project: the git
work tree that holds the top recipe (its folder when it is in none) or an --allow-path
folder, symbolic links resolved, nothing under `.git` (paths.Roots.project); a path that
leaves it is refused before the file is even looked for. A callee is shown by the path it
has from where the top recipe was named (`examples/album.yaml` using `../recipes/master.yaml`
shows it as `recipes/master.yaml`), so every message points at a file the user can open.

The loader that reads each callee is handed in (`Includes.read`): runner.recipe.load's own,
or one that adds what the plan finds (runner.plan.build.check).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from runner.errors import Diagnostic, RecipeError
from runner.paths import Outside, Roots
from runner.recipe.messages import suggest
from runner.recipe.model import Recipe
from runner.recipe.source import Document, at

STOCK = "sunoflow:"  # `uses: sunoflow:full-song`: a recipe shipped with sunoflow


def stock_dir() -> Path:
    """The stock recipes: `runner/recipes/` in an installed wheel, `recipes/` beside the
    package in a checkout (an editable install)."""
    here = Path(__file__).resolve().parents[1]  # runner/
    shipped = here / "recipes"
    return shipped if shipped.is_dir() else here.parent / "recipes"


def stock_names() -> list[str]:
    return sorted(p.stem for p in stock_dir().glob("*.yaml"))


@dataclass
class _Frame:
    path: Path  # resolved
    doc: Document
    step: str  # the step of this file whose callee is being loaded


class Reader(Protocol):
    """Reads one callee, loading what it uses through the same `includes`."""

    def __call__(self, path: Path, *, display: str, includes: Includes) -> Recipe: ...


@dataclass
class Includes:
    """One load of a top recipe: every callee loaded once (by resolved path), and the chain
    of files being loaded, to find a recipe that includes itself."""

    roots: Roots  # where callees may come from (paths.Roots.project)
    # runner.recipe.load.load, or runner.plan.build's (which adds the plan's findings to a
    # callee's errors): the language itself never plans.
    read: Reader
    loaded: dict[Path, Recipe] = field(default_factory=dict)
    failed: dict[Path, list[Diagnostic]] = field(default_factory=dict)
    stack: list[_Frame] = field(default_factory=list)
    cycles: set[Diagnostic] = field(default_factory=set)  # the recursions found

    def load(self, doc: Document, path: Path, sid: str, uses: str) -> tuple[Recipe | None,
                                                                               list[Diagnostic]]:
        """The callee of step `sid` of the recipe at `path`: the recipe, or None and why."""
        if uses.startswith(STOCK):
            return self._stock(doc, path, sid, uses)
        try:
            # Recipes arrive in pull requests: a callee outside the project (or reached
            # through a symbolic link that leads out, or under .git) is not read at all.
            target = self.roots.resolve(uses, base=path.resolve().parent)
        except Outside as exc:
            return None, [doc.diag(("steps", sid, "uses"), f"steps.{sid}.uses: {exc}",
                                   "a reusable recipe must be inside the project (its "
                                   "git work tree) or an --allow-path folder")]
        if not target.is_file():
            return None, [doc.diag(("steps", sid, "uses"), f"steps.{sid}.uses: no recipe file "
                                   f"'{uses}'", "the path is relative to this recipe's "
                                   "folder")]
        return self._callee(doc, path, sid, uses, target,
                            os.path.normpath(os.path.join(os.path.dirname(doc.file), uses)))

    def _stock(self, doc: Document, path: Path, sid: str, uses: str) -> tuple[
            Recipe | None, list[Diagnostic]]:
        """`sunoflow:NAME`: a recipe shipped with sunoflow, trusted as its code is, shown
        by its file's path so that messages point at a file the user can open."""
        name = uses[len(STOCK):]
        target = stock_dir() / f"{name}.yaml"
        if not target.is_file():
            names = stock_names()
            return None, [doc.diag(("steps", sid, "uses"), f"steps.{sid}.uses: no stock "
                                   f"recipe '{name}'", suggest(name, names) or
                                   "the stock recipes: " + ", ".join(names))]
        return self._callee(doc, path, sid, uses, target.resolve(), str(target))

    def _callee(self, doc: Document, path: Path, sid: str, uses: str, target: Path,
                display: str) -> tuple[Recipe | None, list[Diagnostic]]:
        me = _Frame(path.resolve(), doc, sid)
        chain = [*self.stack, me]
        for k, frame in enumerate(chain):
            if frame.path == target:
                cycle = _cycle(chain[k:], uses)
                self.cycles.add(cycle)
                return None, [cycle]
        if target in self.loaded:
            return self.loaded[target], []
        if target in self.failed:
            return None, self.failed[target]
        self.stack.append(me)
        try:
            callee = self.read(target, display=display, includes=self)
        except RecipeError as exc:
            self.failed[target] = exc.diagnostics
            return None, exc.diagnostics
        finally:
            self.stack.pop()
        self.loaded[target] = callee
        return callee, []


def _cycle(frames: list[_Frame], uses: str) -> Diagnostic:
    """A recipe that includes itself: reported where the loop starts (the first file of the
    chain that comes back to it), naming the step in the last file that closes it."""
    first, last = frames[0], frames[-1]
    names = " -> ".join(f.doc.file for f in frames) + f" -> {first.doc.file}"
    where = ("steps", first.step, "uses")
    closing = at(last.doc, ("steps", last.step, "uses"))
    return first.doc.diag(where, f"steps.{first.step}.uses: recursive inclusion: {names} "
                          f"({closing} uses {uses} again)",
                          "a reusable recipe cannot use itself, directly or through others")
