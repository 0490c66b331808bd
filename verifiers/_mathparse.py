"""The sympy side of the `math` verifier: a small recursive-descent parser and a structural comparison.

Runs inside watchdog worker processes (`sympy_compare` is the job function). Nothing is `eval`ed:
the parser builds sympy objects from tokens it knows (numbers, letters, `+ - * / ^ !`, implicit
products, `\\frac`, `\\sqrt`, `\\binom`, `\\pi`, `\\infty`, `e`, `i`, Greek letters, trig/log
functions, subscripts); anything else makes the answer unparsed, hence unequal.

An answer is read as a structure (`_structure`):
- `\\matrix{a & b ; c & d}` (the normalized form of `pmatrix`/`bmatrix`/...): a matrix, element-wise;
- `A \\cup B`: a union, its parts in any order;
- `\\{a, b\\}` a set and `a, b` a bare list: in any order (a bare list also matches a tuple in order);
- `(a, b)`, `[a, b)` ...: tuples and intervals, in order, the brackets part of the kind;
- `a \\pm b`: the list `a + b, a - b`;
- `x > 3`, `3 < x \\le 5`: an interval when one side is a lone letter, else `lhs - rhs > 0` (or `>=`);
- `lhs = rhs`: an equation, equal to another up to a nonzero constant factor; a lone-letter side is
  dropped (`x = 5` is 5);
- otherwise an expression: equal when `simplify(a - b) == 0`, or numerically within `rel_tol`.

Size guards refuse (`_Refused`) what would exhaust the worker before its wall-time bound: numeric
powers over `MAX_POWER_BITS`, factorials over `MAX_FACTORIAL`, nesting over `MAX_DEPTH`, more than
`MAX_ITEMS` elements.
"""

from __future__ import annotations

import cmath
import math
import re
from typing import Any

MAX_POWER_BITS = 20_000
MAX_FACTORIAL = 2_000
MAX_DEPTH = 100
MAX_ITEMS = 50


class _ParseError(ValueError):
    pass


class _Refused(_ParseError):
    """The answer is well formed but too large to evaluate safely."""


_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+(?![A-Za-z]))?)|(?P<cmd>\\[A-Za-z]+)"
    r"|(?P<word>[A-Za-z]+)|(?P<op>\*\*|[-+*/^(){}\[\]!_|]))"
)
_FUNCTIONS = {"sqrt", "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "log", "ln", "exp"}
_CONSTANTS = {"pi", "infty", "inf", "oo"}
_GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
    "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega",
    "Gamma", "Delta", "Theta", "Lambda", "Sigma", "Phi", "Psi", "Omega",
}  # fmt: skip
_OPERATOR_COMMANDS = {"cdot": "*", "times": "*", "div": "/"}


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos, text = [], 0, text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise _ParseError(f"unexpected {text[pos : pos + 10]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "cmd":
            kind, value = "word", value[1:]
            if value in _OPERATOR_COMMANDS:
                kind, value = "op", _OPERATOR_COMMANDS[value]
            elif value in _GREEK:
                kind = "symbol"
            elif value not in _FUNCTIONS | _CONSTANTS | {"frac", "binom"}:
                raise _ParseError(f"unsupported \\{value}")
        if kind == "word" and value not in _FUNCTIONS | _CONSTANTS | {"frac", "binom"}:
            tokens.extend(("symbol", letter) for letter in value)  # `xy` is x*y
        else:
            tokens.append((kind, "^" if value == "**" else value))
    return tokens


class _Parser:
    """expr := term (+|- term)*; term := unary ((*|/) unary | implicit power)*;
    unary := (-|+) unary | power; power := postfix (^ unary)?; postfix := primary !*"""

    def __init__(self, text: str, guard_size: bool = False) -> None:
        import sympy

        self.sp = sympy
        self.guard_size = guard_size  # refuse huge powers and factorials (the `prm` verifier times out instead)
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0  # open brackets, braces, bars and exponents: what MAX_DEPTH bounds
        self.bars = 0  # open `|...|`: inside one, a `|` closes it instead of starting a product

    def parse(self) -> Any:
        if not self.tokens:
            raise _ParseError("empty")
        expr = self.expr()
        if self.pos != len(self.tokens):
            raise _ParseError(f"unexpected {self.tokens[self.pos][1]!r}")
        return expr

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "")

    def take(self, expected: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token[0] == "end" or (expected is not None and token[1] != expected):
            raise _ParseError(f"expected {expected or 'more'}, got {token[1]!r}")
        self.pos += 1
        return token

    def nested(self, parse: Any) -> Any:
        """`parse()` one level deeper: a bracket, brace, bar or exponent."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} brackets, braces, bars or exponents")
        value = parse()
        self.depth -= 1
        return value

    def expr(self) -> Any:
        value = self.term()
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            value = value + self.term() if op == "+" else value - self.term()
        return value

    def term(self) -> Any:
        value = self.unary()
        while True:
            kind, text = self.peek()
            if text in ("*", "/"):
                self.take()
                value = value * self.unary() if text == "*" else value / self.unary()
            elif kind in ("num", "symbol", "word") or text in ("(", "{", "[") or text == "|" and not self.bars:
                value = value * self.power()
            else:
                return value

    def unary(self) -> Any:
        negative = False
        while self.peek()[1] in ("-", "+"):  # a loop: `----...1` is not nesting
            negative ^= self.take()[1] == "-"
        value = self.power()
        return -value if negative else value

    def power(self) -> Any:
        base = self.postfix()
        if self.peek()[1] == "^":
            self.take()
            exponent = self.nested(self.unary)
            if self.guard_size:
                _check_power(base, exponent)
            return self.sp.Pow(base, exponent)
        return base

    def postfix(self) -> Any:
        value = self.primary()
        while self.peek()[1] == "!":
            self.take()
            if self.guard_size and value.is_number and (not value.is_finite or abs(value) > MAX_FACTORIAL):
                raise _Refused(f"factorial of a number over {MAX_FACTORIAL}")
            value = self.sp.factorial(value)
        return value

    def group(self) -> Any:
        """A `{...}` argument, or a single primary (`\\sqrt x`)."""
        if self.peek()[1] == "{":
            self.take()
            value = self.nested(self.expr)
            self.take("}")
            return value
        return self.primary()

    def subscript(self) -> str:
        """The text of `_1`, `_{12}` or `_n` after a symbol or `\\log`."""
        self.take("_")
        if self.peek()[1] == "{":
            self.take()
            parts = []
            while self.peek()[1] != "}":
                parts.append(self.take()[1])
            self.take("}")
            return "".join(parts)
        return self.take()[1]

    def primary(self) -> Any:
        sp = self.sp
        kind, text = self.take()
        if kind == "num":
            return sp.Rational(text) if "e" not in text.lower() else sp.Rational(_sci_fraction(text))
        if kind == "symbol":
            if self.peek()[1] == "_":
                return sp.Symbol(f"{text}_{self.subscript()}")
            return {"e": sp.E, "i": sp.I}.get(text) or sp.Symbol(text)
        if text in ("(", "{", "["):
            value = self.nested(self.expr)
            self.take({"(": ")", "{": "}", "[": "]"}[text])
            return value
        if text == "|":  # `|3 + 4i|`: the modulus
            self.bars += 1
            value = self.nested(self.expr)
            self.take("|")
            self.bars -= 1
            return sp.Abs(value)
        if text == "frac":
            numerator = self.group()
            return numerator / self.group()
        if text == "binom":
            n = self.group()
            return sp.binomial(n, self.group())
        if text == "sqrt":
            if self.peek()[1] == "[":
                self.take()
                index = self.nested(self.expr)
                self.take("]")
                return sp.root(self.group(), index)
            return sp.sqrt(self.group())
        if text in ("log", "ln") and self.peek()[1] == "_":
            base = _Parser(self.subscript(), self.guard_size).parse()
            return sp.log(self.group() if self.peek()[1] == "{" else self.power(), base)
        if text in _FUNCTIONS:
            function = {
                "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "cot": sp.cot, "sec": sp.sec, "csc": sp.csc,
                "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan, "log": sp.log, "ln": sp.log, "exp": sp.exp,
            }[text]  # fmt: skip
            exponent = None
            if self.peek()[1] == "^":  # `\sin^2 x` is (sin x)^2; `\sin^{-1} x` is arcsin x
                self.take()
                exponent = self.group()
                inverse = {"sin": sp.asin, "cos": sp.acos, "tan": sp.atan}.get(text)
                if exponent == -1 and inverse is not None:
                    function, exponent = inverse, None
            value = function(self.group() if self.peek()[1] == "{" else self.power())
            if exponent is not None:
                if self.guard_size:
                    _check_power(value, exponent)
                value = sp.Pow(value, exponent)
            return value
        if text in _CONSTANTS:
            return sp.pi if text == "pi" else sp.oo
        raise _ParseError(f"unexpected {text!r}")


def _sci_fraction(text: str) -> Any:
    from fractions import Fraction

    mantissa, exponent = re.split("[eE]", text)
    if abs(int(exponent)) > 1000:
        raise _Refused("exponent over 1000")
    return Fraction(mantissa) * Fraction(10) ** int(exponent)


def _check_power(base: Any, exponent: Any) -> None:
    """Refuse a numeric power whose exact value would have more than MAX_POWER_BITS bits."""
    if not (base.is_number and exponent.is_number and exponent.is_real and base.is_finite and exponent.is_finite):
        return
    if base.is_Rational:
        size = max(abs(base.p), abs(base.q))
        if size <= 1:
            return
        bits = math.log2(size)
    else:
        try:
            magnitude = abs(complex(base.evalf(15)))
        except (TypeError, ValueError, OverflowError):
            return
        bits = abs(math.log2(magnitude)) if magnitude > 0 else 0.0
    try:
        too_big = abs(float(exponent)) * bits > MAX_POWER_BITS
    except OverflowError:
        too_big = True
    if too_big:
        raise _Refused(f"a power with more than {MAX_POWER_BITS} bits")


# ------------------------------------------------------------------ structure


def _split_top(text: str, sep: str) -> list[str]:
    """Split at `sep` (a string) outside brackets and braces."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        char = text[i]
        if char == "\\" and text[i + 1 : i + 2] in ("{", "}"):
            depth += 1 if text[i + 1] == "{" else -1
            i += 2
            continue
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return [part.strip() for part in parts]


def _encloses(text: str) -> bool:
    """True when the bracket opening `text` closes at its very end: `(1, 2)`, not `(1)+(2)`."""
    depth = 0
    for i, char in enumerate(text):
        depth += char in "([{"
        depth -= char in ")]}"
        if depth == 0:
            return i == len(text) - 1
    return False


_COMPARISON = re.compile(r"\\(?:leqslant|geqslant|leq|geq|le|ge|lt|gt)(?![A-Za-z])|<=|>=|<|>")
_OPS = {"<": "<", ">": ">", "<=": "<=", ">=": ">=", "\\lt": "<", "\\gt": ">"}
_OPS.update({f"\\{c}": "<=" for c in ("le", "leq", "leqslant")})
_OPS.update({f"\\{c}": ">=" for c in ("ge", "geq", "geqslant")})
_LETTER = re.compile(r"[A-Za-z]|\\(?:" + "|".join(sorted(_GREEK)) + r")")


def _split_comparisons(text: str) -> tuple[list[str], list[str]]:
    """Sides and operators of a chain `a < b <= c` at the top level (one side: no comparison)."""
    sides, ops, start, depth = [], [], 0, 0
    matches = {m.start(): m for m in _COMPARISON.finditer(text)}
    i = 0
    while i < len(text):
        char = text[i]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0 and i in matches:
            sides.append(text[start:i].strip())
            ops.append(_OPS[matches[i].group(0)])
            i = start = matches[i].end()
            continue
        i += 1
    sides.append(text[start:].strip())
    return sides, ops


def _parse(text: str) -> Any:
    return _Parser(text, guard_size=True).parse()


def _interval(low: Any, low_closed: bool, high: Any, high_closed: bool) -> tuple[str, Any]:
    return "seq" + ("[" if low_closed else "(") + ("]" if high_closed else ")"), [("expr", low), ("expr", high)]


def _inequality(sides: list[str], ops: list[str]) -> tuple[str, Any]:
    import sympy

    if len(sides) == 2:
        # Written `x op a`: an interval of the letter; `a op x` is turned around first.
        if _LETTER.fullmatch(sides[1]) and not _LETTER.fullmatch(sides[0]):
            sides, ops = sides[::-1], [{"<": ">", ">": "<", "<=": ">=", ">=": "<="}[ops[0]]]
        if _LETTER.fullmatch(sides[0]):
            bound, op = _parse(sides[1]), ops[0]
            if op in ("<", "<="):
                return _interval(-sympy.oo, False, bound, op == "<=")
            return _interval(bound, op == ">=", sympy.oo, False)
        lhs, rhs = _parse(sides[0]), _parse(sides[1])
        op = ops[0]
        solved = _solve_linear(lhs - rhs, op)
        if solved is not None:
            return solved
        if op in ("<", "<="):  # a < b is b - a > 0
            return "ineq" + op.replace("<", ">"), ("expr", rhs - lhs)
        return "ineq" + op, ("expr", lhs - rhs)
    if len(sides) == 3 and _LETTER.fullmatch(sides[1]):
        low, high = _parse(sides[0]), _parse(sides[2])
        if all(op in ("<", "<=") for op in ops):
            return _interval(low, ops[0] == "<=", high, ops[1] == "<=")
        if all(op in (">", ">=") for op in ops):
            return _interval(high, ops[1] == ">=", low, ops[0] == ">=")
    raise _ParseError("unsupported comparison chain")


def _solve_linear(difference: Any, op: str) -> tuple[str, Any] | None:
    """`difference op 0` solved for its one letter when linear (`-x + 3 < 0` is `x > 3`), as an
    interval; None otherwise."""
    import sympy

    symbols = difference.free_symbols
    if len(symbols) != 1:
        return None
    (x,) = symbols
    poly = sympy.Poly(difference, x) if difference.is_polynomial(x) else None
    if poly is None or poly.degree() != 1:
        return None
    a, b = poly.all_coeffs()
    if not (a.is_number and b.is_number and a.is_real and b.is_real and a != 0):
        return None
    bound = -b / a
    if a < 0:  # dividing by a negative number turns the sign around
        op = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}[op]
    if op in ("<", "<="):
        return _interval(-sympy.oo, False, bound, op == "<=")
    return _interval(bound, op == ">=", sympy.oo, False)


_NOT_EQUAL = re.compile(r"\\neq?(?![A-Za-z])|!=")
_SCALED_MATRIX = re.compile(r"(?P<scalar>[^\\]*?(?:\\frac\{[^{}]*\}\{[^{}]*\})?[^\\]*?)\s*(?P<matrix>\\matrix\{.*\})")


def _structure(text: str, depth: int = 0, equation: bool = False) -> tuple[str, Any]:
    """`(kind, value)` for a normalized answer (module docstring). Kinds: `expr`, `eq` and
    `ineq>`/`ineq>=` (value: `("expr", sympy expression)`), `matrix RxC`, `set`, `list`, `union`
    and `seq()`/`seq[)`/... (value: a list of structures)."""
    if depth > 5:
        raise _Refused("structures nested too deeply")
    text = text.strip()
    if text[:1] in "([" and text[-1:] in ")]" and _encloses(text) and text[1:].lstrip().startswith("\\matrix"):
        text = text[1:-1].strip()  # `\left( \begin{array} ... \end{array} \right)`
    scalar = None
    scaled = _SCALED_MATRIX.fullmatch(text)
    if scaled and scaled["scalar"].strip() and _encloses(scaled["matrix"][7:]):  # `2 \matrix{...}`
        scalar, text = _parse(scaled["scalar"]), scaled["matrix"]
    if text.startswith("\\matrix{") and text.endswith("}") and _encloses(text[7:]):
        rows = [_split_top(row, "&") for row in _split_top(text[8:-1], ";")]
        if len({len(row) for row in rows}) != 1 or len(rows) * len(rows[0]) > MAX_ITEMS:
            raise _ParseError("ragged or oversized matrix")
        cells = [_parse(cell) for row in rows for cell in row]
        return f"matrix {len(rows)}x{len(rows[0])}", [("expr", c if scalar is None else scalar * c) for c in cells]
    union = _split_top(text, "\\cup")
    if len(union) > 1:
        return "union", _items(union, depth)
    if text.startswith("\\{") and text.endswith("\\}"):
        return "set", _items(_split_top(text[2:-2], ","), depth, expand_pm=True)
    parts = _split_top(re.sub(r"\s+(?:or|and)\s+", ", ", text), ",")  # `x = 4 or x = -4`
    if len(parts) > 1 or re.search(r"\\(?:pm|mp)(?![A-Za-z])", text):
        items = _items(parts, depth, expand_pm=True)
        if len(items) > 1:
            return "list", items
    if text[:1] in "([" and text[-1:] in ")]" and _encloses(text):
        parts = _split_top(text[1:-1], ",")
        if len(parts) > 1:
            return "seq" + text[0] + text[-1], _items(parts, depth)
    sides = _split_top(_NOT_EQUAL.sub("\x00", text), "\x00")
    if len(sides) == 2:  # `x \ne 2`: the excluded equation
        return "ne", ("expr", _parse(sides[0]) - _parse(sides[1]))
    sides, ops = _split_comparisons(text)
    if ops:
        return _inequality(sides, ops)
    sides = _split_top(text, "=")
    if len(sides) == 2 and equation:
        return "eq", ("expr", _parse(sides[0]) - _parse(sides[1]))
    if len(sides) == 2:
        if _LETTER.fullmatch(sides[0]):
            return _structure(sides[1], depth + 1)
        if _LETTER.fullmatch(sides[1]) and not re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", sides[0])):
            return _structure(sides[0], depth + 1)  # `5 = x`, but `3 - y = x` stays an equation
        return "eq", ("expr", _parse(sides[0]) - _parse(sides[1]))
    if len(sides) > 2:
        raise _ParseError("more than one '='")
    return "expr", _parse(text)


def _items(parts: list[str], depth: int, expand_pm: bool = False) -> list[tuple[str, Any]]:
    if expand_pm:  # `1 \pm \sqrt{2}` is two items
        expanded = []
        for part in parts:
            m = re.search(r"\\(?:pm|mp)(?![A-Za-z])", part)
            if m:
                expanded += [part[: m.start()] + "+" + part[m.end() :], part[: m.start()] + "-" + part[m.end() :]]
            else:
                expanded.append(part)
        parts = expanded
    if len(parts) > MAX_ITEMS:
        raise _Refused(f"more than {MAX_ITEMS} items")
    return [_structure(part, depth + 1) for part in parts]


# ------------------------------------------------------------------ comparison


def _expressions_equal(a: Any, b: Any, rel_tol: float, abs_tol: float = 0.0) -> bool:
    """Equal expressions: identical, `simplify(a - b) == 0`, or numerically (within `abs_tol`
    when it is set: half a unit of a decimal gold's last place; else within `rel_tol`; else to 40
    digits)."""
    import sympy

    if a == b:
        return True
    if a.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan) or b.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan):
        return False  # oo - oo is nan, not 0: only identical infinities are equal
    if sympy.simplify(a - b) == 0:
        return True
    if a.is_number and b.is_number:  # what simplify missed (nested radicals), numerically
        try:
            if abs_tol and not (a.is_Rational and _terminates(a.q)):  # `2^{-4}` is 0.0625, not 0.06
                return bool(abs(sympy.N(a - b, 30)) < abs_tol)
            if abs_tol:
                return False
            if rel_tol == 0:  # exact answers: 50 digits, so 2^30 and 2^30 + 1 differ
                scale = sympy.N(abs(a) + abs(b), 50)
                return bool(abs(sympy.N(a - b, 50)) <= scale * sympy.Float("1e-40", 50))
            return cmath.isclose(complex(a.evalf(30)), complex(b.evalf(30)), rel_tol=rel_tol)
        except (TypeError, ValueError, OverflowError):
            return False
    return False


def _terminates(denominator: int) -> bool:
    for p in (2, 5):
        while denominator % p == 0:
            denominator //= p
    return denominator == 1


def _proportional(a: Any, b: Any, positive: bool) -> bool:
    """`a == c * b` for a constant c != 0 (c > 0 when `positive`): the same equation or inequality."""
    import sympy

    if a == 0 or b == 0:
        return a == b
    ratio = sympy.simplify(a / b)
    if not ratio.is_number or ratio == 0 or ratio.has(sympy.oo, sympy.zoo, sympy.nan):
        return False
    return bool(ratio.is_positive) if positive else True


def _as_set(structure: tuple[str, Any]) -> Any:
    """A sympy set for a set, an interval or a union of them (`\\{1, 2\\} \\cup [3, 4)`); else None."""
    import sympy

    kind, value = structure
    if kind == "set" and all(k == "expr" for k, _ in value):
        return sympy.FiniteSet(*(v for _, v in value))
    if kind.startswith("seq") and len(kind) == 5 and len(value) == 2 and all(k == "expr" for k, _ in value):
        low, high = value[0][1], value[1][1]
        if not (low.is_extended_real and high.is_extended_real and bool(low < high)):
            return None
        return sympy.Interval(low, high, kind[3] == "(", kind[4] == ")")
    if kind == "union":
        parts = [_as_set(part) for part in value]
        return None if any(p is None for p in parts) else sympy.Union(*parts)
    return None


def _sets_equal(a: tuple[str, Any], b: tuple[str, Any]) -> bool | None:
    """Two set-valued answers compared as sets, a union evaluated; None when either is not one."""
    import sympy

    if "union" not in (a[0], b[0]):
        return None
    x, y = _as_set(a), _as_set(b)
    if x is None or y is None:
        return None
    try:
        return bool(sympy.Complement(x, y) == sympy.S.EmptySet and sympy.Complement(y, x) == sympy.S.EmptySet)
    except (TypeError, ValueError):
        return False


def _matched(xs: list[Any], ys: list[Any], rel_tol: float, abs_tol: float = 0.0) -> bool:
    """Every item of xs equals some item of ys and vice versa (order and repeats ignored)."""
    return all(any(structures_equal(x, y, rel_tol, abs_tol) for y in ys) for x in xs) and all(
        any(structures_equal(x, y, rel_tol, abs_tol) for x in xs) for y in ys
    )


def structures_equal(a: tuple[str, Any], b: tuple[str, Any], rel_tol: float, abs_tol: float = 0.0) -> bool:
    kind_a, value_a = a
    kind_b, value_b = b
    as_sets = _sets_equal(a, b)
    if as_sets is not None:
        return as_sets
    unordered = ("set", "list")
    if kind_a in unordered and kind_b in unordered or kind_a == kind_b == "union":
        return _matched(value_a, value_b, rel_tol, abs_tol)
    if kind_a == "set" and len(value_a) == 1 and kind_b not in unordered:  # `\\{5\\}` and 5
        return structures_equal(value_a[0], b, rel_tol, abs_tol)
    if kind_b == "set" and len(value_b) == 1 and kind_a not in unordered:
        return structures_equal(a, value_b[0], rel_tol, abs_tol)
    if {kind_a, kind_b} == {"list", "seq()"}:  # `1, 2` answers the tuple `(1, 2)`, in order
        kind_a = kind_b = "seq()"
    if kind_a != kind_b:
        return False
    if kind_a == "expr":
        return _expressions_equal(value_a, value_b, rel_tol, abs_tol)
    if kind_a in ("eq", "ne") or kind_a.startswith("ineq"):
        return _proportional(value_a[1], value_b[1], positive=kind_a.startswith("ineq"))
    return len(value_a) == len(value_b) and all(
        structures_equal(x, y, rel_tol, abs_tol) for x, y in zip(value_a, value_b)
    )


def sympy_compare(job: tuple) -> tuple[bool, str | None]:
    """`(equal, note)` for two normalized answers; note says why nothing was compared
    (`refused: ...`, `unparsed: ...`). The job: `(predicted, gold, rel_tol, abs_tol)` (`abs_tol`
    optional). Runs in a watchdog worker."""
    predicted, gold, rel_tol, abs_tol = (*job, 0.0) if len(job) == 3 else job
    towers = (_tower(predicted), _tower(gold)) if "^" in predicted + gold else (None, None)
    if None not in towers:  # `2^{2^{2^{2^{2}}}}` and `2^{65536}`: exactly, without the value
        return towers[0] == towers[1], None
    try:
        a = _structure(predicted)
        b = _structure(gold)
        if (a[0] == "eq") != (b[0] == "eq"):  # `y = 2x + 3` against `2x - y + 3 = 0`
            a, b = _structure(predicted, equation=True), _structure(gold, equation=True)
    except _Refused as exc:
        return False, f"refused: {exc}"
    except (_ParseError, ZeroDivisionError, TypeError, ValueError) as exc:
        return False, f"unparsed: {exc}"
    return structures_equal(a, b, rel_tol, abs_tol), None


# ------------------------------------------------------------------ power towers

MAX_TOWER_EXPONENT_BITS = 64_000  # an exponent is kept as a Python integer up to this size
_TOWER_TOKEN = re.compile(r"\s*(?:(\d+)|(\^)|([{(])|([})]))")


def _tower(text: str) -> tuple[int, int] | None:
    """A power tower of positive integers (`2^{2^{2^{2^{2}}}}`, `4^{32768}`, `65536`) as `(r, E)`
    with value `r^E` and `r` not itself a perfect power, so equal values have equal pairs; computed
    without the value, whose digits may not fit in memory. None for anything else, or when an
    exponent would exceed `MAX_TOWER_EXPONENT_BITS` (`9^{9^{9^{9}}}`: left to the size guards)."""
    tokens, pos = [], 0
    while pos < len(text.rstrip()):
        m = _TOWER_TOKEN.match(text, pos)
        if m is None:
            return None
        tokens.append(m.group(m.lastindex))
        pos = m.end()
    if len(tokens) > 200:
        return None
    closing = {"{": "}", "(": ")"}

    def atom(i: int) -> tuple[list, int] | None:
        """The tower starting at tokens[i] as a list of integer levels (bottom first), and the end."""
        if i >= len(tokens):
            return None
        if tokens[i] in closing:
            inner = atom(i + 1)
            if inner is None or inner[1] >= len(tokens) or tokens[inner[1]] != closing[tokens[i]]:
                return None
            levels, j = inner
            if len(levels) > 1:
                return [("tower", levels)], j + 1
            return levels, j + 1
        if not tokens[i].isdigit():
            return None
        levels, j = [int(tokens[i])], i + 1
        if j < len(tokens) and tokens[j] == "^":
            rest = atom(j + 1)
            if rest is None:
                return None
            levels += rest[0]
            j = rest[1]
        return levels, j

    parsed = atom(0)
    if parsed is None or parsed[1] != len(tokens):
        return None
    levels = parsed[0]
    if len(levels) < 2 and not isinstance(levels[0], int):
        levels = levels[0][1]

    def value(levels: list) -> int | None:
        """The exact integer of a tower small enough to be an exponent, else None."""
        top = 1
        for level in reversed(levels):
            base = value(level[1]) if isinstance(level, tuple) else level
            if base is None:
                return None
            if base > 1 and top * max(base.bit_length() - 1, 1) > MAX_TOWER_EXPONENT_BITS:
                return None
            top = base**top
        return top

    base = value(levels[:1])
    exponent = value(levels[1:]) if len(levels) > 1 else 1
    if base is None or exponent is None or base < 2:
        return None if base is None or exponent is None else (base if exponent else 1, 1)
    root, power = _perfect_power(base)
    return root, power * exponent


def _perfect_power(n: int) -> tuple[int, int]:
    """`(r, k)` with `r^k == n` and the largest such k (`(2, 10)` for 1024)."""
    best = (n, 1)
    for k in range(2, n.bit_length() + 1):
        r = round(n ** (1 / k)) if n.bit_length() < 1000 else _iroot(n, k)
        for c in (r - 1, r, r + 1):
            if c > 1 and c**k == n:
                best = (c, k)
    return best


def _iroot(n: int, k: int) -> int:
    low, high = 1, 1 << (n.bit_length() // k + 1)
    while low < high:
        mid = (low + high + 1) // 2
        if mid**k <= n:
            low = mid
        else:
            high = mid - 1
    return low
