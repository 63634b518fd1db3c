"""The Jinja2 environment templates run in: what a template may reach, and how much work
one render may do.

A template is code from a pull request, run by the machine that merely validates it.

Reach. Jinja2's immutable sandbox refuses attributes starting with `_` (no `__class__`,
`__globals__`, `mro`), mutation of values and unsafe callables; the environment has no
loader (runner.recipe.template refuses `{% include %}`, `{% import %}` and `{% extends %}` before
rendering) and no `lipsum`, `cycler`, `joiner` or `namespace`; the context holds only what
runner.recipe.template passes (never the process environment).

Work. The sandbox stops escapes, not size, so every way a few characters of template can
ask for unbounded memory or time is bounded per render, to MAX_SIZE (1,000,000):

- memory: a string or list built by an operator, a method or a filter may not exceed
  MAX_SIZE characters or items; the amplifiers are checked before they run (`'a' * n`,
  `x + x`, `.ljust(n)`, `.replace`, `.join`, `.translate`, `%` and `.format`, `|indent`,
  `|wordwrap`, `|batch`, `|slice`, `|sum`, big-integer `*` and `**`), every other call and
  filter after;
- text: a value turned into text (output, `~`, string methods and filters, `%`,
  `.format`) may not exceed MAX_SIZE characters as `str()` would write it (`weight`:
  shared sub-structures such as `[[x] * n] * n` counted each time they appear), and a
  value returned whole (`{{ steps.song }}`) not MAX_NATIVE;
- loops: at most MAX_SIZE turns in all; calls (functions, methods, macros, filters, each
  item a `map` passes through one): at most MAX_CALLS; output, literal text repeated by
  loops and macros included: MAX_SIZE characters.

- in all, per render: what the operators, calls and filters build (strings by their
  characters, lists, tuples and mappings by 8 bytes per item) at most MAX_BUILT
  (10,000,000; about 10 MB), counted as it is built, so many values each under MAX_SIZE
  cannot add up (`range(30000)|map('center', 200000)|list` stops after 50 of them);
  `|tojson(indent=n)` is measured before it runs;
- time: MAX_SECONDS (2 s) of this thread's CPU per render (CPU, not the wall clock, so a
  busy machine does not turn a good template into a refused one), checked at every call,
  filter, operator, output and every 1,024 loop turns; one operation in progress when it
  passes runs to its end, and each is bounded above (about a second for the largest:
  sorting a million items);
- numbers: an integer an operator makes, or a template returns or writes, has at most
  MAX_INT_BITS bits (about 1,200 digits; Python itself refuses to print 4,300), and a
  float must be finite.

Each limit raises SecurityError, which runner.recipe.template reports as "not allowed in a
template: ...". docs/SECURITY.md states these bounds for users.
"""

from __future__ import annotations

import math
import re
import string
import time
from collections.abc import Callable, Iterator
from typing import Any

from jinja2 import StrictUndefined, nodes, pass_context, pass_eval_context
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_SIZE = 1_000_000
# A value an expression returns whole (a list of tracks for `clips`, say) is not text yet;
# it only has to stay small enough to be hashed into a step's key.
MAX_NATIVE = 16 * MAX_SIZE
MAX_CALLS = 100_000  # a call (a macro's above all) costs ~100 times a loop turn
MAX_INT_BITS = 4096
MAX_BUILT = 10_000_000  # what one render may build in all (characters, or 8 per item)
MAX_SECONDS = 2.0  # what one render may take
REMOVED_GLOBALS = ("lipsum", "cycler", "joiner", "namespace")
_PRINTF_WIDTH = re.compile(r"%[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?")
_LOOP_FILTER = "_sunoflow_counted"
_COST_FILTER = "_sunoflow_cost"
_SIZED_FILTER = "_sunoflow_sized"


class _Budget:
    """What one render has spent, kept on its EvalContext."""

    __slots__ = ("turns", "calls", "output", "built", "deadline", "memo")

    def __init__(self) -> None:
        self.turns = self.calls = self.output = self.built = 0
        self.deadline = time.thread_time() + MAX_SECONDS
        # id -> (object, weight): the object is kept alive so that its id stays its own.
        self.memo: dict[int, tuple[Any, int]] = {}


def _budget(ev: EvalContext) -> _Budget:
    b: _Budget | None = getattr(ev, "_sunoflow", None)
    if b is None:
        b = _Budget()
        ev._sunoflow = b  # type: ignore[attr-defined]
    return b


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def weight(value: Any, memo: dict[int, tuple[Any, int]] | None = None,
           limit: int = MAX_SIZE) -> int:
    """About how many characters `value` takes as text; counting stops a little past
    `limit`, so this costs at most that much however the value was built."""
    memo = {} if memo is None else memo

    def w(v: Any, depth: int) -> int:
        if isinstance(v, str):
            return len(v)
        if v is None or isinstance(v, bool):
            return 5
        if isinstance(v, int):
            _check_int(v)
            return int(v.bit_length()) // 3 + 1
        if isinstance(v, float):
            if not math.isfinite(v):
                raise SecurityError(f"the number {v} (not finite) is not allowed")
            return 5
        if isinstance(v, (list, tuple, dict, set, frozenset)):
            hit = memo.get(id(v))
            if hit is not None and hit[0] is v:
                return hit[1]
            if depth > 200:
                raise SecurityError("values nested more than 200 deep are not allowed")
            total = 2
            items = (x for kv in v.items() for x in kv) if isinstance(v, dict) else v
            for x in items:
                total += w(x, depth + 1) + 2
                if total > limit:
                    break
            memo[id(v)] = (v, total)
            return total
        return 16  # other objects (ranges, generators, undefined) print short

    return w(value, 0)


def _check_int(v: int) -> None:
    if v.bit_length() > MAX_INT_BITS:
        raise SecurityError(f"a number of more than {MAX_INT_BITS} bits (about "
                            f"{int(MAX_INT_BITS * 0.30103):,} digits) is not allowed")


def _spend(b: _Budget, value: Any) -> Any:
    """Count what a call, filter or operator built against MAX_BUILT, and the clock."""
    if isinstance(value, str):
        b.built += len(value)
    elif isinstance(value, (list, tuple, dict, set, frozenset)):
        b.built += 8 * len(value)
    elif _is_int(value):
        _check_int(value)
    if b.built > MAX_BUILT:
        raise SecurityError(f"the template builds more than {MAX_BUILT:,} bytes in all")
    _tick(b)
    return value


def _tick(b: _Budget) -> None:
    if time.thread_time() > b.deadline:
        raise SecurityError(f"the template ran for more than {MAX_SECONDS:g} s")


def _json_size(value: Any, indent: int, limit: int = MAX_SIZE) -> int:
    """About how long `value` is as indented JSON: each item on its own line, indented
    by its depth (counting stops a little past `limit`)."""
    total = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack and total <= limit:
        v, depth = stack.pop()
        total += depth * indent + 2
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
            total += sum(len(str(k)) for k in v)
        elif isinstance(v, (list, tuple)):
            stack.extend((x, depth + 1) for x in v)
        else:
            total += weight(v, limit=limit)
    return total


def _too_big(size: int, what: str = "the result", unit: str = "characters",
             limit: int = MAX_SIZE) -> None:
    if size > limit:
        raise SecurityError(f"{what} would have {size:,} {unit} (at most {limit:,})")


def _sized(memo: dict[int, tuple[Any, int]], *values: Any) -> int:
    """The largest weight among `values`; refuses any above MAX_SIZE."""
    most = 0
    for v in values:
        n = weight(v, memo)
        _too_big(n, "a value")
        most = max(most, n)
    return most


def _check_printf(fmt: str) -> None:
    for m in _PRINTF_WIDTH.finditer(fmt):
        for g in m.groups():
            if g == "*":
                raise SecurityError("a '*' width in a format is not allowed")
            if g and int(g) > MAX_SIZE:
                raise SecurityError(f"format width {g} is too large")


def _check_format(fmt: str) -> int:
    """Refuse huge widths in a str.format string; return its number of fields."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return 0  # the render reports the malformed format itself
    n = 0
    for _lit, name, spec, _conv in fields:
        if name is not None:
            n += 1
        if spec and "{" in spec:
            raise SecurityError("a nested {} inside a format spec is not allowed")
        if spec and any(int(d) > MAX_SIZE for d in re.findall(r"\d+", spec)):
            raise SecurityError(f"format spec {spec!r} is too large")
    return n


# --- checks made before a call that can multiply sizes ----------------------------------

def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str,
         default: Any = None) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _replace_size(s: str, old: Any, new: Any, count: Any) -> int:
    if not isinstance(old, str) or not isinstance(new, str):
        return len(s)
    n = s.count(old) if old else len(s) + 1
    if _is_int(count) and count >= 0:
        n = min(n, count)
    return len(s) + n * max(0, len(new) - len(old))


def _join_size(memo: dict[int, tuple[Any, int]], sep: str, items: Any) -> int:
    if not isinstance(items, (list, tuple)):
        return 0  # a string or a mapping: joining it costs no more than it
    return sum(weight(x, memo) for x in items) + len(sep) * max(0, len(items) - 1)


def _listed(value: Any) -> Any:
    """An iterator made into a list (so that what it yields can be measured before it is
    joined), within the item limit."""
    if isinstance(value, (str, list, tuple, dict)) or not hasattr(value, "__iter__"):
        return value
    out = []
    for x in value:
        out.append(x)
        if len(out) > MAX_SIZE:
            _too_big(len(out), unit="items")
    return out


def _str_method(memo: dict[int, tuple[Any, int]], s: str, name: str, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> None:
    if name in ("ljust", "rjust", "center", "zfill"):
        width = _arg(args, kwargs, 0, "width", 0)
        if _is_int(width):
            _too_big(width)
    elif name == "expandtabs":
        size = _arg(args, kwargs, 0, "tabsize", 8)
        if _is_int(size):
            _too_big(len(s) + s.count("\t") * max(0, size))
    elif name == "replace":
        _too_big(_replace_size(s, _arg(args, kwargs, 0, "old"), _arg(args, kwargs, 1, "new"),
                               _arg(args, kwargs, 2, "count", -1)))
    elif name == "join" and args:
        _too_big(_join_size(memo, s, args[0]))
    elif name == "translate" and args and isinstance(args[0], dict):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        _too_big(len(s) * longest)


def _filter_precheck(memo: dict[int, tuple[Any, int]], name: str, value: Any,
                     args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if name == "replace" and isinstance(value, str):
        _too_big(_replace_size(value, _arg(args, kwargs, 0, "old"),
                               _arg(args, kwargs, 1, "new"), _arg(args, kwargs, 2, "count")))
    elif name == "join":
        sep = _arg(args, kwargs, 0, "d", "")
        if isinstance(sep, str):
            _too_big(_join_size(memo, sep, value))
    elif name == "indent" and isinstance(value, str):
        width = _arg(args, kwargs, 0, "width", 4)
        unit = len(width) if isinstance(width, str) else width if _is_int(width) else 0
        _too_big(len(value) + (value.count("\n") + 1) * max(0, unit))
    elif name == "wordwrap" and isinstance(value, str):
        width = _arg(args, kwargs, 0, "width", 79)
        wrap = _arg(args, kwargs, 2, "wrapstring", "\n")
        if _is_int(width) and isinstance(wrap, str):
            _too_big(len(value) + (len(value) // max(1, width) + 1) * len(wrap))
    elif name in ("batch", "slice"):
        n = _arg(args, kwargs, 0, "linecount" if name == "batch" else "slices", 1)
        if _is_int(n) and n > MAX_SIZE:
            raise SecurityError(f"{name}({n}) is too large")
    elif name == "sum":
        start = _arg(args, kwargs, 1, "start", 0)
        if not isinstance(start, (int, float)):
            raise SecurityError("sum adds numbers only (start must be a number)")
    elif name == "center":
        width = _arg(args, kwargs, 0, "width", 80)
        if _is_int(width):
            _too_big(width)
    elif name == "tojson":
        indent = _arg(args, kwargs, 0, "indent")
        width = len(indent) if isinstance(indent, str) else indent if _is_int(indent) else 0
        if width > 0:
            _too_big(_json_size(value, width))
    elif name == "format" and isinstance(value, str):
        _check_printf(value)
        _too_big(len(value) + value.count("%") * _sized(memo, *args, *kwargs.values()))


def _after(value: Any) -> Any:
    """Refuse a result that grew past the limit (for calls not checked beforehand)."""
    if isinstance(value, (str, list, tuple, dict)):
        _too_big(len(value), unit="characters" if isinstance(value, str) else "items")
    return value


# Filters that rearrange values without turning them into text: a big list of step
# outputs may pass through them (an album of a thousand songs is a few MB as text).
STRUCTURAL = frozenset({
    "attr", "batch", "count", "d", "default", "dictsort", "first", "groupby", "items",
    "last", "length", "list", "map", "max", "min", "random", "reject", "rejectattr",
    "reverse", "select", "selectattr", "slice", "sort", "sum", "unique"})


def _guard_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    kind = getattr(getattr(fn, "jinja_pass_arg", None), "name", None)
    text = name not in STRUCTURAL

    @pass_context
    def guarded(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        b = _budget(context.eval_ctx)
        _count_call(b)  # `big|map('upper')` calls `upper` once per item
        memo = b.memo
        if name == "join":
            value = _listed(value)
        if text:
            _sized(memo, value, *args, *kwargs.values())
        _filter_precheck(memo, name, value, args, kwargs)
        if kind == "context":
            result = fn(context, value, *args, **kwargs)
        elif kind == "eval_context":
            result = fn(context.eval_ctx, value, *args, **kwargs)
        elif kind == "environment":
            result = fn(context.environment, value, *args, **kwargs)
        else:
            result = fn(value, *args, **kwargs)
        return _spend(b, _after(result))

    return guarded


# --- bookkeeping filters the AST rewrite inserts ----------------------------------------

@pass_eval_context
def _counted(eval_ctx: EvalContext, iterable: Any) -> Iterator[Any]:
    """Iterate, counting every turn of every loop in one render."""
    b = _budget(eval_ctx)
    for x in iterable:
        b.turns += 1
        if b.turns > MAX_SIZE:
            raise SecurityError(f"the template's loops run more than {MAX_SIZE:,} times")
        if not b.turns & 1023:
            _tick(b)
        yield x


@pass_context  # never folded into a constant when compiling (as eval_context ones may be)
def _cost(context: Context, _value: Any, chars: int) -> None:
    """Placed first in each loop and macro body: the literal text it is about to emit."""
    _emit(_budget(context.eval_ctx), chars)


@pass_eval_context
def _sized_filter(eval_ctx: EvalContext, value: Any) -> Any:
    """Around each operand of `~`, which turns it into text (and builds that text)."""
    b = _budget(eval_ctx)
    b.built += _sized(b.memo, value)
    _spend(b, None)
    return value


def _count_call(b: _Budget) -> None:
    b.calls += 1
    _tick(b)
    if b.calls > MAX_CALLS:
        raise SecurityError(f"the template makes more than {MAX_CALLS:,} calls (functions, "
                            "methods and filters)")


def _emit(b: _Budget, chars: int) -> None:
    b.output += chars
    _tick(b)
    if b.output > MAX_SIZE:
        raise SecurityError(f"the template writes more than {MAX_SIZE:,} characters")


def _finalizer(then: Callable[[Any], Any]) -> Callable[..., Any]:
    @pass_eval_context
    def finalize(eval_ctx: EvalContext, value: Any) -> Any:
        b = _budget(eval_ctx)
        _sized(b.memo, value)
        out = then(value)
        _emit(b, len(out) if isinstance(out, str) else weight(out, b.memo))
        return out

    return finalize


def _literal(body: list[nodes.Node]) -> int:
    """Characters of literal text in a body (nested bodies included: an overestimate)."""
    return sum(len(str(d.data)) for n in body for d in n.find_all(nodes.TemplateData))


def _charge(body: list[nodes.Node], lineno: int) -> list[nodes.Node]:
    charge = nodes.Filter(nodes.Const(None), _COST_FILTER, [nodes.Const(1 + _literal(body))],
                          [], None, None, lineno=lineno)
    return [nodes.ExprStmt(charge, lineno=lineno), *body]


# --- the environment ----------------------------------------------------------------------

class Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        memo = _budget(context.eval_ctx).memo
        if operator == "**" and _is_int(left) and _is_int(right) and right > 0 \
                and abs(left) > 1 and right * abs(left).bit_length() > MAX_INT_BITS:
            raise SecurityError(f"{left} ** {right} is too large a number")
        if operator == "*":
            if _is_int(left) and _is_int(right) and \
                    left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise SecurityError("the product is too large a number")
            # Sizes in memory (items, not what they print as): a list of n references to
            # one big value costs n; printing it is checked where text is made.
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and _is_int(n) and n > 0:
                    _too_big(len(seq) * n,
                             unit="characters" if isinstance(seq, str) else "items")
        if operator == "+" and isinstance(left, (str, list, tuple)) \
                and isinstance(right, (str, list, tuple)):
            _too_big(len(left) + len(right),
                     unit="characters" if isinstance(left, str) else "items")
        if operator == "%" and isinstance(left, str):
            _check_printf(left)
            items = right if isinstance(right, tuple) else \
                tuple(right.values()) if isinstance(right, dict) else (right,)
            _too_big(len(left) + left.count("%") * _sized(memo, *items))
        return _spend(_budget(context.eval_ctx),
                      super().call_binop(context, operator, left, right))

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        b = _budget(context.eval_ctx)
        _count_call(b)
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str):  # string methods make text of their arguments
            if getattr(obj, "__name__", "") == "join" and args:
                args = (_listed(args[0]), *args[1:])
            _sized(b.memo, *args, *kwargs.values())
            _str_method(b.memo, owner, getattr(obj, "__name__", ""), args, kwargs)
        elif _is_int(owner) and getattr(obj, "__name__", "") == "to_bytes":
            length = _arg(args, kwargs, 0, "length", 1)
            if _is_int(length):
                _too_big(length)
        return _spend(b, _after(super().call(context, obj, *args, **kwargs)))

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None,
                  defer_init: bool = False) -> str:
        # Counting is compiled in: every loop iterates through a counter, every loop and
        # macro body first charges the literal text it will repeat, and every operand of
        # `~` is measured before it becomes text.
        for loop in source.find_all(nodes.For):
            if not (isinstance(loop.iter, nodes.Filter) and loop.iter.name == _LOOP_FILTER):
                loop.iter = nodes.Filter(loop.iter, _LOOP_FILTER, [], [], None, None,
                                         lineno=loop.lineno)
                loop.body = _charge(loop.body, loop.lineno)
        for block in source.find_all((nodes.Macro, nodes.CallBlock)):
            assert isinstance(block, (nodes.Macro, nodes.CallBlock))
            block.body = _charge(block.body, block.lineno)
        for cat in source.find_all(nodes.Concat):
            cat.nodes = [n if isinstance(n, nodes.Filter) and n.name == _SIZED_FILTER else
                         nodes.Filter(n, _SIZED_FILTER, [], [], None, None, lineno=n.lineno)
                         for n in cat.nodes]
        return str(super()._generate(source, name, filename, defer_init))

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fields = _check_format(value.__self__)
        fmt = value.__self__

        def checked(*args: Any, **kwargs: Any) -> Any:
            most = max((weight(a) for a in (*args, *kwargs.values())), default=0)
            _too_big(most, "a value")
            _too_big(len(fmt) + fields * most)
            return wrapped(*args, **kwargs)

        return checked


def make(finalize: Callable[[Any], Any] | None = None, *,
         keep_trailing_newline: bool = True) -> Sandbox:
    """A sandboxed environment with every limit above; `finalize` maps each value a
    template outputs (after it is measured)."""
    env = Sandbox(undefined=StrictUndefined, autoescape=False,
                  keep_trailing_newline=keep_trailing_newline,
                  finalize=_finalizer(finalize or (lambda v: v)))
    for name in REMOVED_GLOBALS:
        env.globals.pop(name, None)
    env.filters = {name: _guard_filter(name, fn) for name, fn in env.filters.items()}
    env.filters.update({_LOOP_FILTER: _counted, _COST_FILTER: _cost,
                        _SIZED_FILTER: _sized_filter})
    return env


def check_native(value: Any) -> Any:
    """A value an expression returns as is: text up to MAX_SIZE, anything else (not text
    yet) up to MAX_NATIVE."""
    limit = MAX_SIZE if isinstance(value, str) else MAX_NATIVE
    _too_big(weight(value, limit=limit), "the value", limit=limit)
    return value
