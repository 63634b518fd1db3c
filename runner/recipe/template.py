"""Templates: rendering step inputs, and reading which earlier outputs they refer to.

Why a sandbox: recipes come from pull requests, so a template is untrusted code. It runs
in runner.recipe.sandbox (no dunders, no mutation, no loader, bounded work); `{% include %}`,
`{% import %}` and `{% extends %}` are refused when parsing; the context holds only
``vars``, ``steps``, ``item``, ``index`` and, in a reusable recipe, ``inputs`` (never
``os.environ``), and undefined names fail loudly instead of rendering as empty strings.

A value that is exactly one ``{{ expr }}`` keeps its native type (a number, a list, a
track object); anything else renders to a string.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError, UndefinedError

from runner.recipe import sandbox

SCOPE = ("vars", "steps", "item", "index", "inputs")

# The environments (runner.recipe.sandbox: what a template may reach, how much it may build).
_ENV = sandbox.make()
GLOBALS = frozenset(_ENV.globals)


def _path_value(value: Any) -> str:
    """A value inserted into an output path: one file name's worth, never a separator."""
    text = "" if value is None else str(value)
    return text.replace("/", "_").replace("\\", "_").replace("\x00", "")


_PATH_ENV = sandbox.make(_path_value, keep_trailing_newline=False)
# No loader, so these could only fail at render time with an obscure message; refusing
# them when parsing says why.
_FILE_TAGS = {nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "from",
              nodes.Extends: "extends"}

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
        return f"[{_expr_text(self.value)}]"


@dataclass(frozen=True)
class Ref:
    root: str
    parts: tuple[Part, ...]
    line: int

    def text(self, upto: int | None = None) -> str:
        return self.root + "".join(str(p) for p in self.parts[:upto])


class Compiled:
    """A parsed template: its references, and a render function."""

    __slots__ = ("source", "native", "refs", "names", "_fn", "_expr", "_ast", "_simple")

    def __init__(self, source: str) -> None:
        self.source = source
        m = _WHOLE.match(source)
        whole = m is not None and not _MARKERS.search(m.group("expr"))
        self._fn: Any = None
        self._expr: Any = None
        self._ast: nodes.Template | None = None
        self._simple = _simple_parse(source)
        if self._simple is not None:
            # Plain reference chains, the common case: no Jinja parse, no code generation.
            self.native = whole
            refs, line = [], 1  # a reference's line within the template, for positions
            for c in self._simple:
                if isinstance(c, str):
                    line += c.count("\n")
                elif c[0] in SCOPE:
                    refs.append(Ref(c[0], tuple(c[1]), line))
            self.refs = tuple(refs)
            self.names = frozenset(c[0] for c in self._simple if isinstance(c, tuple))
            return
        try:
            ast = _ENV.parse(source)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"template syntax error: {exc.message}", exc.lineno) from None
        self.native = whole
        self.refs, self.names = _analyse(ast)
        # Code generation is the expensive half of Jinja; do it only when first rendered.
        self._ast = ast

    @property
    def is_ref(self) -> bool:
        """Whether the template is exactly one reference chain, `{{ steps.x.tracks[0] }}`,
        so that its value is that of the thing it names."""
        return self._simple is not None and self.native and len(self.refs) == 1 \
            and sum(1 for c in self._simple if not isinstance(c, str)) == 1

    def _compile(self) -> None:
        m = _WHOLE.match(self.source)
        if self.native and m is not None:
            self._expr = _ENV.compile_expression(m.group("expr"), undefined_to_none=False)
        else:
            self._fn = _ENV.from_string(self._ast if self._ast is not None else self.source)
        self._ast = None

    def render(self, context: dict[str, Any]) -> Any:
        if self._simple is not None:
            value = _simple_render(self._simple, context, self.native)
            if value is not _MISS:
                return value
        if self._fn is None and self._expr is None:
            self._compile()
        try:
            if self._expr is not None:
                value = self._expr(**context)
                if isinstance(value, Undefined):
                    value._fail_with_undefined_error()
                return sandbox.check_native(value)
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


# --- the fast path for plain reference chains ------------------------------------------

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_SEG = re.compile(r"\{\{\s*(" + _NAME + r"(?:\s*(?:\.\s*" + _NAME +
                  r"|\[\s*(?:-?[0-9]+|'[^'\\]*'|\"[^\"\\]*\"|index(?:\s*[-+]\s*[0-9]+)?)\s*\]))*)"
                  r"\s*\}\}")
_TOKEN = re.compile(r"\.\s*(" + _NAME + r")|\[\s*(-?[0-9]+|'[^'\\]*'|\"[^\"\\]*\"|index"
                    r"(?:\s*([-+])\s*([0-9]+))?)\s*\]")
_MISS: Any = object()


_NAME_RE = re.compile(_NAME)


def _simple_parse(source: str) -> list[Any] | None:
    """Text and `{{ name(.attr|[const]|[index±n])* }}` segments, or None if the template
    is anything else (filters, operators, tags: Jinja handles those)."""
    out: list[Any] = []
    pos = 0
    for m in _SEG.finditer(source):
        out.append(source[pos:m.start()])
        chain = m.group(1)
        names = chain.split(".")
        if all(n.isidentifier() for n in names) and chain.isascii():
            # `a.b.c`, the common case: the pattern matched it already, so each piece
            # is a name (no brackets, no spaces); skip the tokenizer.
            name, attrs = names[0], names[1:]
        else:
            root = _NAME_RE.match(chain)
            assert root is not None
            name, attrs = root.group(0), None
        if name in GLOBALS or name in ("true", "false", "none", "True", "False", "None"):
            return None
        parts: list[Part] = []
        if attrs is not None:
            for a in attrs:
                if a.startswith("_"):
                    return None  # let Jinja's analysis refuse it with its message
                parts.append(Part("attr", a))
            out.append((name, parts))
            pos = m.end()
            continue
        rest = chain[len(name):]
        for t in _TOKEN.finditer(rest):
            if t.group(1):
                if t.group(1).startswith("_"):
                    return None  # let Jinja's analysis refuse it with its message
                parts.append(Part("attr", t.group(1)))
            else:
                raw = t.group(2)
                if raw.startswith(("'", '"')):
                    parts.append(Part("const", raw[1:-1]))
                elif raw.startswith("index"):
                    node: nodes.Expr = nodes.Name("index", "load")
                    if t.group(3):
                        cls = nodes.Add if t.group(3) == "+" else nodes.Sub
                        node = cls(node, nodes.Const(int(t.group(4))))
                    parts.append(Part("expr", node))
                else:
                    parts.append(Part("const", int(raw)))
        out.append((name, parts))
        pos = m.end()
    out.append(source[pos:])
    text = "".join(out[::2])  # text and segments alternate, text first and last
    if _MARKERS.search(text) or "}}" in text:
        return None
    return out


def _simple_render(segments: list[Any], ctx: dict[str, Any], native: bool) -> Any:
    pieces: list[str] = []
    value: Any = None
    for seg in segments:
        if isinstance(seg, str):
            if seg:
                pieces.append(seg)
            continue
        name, parts = seg
        if name not in ctx:
            return _MISS
        value = ctx[name]
        for p in parts:
            if p.kind == "expr":
                i = _arith(p.value, ctx.get("index"))
                if i is None or not isinstance(value, list) or not -len(value) <= i < len(value):
                    return _MISS
                value = value[i]
            elif isinstance(value, dict):
                if p.value not in value:
                    return _MISS
                value = value[p.value]
            elif isinstance(value, list) and isinstance(p.value, int):
                if not -len(value) <= p.value < len(value):
                    return _MISS
                value = value[p.value]
            else:
                return _MISS  # attributes of other objects: Jinja's sandbox decides
        if isinstance(value, Undefined):
            return _MISS
        if not native:
            pieces.append(str(value))
    return value if native else "".join(pieces)


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


def render_path(source: str, context: dict[str, Any]) -> str:
    """Render an output path: slashes written in the template separate folders; slashes
    inside inserted values (a title like 'a/b' or '../../x') do not."""
    if not is_template(source):
        return source
    try:
        return _PATH_ENV.from_string(source).render(context)
    except UndefinedError as exc:
        raise TemplateError(_undefined_message(str(exc))) from None
    except SecurityError as exc:
        raise TemplateError(f"not allowed in a template: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any error inside user code is the user's
        raise TemplateError(f"{type(exc).__name__}: {exc}") from None


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
    for tag in ast.find_all(tuple(_FILE_TAGS)):
        raise TemplateError(f"templates may not use {{% {_FILE_TAGS[type(tag)]} %}}: they "
                            "cannot read files", tag.lineno)
    for attr in ast.find_all(nodes.Getattr):
        if attr.attr.startswith("_"):
            raise TemplateError(f"templates may not use the attribute '{attr.attr}'",
                                attr.lineno)
    return tuple(refs), frozenset(names - GLOBALS)


def index_value(part: Part, index: int | None) -> int | None:
    """The integer an index part denotes for loop position `index`, when it can be known
    before the run: a constant, or arithmetic over `index` and constants."""
    if part.kind == "const":
        return part.value if isinstance(part.value, int) and not isinstance(part.value, bool) \
            else None
    if part.kind != "expr":
        return None
    return _arith(part.value, index)


_OPS: dict[type, Any] = {
    nodes.Add: lambda a, b: a + b, nodes.Sub: lambda a, b: a - b,
    nodes.Mul: lambda a, b: a * b,
    nodes.FloorDiv: lambda a, b: a // b if b else None,
    nodes.Mod: lambda a, b: a % b if b else None,
}


def _arith(node: nodes.Node, index: int | None) -> int | None:
    if isinstance(node, nodes.Name):
        return index if node.name == "index" else None
    if isinstance(node, nodes.Const):
        v = node.value
        return v if isinstance(v, int) and not isinstance(v, bool) else None
    if isinstance(node, nodes.Neg):
        v = _arith(node.node, index)
        return -v if v is not None else None
    if isinstance(node, nodes.Pos):
        return _arith(node.node, index)
    op = _OPS.get(type(node))
    if op is not None:
        a = _arith(node.left, index)  # type: ignore[attr-defined]
        b = _arith(node.right, index)  # type: ignore[attr-defined]
        return op(a, b) if a is not None and b is not None else None
    return None


_OP_TEXT: dict[type, str] = {nodes.Add: "+", nodes.Sub: "-", nodes.Mul: "*",
                             nodes.FloorDiv: "//", nodes.Mod: "%", nodes.Div: "/"}


def _expr_text(node: nodes.Node, top: bool = True) -> str:
    """An index expression as the author wrote it (near enough), for messages."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Const):
        return repr(node.value)
    if isinstance(node, nodes.Neg):
        return "-" + _expr_text(node.node, False)
    if isinstance(node, nodes.Getattr):
        return f"{_expr_text(node.node, False)}.{node.attr}"
    op = _OP_TEXT.get(type(node))
    if op is None:
        return "…"
    text = f"{_expr_text(node.left, False)} {op} {_expr_text(node.right, False)}"  # type: ignore[attr-defined]
    return text if top else f"({text})"
