"""The plan: check a loaded recipe and expand it into instances (runner.plan.model). Each
recipe file is checked once (runner.plan.unit, with runner.plan.refs for what templates
refer to), then expanded (runner.plan.expand); runner.plan.keys computes each instance's
key. `check()` is the whole of validation: the language's loader (runner.recipe.load),
then the plan, their findings put together.

Checks made before anything runs: template syntax and names, references to unknown
steps, vars, inputs or outputs (with a suggestion), indexes out of range for fan-outs of
known length, `item`/`index` outside a `for_each`, `needs` on a missing step, cycles, a
step type the provider cannot perform, model limits on inputs whose values are known
already, and each use of a reusable recipe against what it declares (inputs, their types,
its outputs, and for a loop over its inputs, that their values are known before the run).

Dependencies are per instance: `song[2]` waits for `words[2]` only when its templates
say `steps.words[index]`, so one slow track does not hold up the others.

A step that uses a reusable recipe is expanded, per instance, into the callee's own
instances, `song[2]/long` (`song/long` with no fan-out), between two ends that do no work:
`song[2]:inputs` renders the call's `with` once its dependencies are done (every inner
instance waits for it), and `song[2]` renders the callee's `outputs` once every inner
instance is done (the call is one step: what the caller's templates and `needs` wait
for). Inner instances are ordinary instances with ordinary keys, so caching, the journal
and resume need nothing more.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from runner.errors import Diagnostic, RecipeError, UsageError
from runner.plan.expand import Expander, makes_takes
from runner.plan.model import Plan
from runner.plan.refs import Unit
from runner.plan.unit import check_unit
from runner.recipe import load as recipes
from runner.recipe import schema as schemas
from runner.recipe.bulk import building
from runner.recipe.include import Includes
from runner.recipe.model import Recipe


def output_types(recipe: Recipe) -> dict[str, Any]:
    """A reusable recipe's outputs, with the type of each that names a step's output
    directly (what `sunoflow steps RECIPE` lists; the checker judges callers by it)."""
    return check_unit(recipe, recipe.provider, {}, None).output_types()


@building
def build(recipe: Recipe, *, partial: bool = False) -> Plan:
    """Check and expand the recipe. Raises RecipeError with every problem found (each
    once, however many checks of a file found it). A reusable recipe whose loop uses an
    input without default has no length to plan that loop with: `partial` (validate)
    checks everything else and plans the loop empty; otherwise it is refused."""
    units: dict[tuple[Path, str | None], Unit] = {}
    top = check_unit(recipe, recipe.provider, units, recipe.input_defaults())
    diags = [d for u in units.values() for d in u.ck.diags]
    if recipe.provider.kind == "newapi" and not recipe.provider.base_url:
        # A relay has no default address: said by `validate` and `plan` too, not only when
        # `run` makes the provider.
        diags.append(recipe.doc.diag(("provider",), "provider newapi needs base_url (the "
                                     "relay's address)", "set provider.base_url, or pass "
                                     "--base-url"))
    if not partial:
        diags += [recipe.doc.diag(("steps", sid, "for_each"), f"for_each uses input "
                                  f"'{name}', which has no default: its length is known only "
                                  "where a recipe uses this one", f"give '{name}' a default "
                                  "to plan or run this recipe on its own, or use it from "
                                  "another (uses: ./path/to/it.yaml, with: {...})")
                  for sid, name in top.ck.unset.items()]
    if diags:
        raise RecipeError(diags)
    if top.ck.unset:  # partial: what needs the loops' lengths waits for a call
        return Plan(recipe, {}, top.ck.fan, {}, {})
    ex = Expander(recipe, units)
    ex.unit(top, "", None, recipe.input_defaults(), "")
    diags = [d for u in units.values() for d in u.ck.diags] + ex.diags
    if recipe.takes:
        from runner.recipe import takes

        music = {iid: i.kind == "step" and makes_takes(i.step)
                 for iid, i in ex.instances.items() if i.kind == "step"}
        diags += takes.unknown(recipe.takes, recipe.takes_doc, music)
    if diags:
        raise RecipeError(diags)
    return Plan(recipe, ex.instances, top.ck.fan, ex.path_deps(), ex.scopes)


def check(path: str | Path, *, overrides: dict[str, Any] | None = None,
          display: str | None = None, partial: bool = False) -> Plan:
    """Load the recipe at `path` and plan it (`partial`: see build). Raises RecipeError
    with every problem either finds."""
    return build(load(path, overrides=overrides, display=display), partial=partial)


def load(path: str | Path, *, overrides: dict[str, Any] | None = None,
         display: str | None = None) -> Recipe:
    """The recipe at `path`, loaded (runner.recipe.load) with every recipe it uses. When
    one of them has errors, the plan still looks at what of it did parse, so the author
    sees every problem in one pass; the plan itself is not made."""
    url = (overrides or {}).get("base_url")
    if url and not re.match(schemas.HTTP_URL, str(url)):  # as the recipe's base_url
        raise UsageError(f"--base-url {url}: not an http(s) URL (e.g. https://api.sunoapi.org)")
    try:
        r = recipes.load(path, overrides=overrides, display=display, read=_callee)
    except recipes.Unfinished as exc:
        raise RecipeError(exc.diagnostics + _later(exc)) from None
    if r.provider.kind == "newapi" and not r.provider.base_url and \
            (overrides or {}).get("provider") == "newapi":
        # A relay has no default address (the recipe's own block is checked by `build`).
        raise UsageError("--provider newapi needs the relay's address: --base-url URL, "
                         "or base_url in the recipe's provider block")
    return r


def _callee(path: Path, *, display: str, includes: Includes) -> Recipe:
    """A recipe that the recipe being loaded uses, read the same way (runner.recipe.include
    hands it the loads under way)."""
    try:
        return recipes.load(path, display=display, includes=includes)
    except recipes.Unfinished as exc:
        raise RecipeError(exc.diagnostics + _later(exc)) from None


def _later(exc: recipes.Unfinished) -> list[Diagnostic]:
    """With the loader's errors present, the plan's findings in what did parse. A recipe
    too broken to plan yields none."""
    seen = {(d.file, d.line, d.col) for d in exc.diagnostics}
    try:
        build(exc.partial)
    except RecipeError as later:
        # One message per position: where the schema already spoke, it said it better.
        return [d for d in later.diagnostics if (d.file, d.line, d.col) not in seen]
    except Exception:  # noqa: BLE001 - best effort only; the schema errors stand on their own
        return []
    return []
