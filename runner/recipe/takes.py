"""The kept takes: `NAME.takes.yaml` beside `NAME.yaml`, one line per song whose take was
chosen by ear (`sunoflow review`'s "Keep this take").

    # Takes kept in `sunoflow review` ...
    version: 1
    takes:
      song[1]/whole: 1

Why a file of its own rather than editing the recipe's `take:` in place: a take is chosen
per song (an instance: `song[1]/whole`), while `take:` is per step (every song), and the
step is often inside a reusable recipe (`uses: sunoflow:full-song`) that is not the user's
file to edit; a separate file also needs no round-trip YAML editor to keep the recipe's
comments and layout, and its diff in a pull request is one line per choice. `run`, `plan`,
`status`, `reroll` and `review` read it through `recipe.load`; the plan applies each
choice to its instance as if the step said `take: N` for that song only (runner.plan.expand), so
a choice reruns only the free steps after it (a take is applied when read, never part of
the key of the step that made it: runner.plan.scopes.apply_take).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner import paths
from runner.errors import Diagnostic, RecipeError
from runner.recipe import source
from runner.recipe.messages import suggest
from runner.recipe.source import Document

FORMAT = 1
HEADER = ("# Takes kept in `sunoflow review` (or by hand): step instance -> take (0 or 1).\n"
          "# `sunoflow run` builds the album from these; commit this file with the recipe.\n")


def path_for(recipe_path: Path) -> Path:
    return recipe_path.with_name(recipe_path.stem + ".takes.yaml")


def read(recipe_path: Path) -> tuple[dict[str, int], Document | None]:
    """The kept takes and the file's document (for positioned messages); empty when there
    is no file. Raises RecipeError, positioned, for a malformed file."""
    p = path_for(recipe_path)
    if not p.is_file():
        return {}, None
    doc = source.read(p)
    data = doc.data
    diags: list[Diagnostic] = []
    if data is None:
        return {}, doc
    if not isinstance(data, dict):
        raise RecipeError([doc.diag((), "a takes file is a mapping: version: 1, takes: {...}")])
    for k in data:
        if k not in ("version", "takes"):
            diags.append(doc.diag((k,), f"unknown key '{k}' in a takes file",
                                  "it holds 'version: 1' and 'takes'", key=True))
    if data.get("version", FORMAT) != FORMAT:
        diags.append(doc.diag(("version",), f"takes file version {data.get('version')!r}; "
                              f"this sunoflow reads version {FORMAT}"))
    raw = data.get("takes") or {}
    out: dict[str, int] = {}
    if not isinstance(raw, dict):
        diags.append(doc.diag(("takes",), "'takes' maps a step instance to 0 or 1",
                              "for example: takes: {song[1]/whole: 1}"))
        raw = {}
    for iid, take in raw.items():
        if take not in (0, 1) or isinstance(take, bool):
            diags.append(doc.diag(("takes", iid), f"take of '{iid}' must be 0 or 1; got "
                                  f"{take!r}"))
            continue
        out[str(iid)] = int(take)
    if diags:
        raise RecipeError(diags)
    return out, doc


def unknown(takes: dict[str, int], doc: Document | None,
            known: dict[str, Any]) -> list[Diagnostic]:
    """A diagnostic per kept take whose instance the plan does not have, or that makes no
    takes. `known`: instance id -> True when it makes two takes (a music step)."""
    out: list[Diagnostic] = []
    if doc is None:
        return out
    for iid in takes:
        if iid not in known:
            out.append(doc.diag(("takes", iid), f"no step instance '{iid}' in the recipe",
                                suggest(iid, known), key=True))
        elif not known[iid]:
            out.append(doc.diag(("takes", iid), f"'{iid}' does not make takes to choose from "
                                "(only music steps do)", key=True))
    return out


def write(recipe_path: Path, takes: dict[str, int]) -> Path:
    """Write the kept takes (sorted, stable) atomically; returns the file's path."""
    from runner.store import yamlout

    p = path_for(recipe_path)
    body = yamlout.dumps({"version": FORMAT, "takes": dict(sorted(takes.items()))})
    paths.replace_text(p, HEADER + body, fsync=True)
    return p
