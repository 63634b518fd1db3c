"""Template errors found during the run or the export, said like the validator says them:
the file, line and column of the template, what was missing, and the closest name that
exists.

Jinja only knows that "dict object has no attribute 'tittle'"; which reference broke and
what it could have been is found here by walking each reference of the template through
the very values it was rendered with (a reference holds plain names and constant
indexes; an `[expr]` part stops the walk, since its value is not known here).
"""

from __future__ import annotations

from typing import Any

from runner.errors import Diagnostic
from runner.recipe.messages import suggest
from runner.recipe.model import Recipe
from runner.recipe.source import Path_
from runner.recipe.template import SCOPE, TemplateError, compile_template


def diagnose(recipe: Recipe, path: Path_, src: Any, ctx: dict[str, Any],
             exc: TemplateError) -> Diagnostic:
    """A positioned diagnostic for `exc`, raised rendering `src` (the value at `path` in
    `recipe`) with `ctx`. `path` names the value, e.g. ("steps", "song", "with", "title")."""
    where = _dotted(path)
    found = explain(src, ctx) if isinstance(src, str) else None
    message, hint, line = (found if found is not None else (str(exc), None, exc.line))
    return recipe.doc.diag(path, f"{where}: {message}", hint,
                           offset=(line - 1, 1) if line > 1 else None)


def explain(src: str, ctx: dict[str, Any]) -> tuple[str, str | None, int] | None:
    """(message, hint, line in the template) for the first reference of `src` that does
    not resolve in `ctx`, or None when every reference does (the error is elsewhere,
    e.g. in a filter's arguments)."""
    try:
        refs = compile_template(src).refs
    except TemplateError:
        return None
    for ref in refs:
        if ref.root not in ctx:
            return _unknown_root(ref.root, ctx), _root_hint(ref.root, ctx), ref.line
        value: Any = ctx[ref.root]
        trail = ref.root
        for part in ref.parts:
            key = part.value
            if part.kind == "expr":
                # `[item]`, `[index]`, `[inputs.take]`: a name the context holds.
                key = _value_of(key, ctx)
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    break
            if isinstance(value, dict):
                if key not in value:
                    fields = ", ".join(str(k) for k in value) or "none"
                    return (f"{trail} has no field '{key}' (fields: {fields})",
                            suggest(str(key), value), ref.line)
                value = value[key]
            elif isinstance(value, (list, tuple)) and isinstance(key, int):
                if not -len(value) <= key < len(value):
                    n = len(value)
                    return (f"{trail}[{key}]: {trail} has {n} element{'s' if n != 1 else ''}"
                            + (f" (0-{n - 1})" if n else ""),
                            "a music step gives two takes (tracks[0] and tracks[1]); most "
                            "other steps one" if trail.endswith("tracks") else None,
                            ref.line)
                value = value[key]
            elif isinstance(value, (list, tuple)) and part.kind == "attr":
                return (f"{trail} is a list of {len(value)}; index it before naming "
                        f"'{key}'", f"e.g. {trail}[0].{key}", ref.line)
            else:
                break
            trail += f".{key}" if part.kind == "attr" else f"[{key!r}]"
    return None


def _value_of(node: Any, ctx: dict[str, Any]) -> Any:
    """The value of a name or a chain of attributes (`inputs.take`) in `ctx`, else None."""
    if type(node).__name__ == "Name":
        return ctx.get(node.name)
    if type(node).__name__ == "Getattr":
        base = _value_of(node.node, ctx)
        return base.get(node.attr) if isinstance(base, dict) else None
    return None


def _unknown_root(name: str, ctx: dict[str, Any]) -> str:
    return f"unknown name '{name}' in template" if name not in SCOPE else \
        f"'{name}' is not defined here"


def _root_hint(name: str, ctx: dict[str, Any]) -> str | None:
    """`{{ artist }}` when vars has `artist`: the user meant `vars.artist`."""
    for scope in ("vars", "inputs"):
        if isinstance(ctx.get(scope), dict) and name in ctx[scope]:
            return f"did you mean '{scope}.{name}'?"
    if name in ("item", "index"):
        return "'item' and 'index' are only defined inside a for_each"
    return suggest(name, [k for k in ctx if k in SCOPE]) or \
        "templates can use vars, steps, item and index (never the environment)"


def _dotted(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out
