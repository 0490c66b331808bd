"""The `math` verifier: extract the final answer of a completion and compare it with the gold answer.

Extraction (the `extract` option, tried in order, first hit wins): `boxed` (the last complete
`\\boxed{...}`, nested braces allowed), `hash` (`#### N`, GSM8K), `answer_is` ("the answer is ...",
"answer: ..."), `last_number`. The gold answer goes through the same extractors except
`last_number` (a gold `\\frac{3}{4}` must not become `4`), falling back to the whole string, so a
full GSM8K or MATH solution works as gold.

Equivalence, cheapest first:
1. Both sides plain numbers (integers, `1,234`, decimals, `a/b`, `\\frac{a}{b}`, a sign, a
   trailing `%`, units in words): exact fractions compared in this process, or within `rel_tol`.
2. The same normalized string.
3. Otherwise sympy, in a watchdog worker process bounded by `timeout` and `memory_mb`, so that
   `9^9^9^9` times out (reward 0, `info["timeout"]`) instead of hanging the run. The expression is
   parsed by a small recursive-descent parser below (numbers, letters, `+ - * / ^ !`, implicit
   products, `\\frac`, `\\sqrt`, `\\pi`, `\\infty`, Greek letters, trig/log functions; another
   command makes the answer unparsed, hence unequal unless the strings match); nothing is `eval`ed.
   Tuples and intervals compare in order with their brackets, sets and bare lists `1, -2` in any
   order, equations `lhs = rhs` up to sign; a single-letter left side (`x = 5`) is dropped.
   Expressions are equal when `simplify(a - b) == 0`, or, when both are numbers, numerically
   within `rel_tol`.

Percentages: a percent sign is a unit and is stripped, so `50%` equals `50` and does not equal
`0.5`. Accepting both readings would make equivalence intransitive (50 = 50% = 0.5) and leave
`canonical` without meaning; GSM8K and MATH write a percentage's gold as the number before `%`.

`info["canonical"]` is a key equal for answers the fast path knows are equal: for a plain number
its reduced fraction (`"21"` for `21`, `21.0`, `$21` or `21 apples`; `"1/2"` for `0.5`, `2/4` or
`\\frac{1}{2}`; `"50"` for `50%`), otherwise the normalized answer without spaces. Equal keys imply
equal answers, not the reverse (`\\sqrt{4}` and `2` differ in key). maj@k votes on it.
"""

from __future__ import annotations

import cmath
import math
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from grpo_verifiers._watchdog import Watchdog
from grpo_verifiers.base import Verdict, Verifier

DEFAULT_EXTRACT = ("boxed", "hash", "answer_is", "last_number")
MAX_SYMPY_CHARS = 300  # longer answers are compared as strings only


# ---------------------------------------------------------------- extraction

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")


def _extract_boxed(text: str) -> str | None:
    for match in reversed(list(_BOXED.finditer(text))):
        start = match.end()
        if text.startswith("{", start):
            body = _balanced(text, start)
            if body is not None and body.strip():
                return body.strip()
        else:  # `\boxed 5`
            bare = re.match(r"[^\s$]+", text[start:])
            if bare:
                return bare.group(0)
    return None


def _balanced(text: str, start: int) -> str | None:
    """The contents of the brace group opening at `text[start]`, or None when it never closes."""
    depth, i = 0, start
    while i < len(text):
        char = text[i]
        if char == "\\":  # `\{` and `\}` are literal braces
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
        i += 1
    return None


def _extract_hash(text: str) -> str | None:
    found = re.findall(r"####\s*(.*)", text)
    if not found:
        return None
    return found[-1].strip() or None


_ANSWER_IS = re.compile(r"(?i)\banswer\s*(?:is|:)\s*:?\s*(.+?)(?=\.\s|\.$|\n|$)")


def _extract_answer_is(text: str) -> str | None:
    found = _ANSWER_IS.findall(text)
    if not found:
        return None
    return found[-1].strip().strip("*").strip() or None


_LAST_NUMBER = re.compile(r"(?:(?<![\w)}\]])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?%?")


def _extract_last_number(text: str) -> str | None:
    found = _LAST_NUMBER.findall(text)
    return found[-1] if found else None


EXTRACTORS = {
    "boxed": _extract_boxed,
    "hash": _extract_hash,
    "answer_is": _extract_answer_is,
    "last_number": _extract_last_number,
}


def extract_answer(text: str, methods: Sequence[str] = DEFAULT_EXTRACT) -> tuple[str, str] | None:
    """`(method, raw answer)` from the first method that finds one, or None."""
    for method in methods:
        found = EXTRACTORS[method](text)
        if found is not None:
            return method, found
    return None


def extract_gold(answer: str, methods: Sequence[str] = DEFAULT_EXTRACT) -> str:
    """The gold answer inside a full solution (`#### N`, `\\boxed{}`), else the whole string."""
    found = extract_answer(answer, [m for m in methods if m != "last_number"])
    return found[1] if found else answer.strip()


# ------------------------------------------------------------- normalization

_KNOWN_WORDS = {"pi", "sqrt", "sin", "cos", "tan", "log", "ln", "exp", "oo", "inf", "infty"}
_UNITS = re.compile(r"(?<=[\d}).%])((?:\s+[A-Za-z]{2,}\.?)+)(?:\s*\^\s*\{?\d\}?)?$")


def normalize(answer: str) -> str:
    """Strip what does not change an answer's value: `$`, `\\left`, spacing, `\\text{}`, degrees,
    units in words, a trailing period, a single-letter left side `x =`."""
    s = answer.strip().replace("\u2212", "-")
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"^\\[(\[]|\\[)\]]$", "", s.strip())
    s = re.sub(r"\\(?:left|right)\.", "", s)
    s = re.sub(r"\\(?:left|right|[bB]igg?)(?=[^A-Za-z])", "", s)
    s = re.sub(r"\\[,;:! ]|~|\\displaystyle|\\quad", " ", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|°", "", s)
    s = s.replace("\\%", "%")
    s = re.sub(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}", r" \1 ", s)
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)  # \frac34
    s = re.sub(r"\\frac\s*(\{[^{}]*\})\s*(\d)", r"\\frac\1{\2}", s)  # \frac{a}3
    s = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", s)  # \frac3{a}
    s = re.sub(r"\\sqrt\s*(\d)", r"\\sqrt{\1}", s)  # \sqrt2
    s = " ".join(s.split()).rstrip(".").strip()
    lhs = re.fullmatch(r"[A-Za-z]\s*=\s*([^=]+)", s)
    if lhs:
        s = lhs.group(1).strip()
    units = _UNITS.search(s)
    if units and not set(units.group(1).lower().replace(".", "").split()) & _KNOWN_WORDS:
        s = s[: units.start()].strip()
    return s


_NUMBER = re.compile(
    r"""(?P<sign>[-+]?)\s*
    (?:
        \\frac\{\s*(?P<fsign>-?)\s*(?P<fnum>\d+)\s*\}\{\s*(?P<fden>\d+)\s*\}
      | (?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d*)?|\.\d+)(?:\s*/\s*(?P<den>\d+(?:\.\d+)?))?
    )
    \s*(?:%|percent)?""",
    re.X,
)


def parse_number(normalized: str) -> Fraction | None:
    """The exact value of a plain number (`-1,234.5`, `3/4`, `\\frac{3}{4}`, `50%` is 50), or None."""
    if len(normalized) > 100:
        return None
    m = _NUMBER.fullmatch(normalized)
    if m is None:
        return None
    if m["fnum"] is not None:
        numerator, denominator = Fraction(m["fsign"] + m["fnum"]), Fraction(m["fden"])
    else:
        numerator, denominator = Fraction(m["num"].replace(",", "")), Fraction(m["den"] or 1)
    if denominator == 0:
        return None
    value = numerator / denominator
    return -value if m["sign"] == "-" else value


def canonical(normalized: str) -> str:
    """A key equal for answers the fast path knows are equal: `"21"`, `"3/4"`, else the text."""
    value = parse_number(normalized)
    if value is None:
        return "".join(normalized.split())
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def numbers_equal(a: Fraction, b: Fraction, rel_tol: float) -> bool:
    return a == b or math.isclose(float(a), float(b), rel_tol=rel_tol)


# ------------------------------------------------ sympy (runs in a worker process)


class _ParseError(ValueError):
    pass


_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?|\.\d+)|(?P<cmd>\\[A-Za-z]+)|(?P<word>[A-Za-z]+)|(?P<op>\*\*|[-+*/^(){}\[\]!]))"
)
_FUNCTIONS = {"sqrt", "sin", "cos", "tan", "log", "ln", "exp"}
_CONSTANTS = {"pi", "infty", "inf", "oo"}
_GREEK = {"alpha", "beta", "gamma", "delta", "theta", "lambda", "mu", "sigma", "phi", "omega"}


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos, text = [], 0, text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise _ParseError(f"unexpected {text[pos:pos + 10]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "cmd":
            kind, value = "word", value[1:]
            if value in ("cdot", "times"):
                kind, value = "op", "*"
            elif value == "div":
                kind, value = "op", "/"
            elif value in _GREEK:
                kind = "symbol"
            elif value not in _FUNCTIONS | _CONSTANTS | {"frac"}:
                raise _ParseError(f"unsupported \\{value}")
        if kind == "word" and value not in _FUNCTIONS | _CONSTANTS | {"frac"}:
            tokens.extend(("symbol", letter) for letter in value)  # `xy` is x*y
        else:
            tokens.append((kind, "^" if value == "**" else value))
    return tokens


class _Parser:
    """expr := term (+|- term)*; term := unary ((*|/) unary | implicit power)*;
    unary := (-|+) unary | power; power := postfix (^ unary)?; postfix := primary !*"""

    def __init__(self, text: str) -> None:
        import sympy

        self.sp = sympy
        self.tokens = _tokenize(text)
        self.pos = 0

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
            elif kind in ("num", "symbol", "word") or text in ("(", "{", "["):
                value = value * self.power()
            else:
                return value

    def unary(self) -> Any:
        if self.peek()[1] == "-":
            self.take()
            return -self.unary()
        if self.peek()[1] == "+":
            self.take()
            return self.unary()
        return self.power()

    def power(self) -> Any:
        base = self.postfix()
        if self.peek()[1] == "^":
            self.take()
            return self.sp.Pow(base, self.unary())
        return base

    def postfix(self) -> Any:
        value = self.primary()
        while self.peek()[1] == "!":
            self.take()
            value = self.sp.factorial(value)
        return value

    def group(self) -> Any:
        """A `{...}` argument, or a single primary (`\\sqrt x`)."""
        if self.peek()[1] == "{":
            self.take()
            value = self.expr()
            self.take("}")
            return value
        return self.primary()

    def primary(self) -> Any:
        sp = self.sp
        kind, text = self.take()
        if kind == "num":
            return sp.Rational(text)
        if kind == "symbol":
            return sp.Symbol(text)
        if text in ("(", "{", "["):
            value = self.expr()
            self.take({"(": ")", "{": "}", "[": "]"}[text])
            return value
        if text == "frac":
            numerator = self.group()
            return numerator / self.group()
        if text == "sqrt":
            if self.peek()[1] == "[":
                self.take()
                index = self.expr()
                self.take("]")
                return sp.root(self.group(), index)
            return sp.sqrt(self.group())
        if text in _FUNCTIONS:
            function = {"sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "log": sp.log, "ln": sp.log, "exp": sp.exp}[text]
            return function(self.group() if self.peek()[1] == "{" else self.power())
        if text in _CONSTANTS:
            return sp.pi if text == "pi" else sp.oo
        raise _ParseError(f"unexpected {text!r}")


def _split_top(text: str, sep: str) -> list[str]:
    """Split at `sep` outside brackets and braces."""
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
        elif char == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
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


def _structure(text: str) -> tuple[str, list[Any]]:
    """`(kind, expressions)`: kind is `set` (any order), a bracket pair such as `()` or `[)`
    (in order), `eq` (lhs - rhs, up to sign) or `expr`."""
    if text.startswith("\\{") and text.endswith("\\}"):
        return "set", [_Parser(part).parse() for part in _split_top(text[2:-2], ",")]
    parts = _split_top(text, ",")
    if len(parts) > 1:
        return "set", [_Parser(part).parse() for part in parts]
    if text[:1] in "([" and text[-1:] in ")]" and _encloses(text):
        parts = _split_top(text[1:-1], ",")
        if len(parts) > 1:
            return text[0] + text[-1], [_Parser(part).parse() for part in parts]
    sides = _split_top(text, "=")
    if len(sides) == 2:
        return "eq", [_Parser(sides[0]).parse() - _Parser(sides[1]).parse()]
    return "expr", [_Parser(text).parse()]


def _expressions_equal(a: Any, b: Any, rel_tol: float) -> bool:
    import sympy

    if a == b:
        return True
    if sympy.simplify(a - b) == 0:
        return True
    if a.is_number and b.is_number:
        try:
            return cmath.isclose(complex(a.evalf(30)), complex(b.evalf(30)), rel_tol=rel_tol)
        except (TypeError, ValueError, OverflowError):
            return False
    return False


def sympy_equal(job: tuple[str, str, float]) -> bool:
    """Whether two normalized answers are equal by sympy. Runs in a watchdog worker."""
    predicted, gold, rel_tol = job
    try:
        kind_a, exprs_a = _structure(predicted)
        kind_b, exprs_b = _structure(gold)
    except (_ParseError, ZeroDivisionError, TypeError, ValueError):
        return False
    if kind_a != kind_b or len(exprs_a) != len(exprs_b):
        return False
    if kind_a == "eq":
        return _expressions_equal(exprs_a[0], exprs_b[0], rel_tol) or _expressions_equal(exprs_a[0], -exprs_b[0], rel_tol)
    if kind_a == "set":
        unmatched = list(exprs_b)
        for a in exprs_a:
            match = next((i for i, b in enumerate(unmatched) if _expressions_equal(a, b, rel_tol)), None)
            if match is None:
                return False
            unmatched.pop(match)
        return True
    return all(_expressions_equal(a, b, rel_tol) for a, b in zip(exprs_a, exprs_b))


# ------------------------------------------------------------------ verifier


class MathVerifier(Verifier):
    """Reward 1.0 when the completion's final answer equals the gold `answer`, else 0.0.

    extract: extraction methods in order (a list, or a comma-separated string).
    rel_tol: relative tolerance for numbers.
    timeout: seconds per sympy comparison; over it the sample gets 0.0 and `info["timeout"]`.
    workers: sympy worker processes (started on first need).
    memory_mb: address-space limit of each worker.
    """

    name = "math"

    def __init__(
        self,
        *,
        extract: Sequence[str] | str = DEFAULT_EXTRACT,
        rel_tol: float = 1e-6,
        timeout: float = 3.0,
        workers: int = 2,
        memory_mb: int = 2048,
    ) -> None:
        if isinstance(extract, str):
            extract = [m.strip() for m in extract.split(",") if m.strip()]
        unknown = [m for m in extract if m not in EXTRACTORS]
        if unknown or not extract:
            raise ValueError(f"extract must list some of {list(EXTRACTORS)}, got {list(extract)}")
        self.extract = tuple(extract)
        self.rel_tol = float(rel_tol)
        self.timeout = float(timeout)
        self.workers = int(workers)
        self.memory_mb = int(memory_mb)
        if not (self.rel_tol >= 0 and self.timeout > 0 and self.workers >= 1 and self.memory_mb > 0):
            raise ValueError("rel_tol must be >= 0, timeout > 0, workers >= 1 and memory_mb > 0")
        self._watchdog = Watchdog(self.workers, memory_mb=self.memory_mb, preload=("sympy",))  # starts workers on first use

    def verify(self, samples: list[dict[str, Any]]) -> list[Verdict]:
        verdicts: list[Verdict] = []
        jobs: list[tuple[int, tuple[str, str, float]]] = []  # (verdict index, sympy job)
        for sample in samples:
            completion = sample["completion"]
            if sample.get("answer") is None:
                verdicts.append(Verdict(None, info={"reason": "the sample has no gold 'answer'"}))
                continue
            gold = normalize(extract_gold(str(sample["answer"]), self.extract))
            found = extract_answer(str(completion), self.extract)
            if found is None:
                verdicts.append(Verdict(0.0, info={"extracted": None, "canonical": None, "gold": gold}))
                continue
            method, raw = found
            predicted = normalize(raw)
            info = {"extracted": raw, "canonical": canonical(predicted), "gold": gold, "method": method}
            a, b = parse_number(predicted), parse_number(gold)
            if a is not None and b is not None:
                equal = numbers_equal(a, b, self.rel_tol)
            elif predicted == gold:
                equal = True
            elif not predicted or len(predicted) > MAX_SYMPY_CHARS or len(gold) > MAX_SYMPY_CHARS:
                equal = False
            else:
                jobs.append((len(verdicts), (predicted, gold, self.rel_tol)))
                equal = False
            verdicts.append(Verdict(1.0 if equal else 0.0, info=info))
        if jobs:
            outcomes = self._watchdog.map(sympy_equal, [job for _, job in jobs], self.timeout)
            for (index, _), outcome in zip(jobs, outcomes):
                verdict = verdicts[index]
                if outcome.ok:
                    verdict.reward = 1.0 if outcome.value else 0.0
                else:
                    verdict.info["error"] = outcome.error
                    verdict.info["timeout"] = outcome.timed_out
        return verdicts

    def close(self) -> None:
        self._watchdog.close()
