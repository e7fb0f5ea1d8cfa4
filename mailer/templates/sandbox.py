"""Run untrusted Jinja2 templates in a sandbox that also bounds their size.

Jinja2's ``ImmutableSandboxedEnvironment`` stops a template from reaching
Python internals (``''.__class__.__mro__``, ``|attr('format')``...) and from
changing the data it is given. It does not stop a template from building a
gigabyte string in one expression. This module adds size bounds on top:

- every value a template makes (operator, filter, method call, ``~``) and the
  whole output are at most ``max_size`` characters; known multipliers
  (``*``, ``**``, ``%`` and format widths, ``center``, ``indent``,
  ``wordwrap``, ``replace``, ``join``, ``batch``, ``slice``) are estimated
  *before* they run;
- ``range()`` gets a budget of items per render, not just per call;
- ``lipsum()`` and ``namespace()`` are removed (the first makes any amount of
  text, the second is the only way to grow a value across loop iterations).

CPU time is not bounded: nested loops over data can still run long. Render
templates from the open internet in a worker process with a time limit.
"""

from __future__ import annotations

import contextvars
import functools
import re
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment, StrictUndefined, Template
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.nodes import Concat, EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

DEFAULT_MAX_SIZE = 1_000_000  # characters per value and per rendered part
RANGE_BUDGET = 100_000  # range() items per render, all calls together
# Filters whose output can be much larger than their input (Jinja2's builtins).
GROWING_FILTERS = frozenset(
    {"center", "indent", "wordwrap", "batch", "slice", "replace", "join", "format"}
)
MAX_INT_BITS = 100_000  # ~30,000 decimal digits
_DEPTH_LIMIT = 20

# Widths and precisions in %-formats and str.format specs.
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_SPEC = re.compile(r"\{[^{}]*?:[^{}]*?(\d+)[^{}]*\}")


@dataclass
class _Budget:
    max_size: int
    range_left: int = RANGE_BUDGET
    sizes: dict[int, tuple[object, int]] = field(default_factory=dict)


_budget: contextvars.ContextVar[_Budget] = contextvars.ContextVar("sandbox_budget")


def _current() -> _Budget:
    try:
        return _budget.get()
    except LookupError:
        # Rendering outside render_bounded (Template.render called directly).
        return _Budget(DEFAULT_MAX_SIZE)


def size_of(value: object, depth: int = 0) -> int:
    """Return roughly how many characters ``value`` becomes as text."""
    if type(value) is str:  # the common case, first and fastest
        return len(value)
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() // 3 + 1
    if not isinstance(value, list | tuple | set | frozenset | dict):
        return 0
    budget = _current()
    cached = budget.sizes.get(id(value))
    if cached is not None and cached[0] is value:
        return cached[1]
    total = len(value)
    items: Iterable[Any] = (
        (item for pair in value.items() for item in pair)
        if isinstance(value, dict)
        else value
    )
    if depth < _DEPTH_LIMIT:
        for item in items:
            total += size_of(item, depth + 1)
            if total > budget.max_size:
                break
    # Keep the object alive with its size, so that its id cannot be reused.
    budget.sizes[id(value)] = (value, total)
    return total


def _refuse(what: str) -> SecurityError:
    limit = _current().max_size
    return SecurityError(f"{what} would exceed the size limit ({limit:,} characters)")


def _check_size(estimate: int, what: str) -> None:
    if estimate > _current().max_size:
        raise _refuse(what)


def _check_result(result: object, what: str) -> object:
    _check_size(size_of(result), what)
    return result


def _check_widths(spec: str, pattern: re.Pattern[str], what: str) -> int:
    widths = 0
    for match in pattern.finditer(spec):
        for number in match.groups():
            if number == "*":
                raise SecurityError(f"{what}: '*' widths are not allowed")
            if number:
                if len(number) > 9:
                    raise _refuse(what)
                widths += int(number)
    _check_size(widths, what)
    return widths


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], at: int, name: str) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[at] if len(args) > at else None


def _as_int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _lines(text: object) -> int:
    return str(text).count("\n") + 1 if isinstance(text, str) else 1


def _estimate_filter(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    value = args[0] if args else None
    base = size_of(value)
    if name == "center":
        return max(base, _as_int(_arg(args, kwargs, 1, "width")))
    if name == "indent":
        width = _arg(args, kwargs, 1, "width")
        per_line = len(width) if isinstance(width, str) else _as_int(width)
        return base + _lines(value) * per_line
    if name == "wordwrap":
        width = max(_as_int(_arg(args, kwargs, 1, "width")), 1)
        wrap = _arg(args, kwargs, 3, "wrapstring")
        breaks = base // width + _lines(value)
        return base + breaks * (len(wrap) if isinstance(wrap, str) else 1)
    if name in {"batch", "slice"}:
        count = _as_int(
            _arg(args, kwargs, 1, "linecount" if name == "batch" else "slices")
        )
        _check_size(count, f"|{name}")
        return base + count * (size_of(_arg(args, kwargs, 2, "fill_with")) + 1)
    if name == "replace":
        old, new = _arg(args, kwargs, 1, "old"), _arg(args, kwargs, 2, "new")
        count = _arg(args, kwargs, 3, "count")
        return _replace_size(value, old, new, count)
    if name == "join":
        separator = _arg(args, kwargs, 1, "d")
        items = len(value) if isinstance(value, Sized) else 0
        return base + items * size_of(separator)
    if name == "format":
        widths = _check_widths(str(value), _PERCENT_SPEC, "|format")
        return base + widths + sum(map(size_of, args[1:]))
    return 0


def _replace_size(text: object, old: object, new: object, count: object) -> int:
    if not isinstance(text, str) or not isinstance(old, str):
        return size_of(text)
    growth = max(size_of(new) - len(old), 0)
    matches = len(text) + 1 if old == "" else text.count(old)
    if isinstance(count, int) and count >= 0:
        matches = min(matches, count)
    return len(text) + matches * growth


def _inputs_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    total = 0
    for value in (*args, *kwargs.values()):
        # Contexts and environments passed to some filters count as 0.
        total += len(value) if type(value) is str else size_of(value)
    return total


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    # Only filters whose output can outgrow their input need an estimate first;
    # every filter gets the cheap checks on its inputs and its result.
    grows = name in GROWING_FILTERS
    what = f"|{name}"

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        limit = _current().max_size
        if _inputs_size(args, kwargs) > limit:
            raise _refuse(what)
        if grows:
            # Filters that want the context or environment get it first.
            values = tuple(
                a
                for a in args
                if not isinstance(a, Context | EvalContext | Environment)
            )
            if _estimate_filter(name, values, kwargs) > limit:
                raise _refuse(what)
        result = function(*args, **kwargs)
        size = len(result) if type(result) is str else size_of(result)
        if size > limit:
            raise _refuse(what)
        return result

    return bounded


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    budget = _current()
    if len(numbers) > budget.range_left:
        raise SecurityError(
            f"range() would go past {RANGE_BUDGET:,} items in this template"
        )
    budget.range_left -= len(numbers)
    return numbers


def _checked_join(join: Callable[[Iterable[Any]], str], parts: tuple[Any, ...]) -> str:
    _check_size(sum(map(size_of, parts)), "'~'")
    return join(parts)


class _BoundedCodeGenerator(CodeGenerator):
    """Route ``~`` through a size check (Jinja2 compiles it to a bare join)."""

    def visit_Concat(self, node: Concat, frame: Frame) -> None:  # noqa: N802
        """Write ``environment.checked_join(join, (parts...))``."""
        # The choice of join function is Jinja2's own (CodeGenerator.visit_Concat).
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.checked_join({join}, (")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """A sandboxed, immutable Jinja2 environment whose values have a size limit."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(
            autoescape=autoescape,
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            finalize=self._finalize,
        )
        for name in ("lipsum", "namespace"):
            self.globals.pop(name, None)
        self.globals["range"] = _bounded_range
        self.filters = {
            name: _bounded_filter(name, function)
            for name, function in self.filters.items()
        }

    @staticmethod
    def checked_join(
        join: Callable[[Iterable[Any]], str], parts: tuple[Any, ...]
    ) -> str:
        """Join the parts of a ``~`` expression if the result fits the limit."""
        return _checked_join(join, parts)

    @staticmethod
    def _finalize(value: Any) -> Any:
        size = len(value) if type(value) is str else size_of(value)
        if size > _current().max_size:
            raise _refuse("an output value")
        return value

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Apply a binary operator once its result is known to fit the limit."""
        what = f"'{operator}'"
        _check_size(size_of(left) + size_of(right), what)
        _check_binop(operator, left, right, what)
        return _check_result(super().call_binop(context, operator, left, right), what)

    def call(
        __self,  # noqa: N805 - Jinja2's own signature, so kwargs cannot clash
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Call a function or method from the template within the size limit."""
        name = getattr(__obj, "__name__", "a call")
        owner = getattr(__obj, "__self__", None)
        what = f"{name}()"
        _check_size(sum(map(size_of, args)) + sum(map(size_of, kwargs.values())), what)
        if isinstance(owner, str):
            _check_size(_estimate_method(owner, name, args), what)
        result = super().call(__context, __obj, *args, **kwargs)
        return _check_result(result, what)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Refuse ``str.format`` specs whose widths exceed the limit."""
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and getattr(value, "__name__", "") in {
            "format",
            "format_map",
        }:
            _check_widths(owner, _FORMAT_SPEC, "format()")
        return super().wrap_str_format(value)


def _check_binop(operator: str, left: Any, right: Any, what: str) -> None:
    both_ints = isinstance(left, int) and isinstance(right, int)
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, str | list | tuple) and isinstance(times, int):
                _check_size(len(sequence) * max(times, 0), what)
        if both_ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise _refuse(what)
    elif operator == "**":
        grows = both_ints and right > 0 and abs(left) > 1
        if grows and left.bit_length() * right > MAX_INT_BITS:
            raise _refuse(what)
    elif operator == "%" and isinstance(left, str):
        _check_widths(left, _PERCENT_SPEC, what)


def _estimate_method(text: str, name: str, args: tuple[Any, ...]) -> int:
    first = args[0] if args else None
    if name in {"center", "ljust", "rjust", "zfill"}:
        return max(len(text), _as_int(first))
    if name == "expandtabs":
        return len(text) + text.count("\t") * _as_int(first if args else 8)
    if name == "replace" and len(args) >= 2:
        return _replace_size(text, args[0], args[1], args[2] if len(args) > 2 else None)
    if name == "join" and isinstance(first, Sized):
        return size_of(first) + len(first) * len(text)
    return 0


def render_bounded(
    template: Template, context: dict[str, Any], *, max_size: int
) -> str:
    """Render a template of a BoundedSandbox, stopping at ``max_size`` characters.

    Raises:
        jinja2.sandbox.SecurityError: The template broke a sandbox rule or a
            size limit.
    """
    token = _budget.set(_Budget(max_size))
    try:
        pieces: list[str] = []
        total = 0
        chunks: Iterator[str] = template.generate(context)
        for chunk in chunks:
            total += len(chunk)
            if total > max_size:
                raise _refuse("the rendered text")
            pieces.append(chunk)
        return "".join(pieces)
    finally:
        _budget.reset(token)
