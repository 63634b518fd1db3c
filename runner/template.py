"""Templates: rendering step inputs, and reading which earlier outputs they refer to.

Why a sandbox: recipes come from pull requests, so a template is untrusted code. The
immutable sandbox refuses attribute access to dunders and mutation of values, the
environment has no loader (no ``{% include %}`` of files), the context holds only
``vars``, ``steps``, ``item`` and ``index`` (never ``os.environ``), and undefined names
fail loudly instead of rendering as empty strings.

A value that is exactly one ``{{ expr }}`` keeps its native type (a number, a list, a
track object); anything else renders to a string.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

SCOPE = ("vars", "steps", "item", "index", "inputs")

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                     keep_trailing_newline=True)
for _name in ("lipsum", "cycler", "joiner", "namespace"):
    _ENV.globals.pop(_name, None)
GLOBALS = frozenset(_ENV.globals)

_WHOLE = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.S)
_MARKERS = re.compile(r"\{\{|\{%|\{#")


class TemplateError(Exception):
    """A template that does not parse or does not render. `line` is 1-based within it."""

    def __init__(self, message: str, line: int = 1) -> None:
        self.line = line
        super().__init__(message)


def is_template(value: Any) -> bool:
    return isinstance(value, str) and _MARKERS.search(value) is not None


@dataclass(frozen=True)
class Part:
    """One step of a reference chain: `.name`, `['name']`, `[3]` or `[<expr>]`."""

    kind: str  # "attr" | "const" | "expr"
    value: Any  # the name, the constant, or the jinja2 expression node

    def __str__(self) -> str:
        if self.kind == "attr":
            return f".{self.value}"
        if self.kind == "const":
            return f"[{self.value!r}]"
        return "[…]"


@dataclass(frozen=True)
class Ref:
    root: str
    parts: tuple[Part, ...]
    line: int

    def text(self, upto: int | None = None) -> str:
        return self.root + "".join(str(p) for p in self.parts[:upto])


class Compiled:
    """A parsed template: its references, and a render function."""

    __slots__ = ("source", "native", "refs", "names", "_fn", "_expr")

    def __init__(self, source: str) -> None:
        self.source = source
        m = _WHOLE.match(source)
        whole = m is not None and not _MARKERS.search(m.group("expr"))
        try:
            if whole and m is not None:
                expr = m.group("expr")
                ast = _ENV.parse("{{" + expr + "}}")
                self._expr = _ENV.compile_expression(expr, undefined_to_none=False)
                self._fn = None
            else:
                ast = _ENV.parse(source)
                self._fn = _ENV.from_string(source)
                self._expr = None
        except TemplateSyntaxError as exc:
            raise TemplateError(f"template syntax error: {exc.message}", exc.lineno) from None
        self.native = whole
        self.refs, self.names = _analyse(ast)

    def render(self, context: dict[str, Any]) -> Any:
        try:
            if self._expr is not None:
                value = self._expr(**context)
                if isinstance(value, Undefined):
                    value._fail_with_undefined_error()
                return value
            assert self._fn is not None
            return self._fn.render(context)
        except UndefinedError as exc:
            raise TemplateError(_undefined_message(str(exc))) from None
        except SecurityError as exc:
            raise TemplateError(f"not allowed in a template: {exc}") from None
        except TemplateError:
            raise
        except Exception as exc:  # noqa: BLE001 - any error inside user code is the user's
            raise TemplateError(f"{type(exc).__name__}: {exc}") from None


def _undefined_message(msg: str) -> str:
    m = re.match(r"'(.+?)' has no attribute '(.+?)'", msg)
    if m:
        return f"{m.group(1)} has no attribute '{m.group(2)}'"
    m = re.match(r"'(.+?)' is undefined", msg)
    if m:
        return f"'{m.group(1)}' is undefined"
    return msg


_CACHE: dict[str, Compiled] = {}


def compile_template(source: str) -> Compiled:
    c = _CACHE.get(source)
    if c is None:
        c = Compiled(source)
        if len(_CACHE) < 50_000:
            _CACHE[source] = c
    return c


def render(value: Any, context: dict[str, Any]) -> Any:
    """Render every template inside `value` (strings, lists, mappings), keeping native types."""
    if isinstance(value, str):
        if not is_template(value):
            return value
        return compile_template(value).render(context)
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    return value


def templates_in(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Every template string in `value`, with its path."""
    if isinstance(value, str):
        if is_template(value):
            yield path, value
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from templates_in(v, (*path, i))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from templates_in(v, (*path, k))


# --- analysis ------------------------------------------------------------------------

def _analyse(ast: nodes.Template) -> tuple[tuple[Ref, ...], frozenset[str]]:
    """References rooted at scope names, and every free name the template loads."""
    refs: list[Ref] = []
    bound: set[str] = set()
    for n in ast.find_all((nodes.Assign, nodes.For, nodes.Macro)):
        for t in n.find_all(nodes.Name):
            if t.ctx in ("store", "param"):
                bound.add(t.name)
    names: set[str] = set()

    def walk(node: nodes.Node) -> None:
        if isinstance(node, (nodes.Getattr, nodes.Getitem, nodes.Name)):
            chain: list[Part] = []
            cur: nodes.Node = node
            while isinstance(cur, (nodes.Getattr, nodes.Getitem)):
                if isinstance(cur, nodes.Getattr):
                    chain.append(Part("attr", cur.attr))
                else:
                    arg = cur.arg
                    if isinstance(arg, nodes.Const):
                        chain.append(Part("const", arg.value))
                    else:
                        chain.append(Part("expr", arg))
                        walk(arg)
                cur = cur.node
            if isinstance(cur, nodes.Name):
                if cur.ctx == "load" and cur.name not in bound:
                    names.add(cur.name)
                    if cur.name in SCOPE:
                        refs.append(Ref(cur.name, tuple(reversed(chain)), node.lineno))
            else:
                walk(cur)
            return
        for child in node.iter_child_nodes():
            walk(child)

    walk(ast)
    for n in ast.find_all(nodes.Getattr):
        if n.attr.startswith("_"):
            raise TemplateError(f"templates may not use the attribute '{n.attr}'", n.lineno)
    return tuple(refs), frozenset(names - GLOBALS)


def index_value(part: Part, index: int | None) -> int | None:
    """The integer an index part denotes for loop position `index`, when it can be known
    before the run: a constant, or arithmetic over `index` and constants."""
    if part.kind == "const":
        return part.value if isinstance(part.value, int) and not isinstance(part.value, bool) \
            else None
    if part.kind != "expr":
        return None
    node = part.value
    for n in node.find_all(nodes.Name):
        if n.name != "index":
            return None
    if index is None and any(True for _ in node.find_all(nodes.Name)):
        return None
    allowed = (nodes.Name, nodes.Const, nodes.Add, nodes.Sub, nodes.Mul, nodes.FloorDiv,
               nodes.Mod, nodes.Neg, nodes.Pos)
    if not isinstance(node, allowed) or any(not isinstance(n, allowed)
                                            for n in node.find_all(nodes.Node)):
        return None
    try:
        v = _ENV.compile_expression(_source_of(node), undefined_to_none=False)(index=index)
    except Exception:  # noqa: BLE001 - unknowable before the run; the render will tell
        return None
    return v if isinstance(v, int) else None


def _source_of(node: nodes.Node) -> str:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Const):
        return repr(node.value)
    if isinstance(node, nodes.Neg):
        return f"(-{_source_of(node.node)})"
    if isinstance(node, nodes.Pos):
        return f"(+{_source_of(node.node)})"
    ops = {nodes.Add: "+", nodes.Sub: "-", nodes.Mul: "*", nodes.FloorDiv: "//", nodes.Mod: "%"}
    for cls, op in ops.items():
        if isinstance(node, cls):
            return f"({_source_of(node.left)} {op} {_source_of(node.right)})"  # type: ignore[attr-defined]
    raise ValueError(node)
