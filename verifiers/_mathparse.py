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
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

MAX_POWER_BITS = 20_000
MAX_FACTORIAL = 2_000
MAX_DEPTH = 100
MAX_ITEMS = 50


class ParseError(ValueError):
    pass


class _Refused(ParseError):
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
            raise ParseError(f"unexpected {text[pos : pos + 10]!r}")
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
                raise ParseError(f"unsupported \\{value}")
        if kind == "word" and value not in _FUNCTIONS | _CONSTANTS | {"frac", "binom"}:
            tokens.extend(("symbol", letter) for letter in value)  # `xy` is x*y
        else:
            tokens.append((kind, "^" if value == "**" else value))
    return tokens


@dataclass(frozen=True)
class Written:
    """An expression as written (`Parser(..., record=True)`): the operation (`num`, `atom`, `add`,
    `sub`, `neg`, `mul`, `div`, `pow`, `root`, `log`, or `call:NAME` for a function, `|x|`, `!` and
    `\\binom`), its operands as written (brackets leave no trace), and its sympy value."""

    op: str
    args: tuple[Written, ...]
    value: Any


class Parser:
    """expr := term (+|- term)*; term := unary ((*|/) unary | implicit power)*;
    unary := (-|+) unary | power; power := postfix (^ unary)?; postfix := primary !*

    `parse()` gives the sympy value; with `record=True`, a `Written` tree whose nodes carry it."""

    def __init__(self, text: str, guard_size: bool = False, record: bool = False) -> None:
        import sympy

        self.sp = sympy
        self.guard_size = guard_size  # refuse huge powers and factorials (the `prm` verifier times out instead)
        self.record = record
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0  # open brackets, braces, bars and exponents: what MAX_DEPTH bounds
        self.bars = 0  # open `|...|`: inside one, a `|` closes it instead of starting a product

    def parse(self) -> Any:
        if not self.tokens:
            raise ParseError("empty")
        expr = self.expr()
        if self.pos != len(self.tokens):
            raise ParseError(f"unexpected {self.tokens[self.pos][1]!r}")
        return expr

    def node(self, op: str, args: tuple, value: Any) -> Any:
        """The value, or in record mode the `Written` node holding it."""
        return Written(op, args, value) if self.record else value

    @staticmethod
    def val(x: Any) -> Any:
        return x.value if isinstance(x, Written) else x

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "")

    def take(self, expected: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token[0] == "end" or (expected is not None and token[1] != expected):
            raise ParseError(f"expected {expected or 'more'}, got {token[1]!r}")
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
            right = self.term()
            a, b = self.val(value), self.val(right)
            value = self.node("add", (value, right), a + b) if op == "+" else self.node("sub", (value, right), a - b)
        return value

    def term(self) -> Any:
        value = self.unary()
        while True:
            kind, text = self.peek()
            if text in ("*", "/"):
                self.take()
                right = self.unary()
                a, b = self.val(value), self.val(right)
                op, result = ("mul", a * b) if text == "*" else ("div", a / b)
                value = self.node(op, (value, right), result)
            elif kind in ("num", "symbol", "word") or text in ("(", "{", "[") or text == "|" and not self.bars:
                right = self.power()
                value = self.node("mul", (value, right), self.val(value) * self.val(right))
            else:
                return value

    def unary(self) -> Any:
        negative = False
        while self.peek()[1] in ("-", "+"):  # a loop: `----...1` is not nesting
            negative ^= self.take()[1] == "-"
        value = self.power()
        return self.node("neg", (value,), -self.val(value)) if negative else value

    def power(self) -> Any:
        base = self.postfix()
        if self.peek()[1] == "^":
            self.take()
            exponent = self.nested(self.unary)
            b, e = self.val(base), self.val(exponent)
            if self.guard_size:
                _check_power(b, e)
            return self.node("pow", (base, exponent), self.sp.Pow(b, e))
        return base

    def postfix(self) -> Any:
        value = self.primary()
        while self.peek()[1] == "!":
            self.take()
            v = self.val(value)
            if self.guard_size and v.is_number and (not v.is_finite or abs(v) > MAX_FACTORIAL):
                raise _Refused(f"factorial of a number over {MAX_FACTORIAL}")
            value = self.node("call:factorial", (value,), self.sp.factorial(v))
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
        sp, val = self.sp, self.val
        kind, text = self.take()
        if kind == "num":
            number = sp.Rational(text) if "e" not in text.lower() else sp.Rational(_sci_fraction(text))
            return self.node("num", (), number)
        if kind == "symbol":
            if self.peek()[1] == "_":
                return self.node("atom", (), sp.Symbol(f"{text}_{self.subscript()}"))
            return self.node("atom", (), {"e": sp.E, "i": sp.I}.get(text) or sp.Symbol(text))
        if text in ("(", "{", "["):
            value = self.nested(self.expr)
            self.take({"(": ")", "{": "}", "[": "]"}[text])
            return value
        if text == "|":  # `|3 + 4i|`: the modulus
            self.bars += 1
            value = self.nested(self.expr)
            self.take("|")
            self.bars -= 1
            return self.node("call:Abs", (value,), sp.Abs(val(value)))
        if text == "frac":
            numerator = self.group()
            denominator = self.group()
            return self.node("div", (numerator, denominator), val(numerator) / val(denominator))
        if text == "binom":
            n = self.group()
            k = self.group()
            return self.node("call:binomial", (n, k), sp.binomial(val(n), val(k)))
        if text == "sqrt":
            if self.peek()[1] == "[":
                self.take()
                index = self.nested(self.expr)
                self.take("]")
                radicand = self.group()
                return self.node("root", (radicand, index), sp.root(val(radicand), val(index)))
            radicand = self.group()
            return self.node("root", (radicand,), sp.sqrt(val(radicand)))
        if text in ("log", "ln") and self.peek()[1] == "_":
            base = Parser(self.subscript(), self.guard_size, self.record).parse()
            argument = self.group() if self.peek()[1] == "{" else self.power()
            return self.node("log", (argument, base), sp.log(val(argument), val(base)))
        if text in _FUNCTIONS:
            name = _FUNCTION_NAMES[text]
            exponent = None
            if self.peek()[1] == "^":  # `\sin^2 x` is (sin x)^2; `\sin^{-1} x` is arcsin x
                self.take()
                exponent = self.group()
                if val(exponent) == -1 and name in _INVERSES:
                    name, exponent = _INVERSES[name], None
            argument = self.group() if self.peek()[1] == "{" else self.power()
            value = self.node(f"call:{name}", (argument,), getattr(sp, name)(val(argument)))
            if exponent is not None:
                if self.guard_size:
                    _check_power(val(value), val(exponent))
                value = self.node("pow", (value, exponent), sp.Pow(val(value), val(exponent)))
            return value
        if text in _CONSTANTS:
            return self.node("atom", (), sp.pi if text == "pi" else sp.oo)
        raise ParseError(f"unexpected {text!r}")


# The sympy function of each function word, and the inverse `\sin^{-1}` names.
_FUNCTION_NAMES = {
    "sin": "sin", "cos": "cos", "tan": "tan", "cot": "cot", "sec": "sec", "csc": "csc", "arcsin": "asin",
    "arccos": "acos", "arctan": "atan", "log": "log", "ln": "log", "exp": "exp", "sqrt": "sqrt",
}  # fmt: skip
_INVERSES = {"sin": "asin", "cos": "acos", "tan": "atan"}


def _sci_fraction(text: str) -> Any:
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


# ------------------------------------------------------------------ stated results


def fraction_work(numerator: Fraction, denominator: Fraction) -> str | None:
    """Why a written quotient of two numbers is not a stated value (`92/2`, `\\frac{22}{24}`,
    `\\frac{1.5}{3}`), or None for a reduced fraction (`\\frac{11}{12}`)."""
    if numerator.denominator != 1 or denominator.denominator != 1:
        return "an unevaluated quotient of decimals"
    if denominator in (1, -1) or math.gcd(int(numerator), int(denominator)) > 1:
        return "an unreduced quotient"
    return None


def _literal(w: Written) -> Fraction | None:
    """The number a literal states: `5`, `-5`, `0.5`; None for anything else."""
    if w.op == "num":
        return Fraction(int(w.value.p), int(w.value.q))
    if w.op == "neg" and w.args[0].op == "num":
        return -Fraction(int(w.args[0].value.p), int(w.args[0].value.q))
    return None


def _is_scale(w: Written) -> bool:
    """`10^{3}`, `10^{-6}`: the scale of a number in scientific notation, a stated form."""
    if w.op != "pow":
        return False
    base, exponent = _literal(w.args[0]), _literal(w.args[1])
    return base == 10 and exponent is not None and exponent.denominator == 1 and exponent != 0


def _terms(w: Written) -> list[Written]:
    return [t for a in w.args for t in _terms(a)] if w.op in ("add", "sub") else [w]


def _factors(w: Written, below: bool = False) -> list[tuple[Written, bool]]:
    """The factors of a product or quotient, each with whether it divides (stands below the bar)."""
    if w.op == "mul":
        return _factors(w.args[0], below) + _factors(w.args[1], below)
    if w.op == "div":
        return _factors(w.args[0], below) + _factors(w.args[1], not below)
    return [(w, below)]


def _product_work(w: Written) -> str | None:
    import sympy

    factors = _factors(w)
    over = [_literal(f) for f, below in factors if not below and _literal(f) is not None]
    under = [_literal(f) for f, below in factors if below and _literal(f) is not None]
    others = [f for f, _ in factors if _literal(f) is None and not _is_scale(f)]
    if len(over) > 1 or len(under) > 1:
        return "an unevaluated product"
    if over == [1] and len(factors) > 1 and not any(below for _, below in factors):
        return "a product by 1"
    if under:
        reason = fraction_work(over[0] if over else Fraction(1), under[0])
        if reason:
            return reason
    # `x \cdot x`, `\sqrt{2}\sqrt{3}`, `\frac{(x-1)(x+1)}{x-1}`: factors that combine or cancel.
    kept = [f for f in sympy.Mul.make_args(w.value) if not f.is_Rational]
    return "an unevaluated product" if len(kept) < len(others) else None


def _node_work(w: Written) -> str | None:
    """Why this node (its operands already judged) still holds work, or None."""
    import sympy

    if w.op in ("add", "sub"):
        written = len(_terms(w))
        return "an unevaluated sum" if len(sympy.Add.make_args(w.value)) < written else None
    if w.op in ("mul", "div"):
        return _product_work(w)
    if w.op in ("pow", "root"):
        base = w.args[0].value
        exponent = w.args[1].value if w.op == "pow" else 1 / sympy.sympify(w.args[1].value if len(w.args) > 1 else 2)
        # `e^{-1}` and `\\sqrt{2}` keep their base and exponent; `2^{10}`, `\\sqrt{8}`, `(x^2)^3` do not.
        if w.value.as_base_exp() == (base, exponent):
            return None
        return "an unevaluated power" if w.op == "pow" else "an unevaluated radical"
    if w.op == "log" or w.op.startswith("call:"):
        if not w.value.is_number:
            return None
        name = w.op.split(":")[-1]
        function = getattr(sympy, name, None)
        if w.value.is_Rational or (w.op != "log" and function is not None and w.value.func is not function):
            return f"an unevaluated {name if w.op != 'call:Abs' else 'absolute value'}"
    return None


def pending_work(w: Written) -> str | None:
    """Why an answer as written still holds work that leads to a simpler value, or None when it
    states its result (docs/design.md, "A reward is for stating the result"): `9 + 37` (a sum of
    numbers), `x + x` (like terms), `92/2` and `\\frac{22}{24}` (quotients left to reduce), `2 \\cdot 3`,
    `2^{10}`, `\\sqrt{8}` (its square factor), `\\binom{8}{4}`, `5!`, `|-5|`, `\\log_2 8`, `\\sin(\\pi/6)`.
    Reordering states a result (`1 + 2x + x^2`, `\\sqrt{2} \\cdot 2`), and so do a reduced fraction,
    an irreducible radical, a complex number `a + bi` and scientific notation `1.5 \\times 10^{3}`."""
    for arg in w.args:
        if w.op == "mul" and _is_scale(arg) and any(_literal(o) is not None for o in w.args if o is not arg):
            continue  # `1.5 \\times 10^{3}`: scientific notation states a number (a bare `10^{3}` does not)
        reason = pending_work(arg)
        if reason:
            return reason
    return _node_work(w)


def _has_symbolic_sum(w: Written) -> bool:
    return (w.op in ("add", "sub") and bool(w.value.free_symbols)) or any(_has_symbolic_sum(a) for a in w.args)


def _expanded(w: Written) -> bool:
    """No product, quotient or power over a sum with letters: `x^2 + 2x + 1`, not `(x+1)^2`."""
    if w.op in ("mul", "div", "pow") and any(_has_symbolic_sum(a) for a in w.args):
        return False
    return all(_expanded(a) for a in w.args)


def _written_factors(w: Written) -> int:
    """How many factors with letters a product is written with, powers counted (`(x+1)^2` is 2)."""
    if w.op == "mul":
        return sum(_written_factors(a) for a in w.args)
    if w.op == "pow" and w.args[1].value.is_Integer and w.args[1].value > 0:
        return int(w.args[1].value) * _written_factors(w.args[0])
    return 1 if w.value.free_symbols else 0


def _irreducible_factors(value: Any) -> int:
    import sympy

    return sum(multiplicity for _, multiplicity in sympy.factor_list(value)[1])


def form_work(predicted: Written, gold: Written) -> str | None:
    """Where the gold is a polynomial written in a form, the form the task asks for: an expanded
    gold (`x^2 + 2x + 1`) wants an expanded answer, a factored one (`(x+1)(x-1)`) a factored one."""
    symbols = gold.value.free_symbols
    if not symbols or not gold.value.is_polynomial(*symbols):
        return None
    if _expanded(gold):
        return None if _expanded(predicted) else "not expanded as the answer is"
    count = _written_factors(gold)
    if count >= 2 and count == _irreducible_factors(gold.value):
        return None if _written_factors(predicted) == _irreducible_factors(predicted.value) else "not factored"
    return None


class Recorder:
    """A `parse` for `_structure` that keeps each expression as written, to judge its form after."""

    def __init__(self) -> None:
        self.written: list[Written] = []

    def __call__(self, text: str) -> Any:
        tree = Parser(text, guard_size=True, record=True).parse()
        self.written.append(tree)
        return tree.value

    def work(self) -> str | None:
        return next((reason for reason in map(pending_work, self.written) if reason), None)


# ------------------------------------------------------------------ structure


def split_top(text: str, sep: str) -> list[str]:
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
    return Parser(text, guard_size=True).parse()


def _interval(low: Any, low_closed: bool, high: Any, high_closed: bool) -> tuple[str, Any]:
    return "seq" + ("[" if low_closed else "(") + ("]" if high_closed else ")"), [("expr", low), ("expr", high)]


def _inequality(sides: list[str], ops: list[str], parse: Any = _parse) -> tuple[str, Any]:
    import sympy

    if len(sides) == 2:
        # Written `x op a`: an interval of the letter; `a op x` is turned around first.
        if _LETTER.fullmatch(sides[1]) and not _LETTER.fullmatch(sides[0]):
            sides, ops = sides[::-1], [{"<": ">", ">": "<", "<=": ">=", ">=": "<="}[ops[0]]]
        if _LETTER.fullmatch(sides[0]):
            bound, op = parse(sides[1]), ops[0]
            if op in ("<", "<="):
                return _interval(-sympy.oo, False, bound, op == "<=")
            return _interval(bound, op == ">=", sympy.oo, False)
        lhs, rhs = parse(sides[0]), parse(sides[1])
        op = ops[0]
        solved = _solve_linear(lhs - rhs, op)
        if solved is not None:
            return solved
        if op in ("<", "<="):  # a < b is b - a > 0
            return "ineq" + op.replace("<", ">"), ("expr", rhs - lhs)
        return "ineq" + op, ("expr", lhs - rhs)
    if len(sides) == 3 and _LETTER.fullmatch(sides[1]):
        low, high = parse(sides[0]), parse(sides[2])
        if all(op in ("<", "<=") for op in ops):
            return _interval(low, ops[0] == "<=", high, ops[1] == "<=")
        if all(op in (">", ">=") for op in ops):
            return _interval(high, ops[1] == ">=", low, ops[0] == ">=")
    raise ParseError("unsupported comparison chain")


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


def _structure(text: str, depth: int = 0, equation: bool = False, parse: Any = _parse) -> tuple[str, Any]:
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
        scalar, text = parse(scaled["scalar"]), scaled["matrix"]
    if text.startswith("\\matrix{") and text.endswith("}") and _encloses(text[7:]):
        rows = [split_top(row, "&") for row in split_top(text[8:-1], ";")]
        if len({len(row) for row in rows}) != 1 or len(rows) * len(rows[0]) > MAX_ITEMS:
            raise ParseError("ragged or oversized matrix")
        cells = [parse(cell) for row in rows for cell in row]
        return f"matrix {len(rows)}x{len(rows[0])}", [("expr", c if scalar is None else scalar * c) for c in cells]
    union = split_top(text, "\\cup")
    if len(union) > 1:
        return "union", _items(union, depth, parse=parse)
    if text.startswith("\\{") and text.endswith("\\}"):
        return "set", _items(split_top(text[2:-2], ","), depth, expand_pm=True, parse=parse)
    parts = split_top(re.sub(r"\s+(?:or|and)\s+", ", ", text), ",")  # `x = 4 or x = -4`
    if len(parts) > 1 or re.search(r"\\(?:pm|mp)(?![A-Za-z])", text):
        items = _items(parts, depth, expand_pm=True, parse=parse)
        if len(items) > 1:
            return "list", items
    if text[:1] in "([" and text[-1:] in ")]" and _encloses(text):
        parts = split_top(text[1:-1], ",")
        if len(parts) > 1:
            return "seq" + text[0] + text[-1], _items(parts, depth, parse=parse)
    sides = split_top(_NOT_EQUAL.sub("\x00", text), "\x00")
    if len(sides) == 2:  # `x \ne 2`: the excluded equation
        return "ne", ("expr", parse(sides[0]) - parse(sides[1]))
    sides, ops = _split_comparisons(text)
    if ops:
        return _inequality(sides, ops, parse)
    sides = split_top(text, "=")
    if len(sides) == 2 and equation:
        return "eq", ("expr", parse(sides[0]) - parse(sides[1]))
    if len(sides) == 2:
        if _LETTER.fullmatch(sides[0]):
            return _structure(sides[1], depth + 1, parse=parse)
        if _LETTER.fullmatch(sides[1]) and not re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", sides[0])):
            return _structure(sides[0], depth + 1, parse=parse)  # `5 = x`, but `3 - y = x` stays an equation
        return "eq", ("expr", parse(sides[0]) - parse(sides[1]))
    if len(sides) > 2:
        raise ParseError("more than one '='")
    return "expr", parse(text)


def _items(parts: list[str], depth: int, expand_pm: bool = False, parse: Any = _parse) -> list[tuple[str, Any]]:
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
    return [_structure(part, depth + 1, parse=parse) for part in parts]


# ------------------------------------------------------------------ comparison


def expressions_equal(a: Any, b: Any, rel_tol: float, abs_tol: float = 0.0) -> bool:
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
        return expressions_equal(value_a, value_b, rel_tol, abs_tol)
    if kind_a in ("eq", "ne") or kind_a.startswith("ineq"):
        return _proportional(value_a[1], value_b[1], positive=kind_a.startswith("ineq"))
    return len(value_a) == len(value_b) and all(
        structures_equal(x, y, rel_tol, abs_tol) for x, y in zip(value_a, value_b)
    )


def sympy_compare(job: tuple) -> tuple[bool, str | None]:
    """`(equal, note)` for two normalized answers; note says why nothing was compared
    (`refused: ...`, `unparsed: ...`) or why an equal value earns nothing (`unevaluated: ...`: the
    prediction still holds work that the gold does not, `pending_work` and `form_work`). The job:
    `(predicted, gold, rel_tol, abs_tol)` (`abs_tol` optional). Runs in a watchdog worker."""
    predicted, gold, rel_tol, abs_tol = (*job, 0.0) if len(job) == 3 else job
    towers = (_tower(predicted), _tower(gold)) if "^" in predicted + gold else (None, None)
    if None not in towers:  # `2^{2^{2^{2^{2}}}}` and `2^{65536}`: exactly, without the value
        if "^" in predicted and "^" not in gold:  # `2^{5}` for 32 is a power left to evaluate
            return False, "unevaluated: an unevaluated power"
        return towers[0] == towers[1], None
    ours, theirs = Recorder(), Recorder()
    try:
        a = _structure(predicted, parse=ours)
        b = _structure(gold, parse=theirs)
        if (a[0] == "eq") != (b[0] == "eq"):  # `y = 2x + 3` against `2x - y + 3 = 0`
            a, b = _structure(predicted, equation=True), _structure(gold, equation=True)
    except _Refused as exc:
        return False, f"refused: {exc}"
    except (ParseError, ZeroDivisionError, TypeError, ValueError) as exc:
        return False, f"unparsed: {exc}"
    equal = structures_equal(a, b, rel_tol, abs_tol)
    if not equal or theirs.work():  # a gold that holds work itself (`2^{100}`) asks for that form
        return equal, None
    reason = ours.work()
    if reason is None and a[0] == b[0] == "expr" and len(ours.written) == len(theirs.written) == 1:
        reason = form_work(ours.written[0], theirs.written[0])
    return (False, f"unevaluated: {reason}") if reason else (True, None)


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
