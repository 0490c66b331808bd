"""The `math` verifier: extract the final answer of a completion and compare it with the gold answer.

Extraction (the `extract` option, tried in order, first hit wins): `boxed` (the last complete
`\\boxed{...}` or `\\fbox{...}`, nested braces allowed; boxes joined only by "and", "or", commas
and `$` before it are one list with it: `$\\boxed{2}$ and $\\boxed{3}$` answers `\\{2, 3\\}`), `hash`
(`#### N`, GSM8K), `answer_is` ("the answer is ...", "answer: ...", "the correct option is ..."),
`bare` (the whole completion when it is nothing but an answer: one short line of math, or one or
two words), `dollars` (the last `$...$`, `$$...$$`, `\\(...\\)` or `\\[...\\]` span that is math, not
two prices; of `$a = b$` the right side), `last_number`.

Strict and flexible extraction. `extract=strict`, the default, is `boxed, hash, answer_is, bare`:
only an answer the completion marks as its answer, or a completion that is only an answer, counts,
so a policy cannot be rewarded for a number it merely wrote down (restating the problem's numbers
until one matches). `extract=flexible` adds the unmarked fallbacks `dollars` and `last_number`, and
those never accept a number that the sample's problem (`prompt`, else `question` or `problem`)
writes: "Natalia sold 48 clips in April" is not an answer of 48 (`info["restated"]`). A marked
answer is the model's claim and counts even when the problem has the number. Every verdict of a
strict verifier carries `info["flexible"]`, the reward flexible extraction would give, and
`grpo eval` reports both accuracies, as lm-eval-harness reports strict-match and flexible-extract.
The gold goes through the flexible extractors except `bare` and `last_number` (a gold
`\\frac{3}{4}` must not become `4`), falling back to the whole string, so a full GSM8K or MATH
solution and a bare LaTeX answer both work as gold.

An answer is cleaned (`clean`: `$`, `\\left`, spacing, `\\text{}`, `\\dfrac`, Unicode math (`−`, `×`,
`÷`, `≤`, `≥`, `≠`, `√`, `π`, `°`), thousands separators (`1,234`, `1 234`, thin spaces, MATH's
`1,\\!234`), repeating decimals (`0.1\\overline{6}` is `\\frac{1}{6}`), matrices to
`\\matrix{a & b ; c & d}`, and prose around the value: `The answer is 6`, `the largest $n$ is 34`,
`7, not 8`) and split (`parse_answer`) into a lone-letter left side (`x` of `x = 5`), a value, and
a trailing unit (`cm`, `\\text{ kg}`, `square units`, `mph` = `miles per hour`, `km/h`, a degree mark,
`radians`, a base subscript: `204_5` is digits `204` in unit `base 5`); numbers as words (`twelve`,
`one hundred and five`, `none`) and word multipliers (`2.5 million`, `3 dozen`) become digits.
Then, cheapest first:
1. Gold a choice letter (`C`, `(C)`, `\\text{(C)}`): the prediction must name that one letter
   (`(C)`, `c`, `(C) 24`, `C. 24`); a hedge (`C or D`, `C, D`) is wrong.
2. Both sides name a different letter (`x = 3` vs `y = 3`) or a different unit (`7 g` vs `7 kg`,
   `30 rad` vs `30 deg`, `204_6` vs `204_5`): not equal. A side without letter or unit matches
   either (`x = 3` and `5 cm` equal `3` and `5`).
3. Equal keys (`canonical` below): equal.
4. Both values plain numbers (integers, `1,234` (but `1,2` and `1, 234` are lists), decimals,
   `a/b`, `\\frac{a}{b}`, mixed numbers `2 1/2` and `2\\frac{1}{2}`, `1.5e3`, `1.5\\times 10^{3}`, a
   sign, a trailing `%`): compared as exact fractions in this process by the precision rule below.
5. A text answer (`Tuesday`, `\\text{no solution}`) on either side: only equal keys were equal
   (case, spaces and punctuation aside: `North-East!` is `north east`).
6. Otherwise sympy (`_mathparse`: expressions, `|3+4i|`, equations up to a constant factor
   (`y = 2x + 3` is `2x - y + 3 = 0`), inequalities (`-x < -3` is `x > 3`), chains, `\\ne`/`!=`,
   intervals, sets and their unions evaluated, a singleton set and its element, tuples, matrices and
   their scalar multiples, `\\pm`, complex numbers, power towers compared exactly), in a watchdog
   worker process bounded by `timeout` and `memory_mb`, so that `9^9^9^9` is refused or times out
   (reward 0, `info["refused"]` or `info["timeout"]`) instead of hanging the run. Nothing is `eval`ed.
A reward is for stating the result (docs/design.md): an answer equal in value that still holds
work earns 0 with `info["unevaluated"]` (`9 + 37` or `92/2` for 46, `\\sqrt{8}` for `2\\sqrt{2}`,
`\\binom{8}{4}` for 70; `_mathparse.pending_work`), as does one not in the form a polynomial gold
is written in (`(x+1)^2` for `x^2 + 2x + 1`; `_mathparse.form_work`). A chain `a = b = c` is
judged by its last member, or by the one before a final name (`stated_member`).
Answers longer than `MAX_ANSWER_CHARS` are refused, and only the last `MAX_SEARCH_CHARS` of a
completion are searched, so that a megabyte costs a fraction of a second; text that is not valid
Unicode (bytes that are not UTF-8, lone surrogates) is read with the bad characters replaced
(`info["sanitized"]`).

The precision rule (numbers). Integers and fractions are exact: `7.000000001` is not `7`,
`0.3333333` is not `\\frac{1}{3}`, `1000000007` is not `1000000008`. A decimal the model wrote is
taken at its word and must equal the gold's value: `12345.66` is not `12345.67`, `0.3333` is not
`0.333`, `0.50` is `0.5`. A gold written as a decimal is a rounding, so a value with no finite
decimal that rounds to it at the gold's written precision equals it: `\\frac{1}{3}` is `0.33`,
`\\frac{\\sqrt{2}}{2}` is `0.71`, `\\frac{2}{3}` is not `0.66`. A tolerance (`rel_tol`, 1e-6) is kept only
for a decimal against an irrational value: `3.14159265` is `\\pi`, `1.414` is not `\\sqrt{2}`.

Percentages: a percent sign is a unit and is stripped, so `50%` equals `50` and does not equal
`0.5`. Accepting both readings would make equivalence intransitive (50 = 50% = 0.5) and leave
`canonical` without meaning; GSM8K and MATH write a percentage's gold as the number before `%`.

`info["canonical"]` is a key equal for answers that are judged alike against any gold: the letter
side and the unit when present (`x=5`, `21 apple`), then for a plain number its reduced fraction
(`"21"` for `21`, `21.0` or `$21`; `"1/2"` for `0.5` or `\\frac{1}{2}`; `"50"` for `50%`; a
fraction left to reduce keeps its form, `"2/4"`),
for a choice its letter (`C` for `(C)`), for text its lower-cased letters, otherwise the cleaned
answer without spaces. Equal keys imply equal answers, not the reverse (`\\sqrt{4}` and `2` differ
in key). maj@k votes on it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from grpo_verifiers._mathparse import ParseError, Parser, expressions_equal, fraction_work, split_top, sympy_compare
from grpo_verifiers._watchdog import Watchdog
from grpo_verifiers.base import Verdict, Verifier

__all__ = [
    "DEFAULT_EXTRACT",
    "EXTRACTORS",
    "FLEXIBLE_EXTRACT",
    "STRICT_EXTRACT",
    "MAX_ANSWER_CHARS",
    "MAX_SYMPY_CHARS",
    "Answer",
    "MathVerifier",
    "ParseError",  # the parser is shared with the `prm` verifier
    "Parser",
    "expressions_equal",
    "canonical",
    "choice_letter",
    "clean",
    "decide",
    "extract_answer",
    "extract_gold",
    "long_decimal_of",
    "normalize",
    "number_work",
    "parse_answer",
    "parse_number",
    "stated_member",
]

STRICT_EXTRACT = ("boxed", "hash", "answer_is", "bare")
FLEXIBLE_EXTRACT = (*STRICT_EXTRACT, "dollars", "last_number")
DEFAULT_EXTRACT = STRICT_EXTRACT
UNMARKED = frozenset({"dollars", "last_number"})  # never accept a number the problem itself wrote
EXTRACT_PRESETS = {"strict": STRICT_EXTRACT, "flexible": FLEXIBLE_EXTRACT}
PROMPT_FIELDS = ("prompt", "question", "problem")  # where a sample carries the problem's text
MAX_ANSWER_CHARS = 1000  # a longer extracted answer (or gold) is refused: reward 0, never parsed
MAX_SYMPY_CHARS = 300  # longer answers are compared by key only
MAX_BOXES = 20  # `\boxed` occurrences tried from the end (bounds the work on hostile text)
MAX_SEARCH_CHARS = 200_000  # only the end of a longer completion is searched for its answer


# ---------------------------------------------------------------- extraction

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_BRACE = re.compile(r"\\[{}]|[{}]")


def _balanced(text: str, start: int) -> str | None:
    """The contents of the brace group opening at `text[start]`; None when the text ends before it
    closes; the first `MAX_ANSWER_CHARS + 1` characters when it runs longer (refused later)."""
    depth, stop = 0, min(len(text), start + MAX_ANSWER_CHARS + 2)
    for m in _BRACE.finditer(text, start, stop):
        token = m.group()
        if len(token) == 2:  # `\{` and `\}` are literal braces
            continue
        depth += 1 if token == "{" else -1
        if depth == 0:
            return text[start + 1 : m.start()]
    return text[start + 1 : stop] if stop < len(text) else None


# What may stand between two boxes that state one answer together: `\boxed{2}$ and $\boxed{3}`.
_BOX_JOINER = re.compile(r"[\s$,;]*(?:(?:and|or|,)[\s$]*(?:[A-Za-z]\s*=\s*)?)?")


def _box_at(text: str, match: re.Match) -> tuple[str, int] | None:
    """`(body, end)` of the box `match` opens, or None (empty, or never closed)."""
    start = match.end()
    if text.startswith("{", start):
        body = _balanced(text, start)
        if body is not None and body.strip():
            return body.strip(), start + len(body) + 2
        return None
    bare = re.match(r"[^\s$]+", text[start : start + MAX_ANSWER_CHARS + 1])  # `\boxed 5`
    return (bare.group(0), start + bare.end()) if bare else None


def _extract_boxed(text: str) -> str | None:
    """The last box; boxes joined only by `and`, `or`, commas and `$` before it (`$\\boxed{2}$ and
    $\\boxed{3}$`, `x = \\boxed{-1}$ or $x = \\boxed{4}`) form one list with it: the answer is them all."""
    matches = list(_BOXED.finditer(text))[-MAX_BOXES:]
    for i in range(len(matches) - 1, -1, -1):
        found = _box_at(text, matches[i])
        if found is None:
            continue
        bodies, start = [found[0]], matches[i].start()
        for previous in matches[:i][::-1]:
            earlier = _box_at(text, previous)
            if earlier is None or not _BOX_JOINER.fullmatch(text, earlier[1], start):
                break
            bodies.insert(0, earlier[0])
            start = previous.start()
        return ", ".join(bodies)
    return None


def _extract_hash(text: str) -> str | None:
    found = re.findall(r"####\s*(.*)", text)
    if not found:
        return None
    return found[-1].strip() or None


_ANSWER_IS = re.compile(r"(?i)\b(?:answer|option|choice)\s*(?:is|:)\s*:?\s*")
_UNTIL_SENTENCE_END = re.compile(r".+?(?=\.\s|\.$|\n|$)")


def _extract_answer_is(text: str) -> str | None:
    markers = list(_ANSWER_IS.finditer(text))  # the last one: `Final Answer: The final answer is 3`
    if not markers:
        return None
    found = _UNTIL_SENTENCE_END.match(text, markers[-1].end())
    return (found.group(0).strip().strip("*").strip() or None) if found else None


_BARE_LIMIT = 100


def _extract_bare(text: str) -> str | None:
    """The whole completion when it is nothing but an answer: one line of at most `_BARE_LIMIT`
    characters that is math (no word of two letters outside `\\text{}` and commands) or a short
    text answer (one or two words: `Tuesday`, `no solution`). Restating the problem cannot pass."""
    answer = text.strip()
    if not answer or len(answer) > _BARE_LIMIT or "\n" in answer or _BOXED.search(answer):
        return None
    if re.fullmatch(r"[A-Za-z'-]+(?: [A-Za-z'-]+)?[.!]?", answer):
        return answer
    if re.search(r"[A-Za-z]{2,}", re.sub(r"\\text\{[^{}]*\}|\\[A-Za-z]+", "", answer)):
        return None
    return answer


_MATH_DELIMITER = re.compile(r"\\\$|\$\$|\$|\\\(|\\\)|\\\[|\\\]")
_CLOSER = {"$$": "$$", "$": "$", "\\(": "\\)", "\\[": "\\]"}
_PROSE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}\s+[A-Za-z]{3,}(?![A-Za-z])")


def _extract_dollars(text: str) -> str | None:
    """The last math span; None when a number follows it in plain text (that number is the final
    statement: `$x$ is the number of apples, so there are 5`)."""
    spans, opened, body_start = [], "", 0
    for m in _MATH_DELIMITER.finditer(text):  # one linear pass: delimiters pair in order
        token = m.group()
        if token == "\\$":
            continue
        if not opened:
            if token in _CLOSER:
                opened, body_start = token, m.end()
        elif token == _CLOSER[opened]:
            spans.append((text[body_start : m.start()], m.end()))
            opened = ""
    for body, end in reversed(spans):
        if body[:1].isdigit() and body[-1:].isspace():  # `$5 and $`: two prices, not math
            continue
        content = body.strip()
        if not content or _PROSE.search(re.sub(r"\\text\{[^{}]*\}", "", content)):
            continue
        if re.search(r"\d", text[end:]):
            return None
        sides = content.split("=")
        if len(sides) > 1 and sides[-1].strip() and not re.fullmatch(r"\s*[A-Za-z]\s*", sides[0]):
            return sides[-1].strip()  # `$2 + 3 = 5$` states 5
        return content
    return None


_LAST_NUMBER = re.compile(
    r"(?:(?<![\w)}\]])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+(?![A-Za-z]))?(?:/\d+)?%?"
)
# A word that scales the number before it: `3.5 million` is 3500000, never 3.5.
_SCALE_WORD = re.compile(r"\s+(?:hundred|thousand|million|billion|trillion|dozen)(?![A-Za-z])")


def _extract_last_number(text: str) -> str | None:
    found = list(_LAST_NUMBER.finditer(text))
    if not found:
        return None
    scale = _SCALE_WORD.match(text, found[-1].end())
    return found[-1].group() + (scale.group() if scale else "")


EXTRACTORS = {
    "boxed": _extract_boxed,
    "hash": _extract_hash,
    "answer_is": _extract_answer_is,
    "bare": _extract_bare,
    "dollars": _extract_dollars,
    "last_number": _extract_last_number,
}


def extract_answer(text: str, methods: Sequence[str] = DEFAULT_EXTRACT) -> tuple[str, str] | None:
    """`(method, raw answer)` from the first method that finds one, or None."""
    for method in methods:
        found = EXTRACTORS[method](text)
        if found is not None:
            return method, found
    return None


def extract_gold(answer: str, methods: Sequence[str] = FLEXIBLE_EXTRACT) -> str:
    """The gold answer inside a full solution (`#### N`, `\\boxed{}`), else the whole string."""
    found = extract_answer(answer, [m for m in methods if m not in ("last_number", "bare")])
    return found[1] if found else answer.strip()


def _as_text(value: Any) -> tuple[str, bool]:
    """`(text, sanitized)`: bytes decoded as UTF-8 and lone surrogates replaced, so that no later
    step (regexes, pickling to a worker, writing JSON) meets invalid text."""
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
        return text, "\ufffd" in text
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8"), True
    return text, False


# ---------------------------------------------------------------- cleaning

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u221e": "\\infty ", "\u03c0": "\\pi ", "\u00b1": "\\pm ", "\u00d7": "\\times ",
    "\u22c5": "\\cdot ", "\u00b7": "\\cdot ", "\u2264": "\\le ", "\u2265": "\\ge ", "\u221a": "\\sqrt ",
    "\u00f7": "\\div ", "\u2260": "\\ne ", "\u2248": "\\approx ", "\u2217": "*", "\u2044": "/",
}  # fmt: skip
_THIN_SPACES = "\u2009\u202f\u00a0\u2007\u200a"
_MATRIX = re.compile(r"\\begin\{([pbB]?matrix|smallmatrix|array)\}(?:\{[^{}]*\})?(.*?)\\end\{\1\}", re.DOTALL)
_TEXT_COMMANDS = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mathsf|mbox|operatorname|boldsymbol)"
    r"\s*\{([^{}]*)\}"
)


def clean(answer: str) -> str:
    """Strip what does not change an answer's value: `$`, `\\left`, spacing, `\\text{}`, degrees,
    `\\dfrac`, a trailing period; matrices become `\\matrix{a & b ; c & d}`."""
    s = answer.strip()
    for char, replacement in _UNICODE.items():
        s = s.replace(char, replacement)
    s = re.sub(rf"(?<=\d)[{_THIN_SPACES}](?=\d{{3}}(?!\d))", "", s)  # `1 234` with a thin space
    s = re.sub(rf"[{_THIN_SPACES}]", " ", s)
    s = re.sub(r"(?<=\d),\\!\s*(?=\d{3}(?!\d))", "", s)  # MATH's `1,\!234`
    s = re.sub(r"\\(?:lvert|rvert|vert|mid)(?![A-Za-z])|\\\|", "|", s)
    s = _REPEATING.sub(_repeating, s)
    s = _MATRIX.sub(lambda m: "\\matrix{" + m.group(2).replace("\\\\", ";").replace("\\hline", "") + "}", s)
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"\\[()\[\]]", " ", s)  # `\(...\)` and `\[...\]` delimiters
    s = re.sub(r"\\(?:varnothing|emptyset)|^\\\{\s*\\\}$", r"\\emptyset", s)
    s = s.replace("\\mathbb{R}", "(-\\infty, \\infty)")
    s = re.sub(r"\\(?:left|right)\.", "", s)
    s = re.sub(r"\\(?:left|right|[bB]igg?)(?=[^A-Za-z])", "", s)
    s = s.replace("{,}", ",")
    s = re.sub(r"(?<=\d)\\[,!]\s*(?=\d{3}(?!\d))", "", s)  # `1\,234` is a thousands separator
    s = re.sub(r"\\[,;:! ]|~|\\displaystyle|\\quad|\\qquad", " ", s)
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    # A degree mark is a unit at the end (`30^\circ` is 30 degrees, never 30 radians), else dropped.
    s = re.sub(r"(?:\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|°)(?=\s*$)", " degrees", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|°", "", s)
    s = s.replace("\\%", "%")
    s = re.sub(r"^[A-Za-z]\s*\\in\s*", "", s)  # `x \in [2, 5]`
    if "\\approx" in s:  # `\frac{1}{6} \approx 0.167` states 1/6; `x \approx 0.167` states 0.167
        parts = s.split("\\approx")
        left = parts[0].strip()
        s = parts[-1] if not left or re.fullmatch(r"[A-Za-z]\s*=?", left) else left
    for _ in range(2):  # `\text{\textbf{C}}`
        s = _TEXT_COMMANDS.sub(r" \1 ", s)
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)  # \frac34
    s = re.sub(r"\\frac\s*(\{[^{}]*\})\s*(\d)", r"\\frac\1{\2}", s)  # \frac{a}3
    s = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", s)  # \frac3{a}
    s = re.sub(r"\\sqrt\s*(\d)", r"\\sqrt{\1}", s)  # \sqrt2
    s = re.sub(r"(?i)(?<![A-Za-z\\])(?:infinity|inf)(?![A-Za-z])", r"\\infty", s)
    s = " ".join(s.split()).strip("*").rstrip(".,;").strip()
    s = _SPACE_THOUSANDS.sub(lambda m: m.group(0).replace(" ", ""), s)  # `1 234 567`
    return _without_prose(s)


_REPEATING = re.compile(r"(\d*)\.(\d*)\\overline\s*\{\s*(\d+)\s*\}")
_SPACE_THOUSANDS = re.compile(r"(?<![\d.,/])\d{1,3}(?: \d{3})+(?![\d/]|\s*/|\s*\\frac)")
# `The answer is 6`, `the largest n is 34` inside a box or after a marker: the part after the verb.
_LEAD_IN = re.compile(r"(?i)^(?P<head>.*?[A-Za-z]{3,}.*?)\s+(?:is|are|equals|was|would be|will be)\s+(?P<tail>.+)$")
# `7, not 8` and `7 (not 8)`: what is denied is not the answer.
_DENIAL = re.compile(r"(?i)^(?P<head>.*?\d.*?)\s*(?:,|;|\()?\s+\(?(?:not|rather than|instead of)\s+[^=]{1,30}$")


def _repeating(m: re.Match) -> str:
    """`0.1\\overline{6}` as the exact fraction `\\frac{1}{6}`."""
    whole, fixed, period = m.group(1) or "0", m.group(2), m.group(3)
    scale = 10 ** len(fixed)
    value = Fraction(int(whole)) + (Fraction(int(fixed or "0")) + Fraction(int(period), 10 ** len(period) - 1)) / scale
    return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


def _without_prose(s: str) -> str:
    denial = _DENIAL.match(s)
    if denial:
        s = denial.group("head").rstrip(" ,;(")
    lead = _LEAD_IN.match(s)
    if lead and not re.search(r"[=<>]", lead.group("head")):
        s = lead.group("tail").strip().rstrip(".,;").strip()
    return s


# ---------------------------------------------------------------- answer parts

_KNOWN_WORDS = {"pi", "sqrt", "sin", "cos", "tan", "log", "ln", "exp", "oo", "inf", "infty", "or", "and"}
# Words after a number that change its value: never read as a unit (`10 million` is not 10).
_NOT_UNITS = _KNOWN_WORDS | {"percent", "hundred", "thousand", "million", "billion", "trillion", "dozen"}
_UNIT_LETTERS = "mgshLKNJWV"  # one-letter units read as units only after a number (`5 m`)
_UNITS = re.compile(
    rf"(?:(?<=[\d}}).%])|(?<=\\pi))((?:\s+(?:[A-Za-z]{{2,}}\.?(?:/[A-Za-z]+)?|[{_UNIT_LETTERS}](?:/[A-Za-z]+)?"
    rf"(?![A-Za-z/])))+)(?:\s*\^\s*\{{?(\d)\}}?)?$"
)
_UNIT_ALIASES = {
    "centimeter": "cm", "centimetre": "cm", "meter": "m", "metre": "m", "kilometer": "km", "kilometre": "km",
    "millimeter": "mm", "millimetre": "mm", "gram": "g", "kilogram": "kg", "milligram": "mg", "second": "s",
    "sec": "s", "minute": "min", "hour": "h", "hr": "h", "inche": "in", "inch": "in", "foot": "ft", "feet": "ft",
    "mile": "mi", "liter": "l", "litre": "l", "milliliter": "ml", "millilitre": "ml", "unit": "",
    "degree": "deg", "radian": "rad", "mph": "mi/h", "kph": "km/h", "kmh": "km/h", "mps": "m/s",
}  # fmt: skip


def _unit_key(words: str, power: str | None) -> str:
    """`cm^2` for `square centimeters`, `sq cm`, `cm^2`; `mi/h` for `mph` and `miles per hour`; `""`
    for generic `units`. Two answers with different keys are never equal (`rad` vs `deg`)."""
    numerator: list[str] = []
    denominator: list[str] = []
    target, exponent = numerator, power
    for word in words.lower().replace(".", "").replace("/", " per ").split():
        if word in ("square", "sq"):
            exponent = "2"
            continue
        if word == "cubic":
            exponent = "3"
            continue
        if word == "per":
            target = denominator
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        alias = _UNIT_ALIASES.get(word, word)
        if "/" in alias:  # `mph`
            top, bottom = alias.split("/")
            target.append(top)
            denominator.append(bottom)
        elif alias:
            target.append(alias)
    name = " ".join(numerator)
    if name and exponent and exponent != "1":
        name = f"{name}^{exponent}"
    return f"{name or '1'}/{' '.join(denominator)}" if denominator else name


_SMALL_NUMBERS = {
    word: n
    for n, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
        " seventeen eighteen nineteen".split()
    )
}
_TENS = {w: 10 * n for n, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_SCALES = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12, "dozen": 12}
_SCALED_NUMBER = re.compile(r"([-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)\s*(" + "|".join(_SCALES) + ")")


def _spelled_number(value: str) -> str | None:
    """`twelve`, `one hundred and five`, `none`, `2.5 million`, `3 dozen` as digits, else None."""
    text = value.strip().lower()
    if text == "none":  # "how many are left? none"
        return "0"
    scaled = _SCALED_NUMBER.fullmatch(text)
    if scaled:
        number = Fraction(scaled.group(1).replace(",", "")) * _SCALES[scaled.group(2)]
        return str(number.numerator) if number.denominator == 1 else f"{number.numerator}/{number.denominator}"
    words = [w for w in re.split(r"[\s-]+", text) if w and w != "and"]
    if not words or len(words) > 12:
        return None
    total = current = 0
    for word in words:
        if word in _SMALL_NUMBERS:
            current += _SMALL_NUMBERS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        elif word in _SCALES and word != "dozen":
            total += max(current, 1) * _SCALES[word]
            current = 0
        elif word == "dozen":
            current = max(current, 1) * 12
        else:
            return None
    return str(total + current)


_BASE_SUBSCRIPT = re.compile(r"(\d[0-9A-Za-z]*)_\{?\s*(\d{1,2})\s*\}?")


@dataclass(frozen=True)
class Answer:
    """A cleaned answer split in parts: `x = 5 cm` is letter `x`, value `5`, unit `cm`."""

    letter: str | None
    value: str
    unit: str


_NAME = r"[A-Za-z](?:_\{?\w+\}?)?(?:\([A-Za-z]\))?"  # what may stand left of `=` in an answer: x, a_n, f(x)
_COMPARISON = re.compile(r"[<>!]|\\(?:le|ge|ne|lt|gt)")
_LIST = re.compile(r",|;|\s(?:or|and)\s|\\(?:pm|mp)")  # `x = 4 or x = -4` is a list, not a chain


def stated_member(cleaned: str, gold_is_equation: bool) -> str:
    """The member of a chain that states the answer: the last one (`9 + 37 = 46` states 46,
    `y = 4 + 3 = 7` states `y = 7`), or the one before a final name (`9 + 37 = N` states `9 + 37`,
    which holds work and earns nothing). An answer with one `=` is kept whole against an equation
    gold (`y = 2x + 3`) or when its left side is a name (`x = 5`); comparisons are left alone."""
    if "=" not in cleaned or _COMPARISON.search(cleaned) or _LIST.search(cleaned):
        return cleaned
    members = split_top(cleaned, "=")
    if len(members) < 2 or not all(members) or (len(members) == 2 and gold_is_equation):
        return cleaned
    if len(members) == 2 and re.fullmatch(_NAME, members[0]):
        return cleaned
    at = len(members) - 2 if re.fullmatch(_NAME, members[-1]) else len(members) - 1
    if at > 0 and re.fullmatch(_NAME, members[0]):  # `y = 4 + 3 = 7`: the name goes with the value
        return f"{members[0]} = {members[at]}"
    return members[at]


def parse_answer(cleaned: str) -> Answer:
    letter, value = None, cleaned
    lhs = re.fullmatch(rf"({_NAME})\s*=\s*([^=]+)", value)
    if lhs:
        letter, value = lhs.group(1), lhs.group(2).strip()
    unit = ""
    base = _BASE_SUBSCRIPT.fullmatch(value)
    if base:  # `204_5`: the digits, with the base as a unit (a side without one matches either)
        return Answer(letter, base.group(1), f"base {base.group(2)}")
    m = _UNITS.search(value)
    if m and not set(m.group(1).lower().replace(".", "").split()) & _NOT_UNITS:
        head = value[: m.start()].strip()
        if not re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", head)):  # a number, not `2x cm`
            value, unit = head, _unit_key(m.group(1), m.group(2))
    spelled = _spelled_number(value)
    return Answer(letter, spelled if spelled is not None else value, unit)


def normalize(answer: str) -> str:
    """The value of an answer: cleaned, without a lone-letter left side (`x =`) or a unit."""
    return parse_answer(clean(answer)).value


_NUMBER = re.compile(
    r"""(?P<sign>[-+]?)\s*
    (?:
        (?P<whole>\d+)\s*(?:\\frac\{\s*(?P<mnum>\d+)\s*\}\{\s*(?P<mden>\d+)\s*\}|\s(?P<mnum2>\d+)\s*/\s*(?P<mden2>\d+))
      | \\frac\{\s*(?P<fsign>-?)\s*(?P<fnum>\d+(?:\.\d+)?)\s*\}\{\s*(?P<fden>\d+(?:\.\d+)?)\s*\}
      | (?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d*)?|\.\d+)
        (?:
            \s*/\s*(?P<den>\d+(?:\.\d+)?)
          | [eE](?P<exp>[-+]?\d+)
          | \s*(?:\\times|\\cdot|\*)\s*10\s*\^\s*(?:\{\s*(?P<bexp>[-+]?\d+)\s*\}|(?P<dexp>\d))
        )?
    )
    \s*(?:%|percent)?""",
    re.VERBOSE,
)


def parse_number(value: str) -> Fraction | None:
    """The exact value of a plain number (`-1,234.5`, `3/4`, `\\frac{3}{4}`, `2 1/2`, `1.5e3`,
    `50%` is 50), or None."""
    if len(value) > 100:
        return None
    m = _NUMBER.fullmatch(value)
    if m is None:
        return None
    if m["whole"] is not None:  # a mixed number's fraction is proper: `2\frac{3}{2}` is a product
        numerator, denominator = int(m["mnum"] or m["mnum2"]), int(m["mden"] or m["mden2"])
        if not 0 < numerator < denominator:
            return None
        number = int(m["whole"]) + Fraction(numerator, denominator)
    elif m["fnum"] is not None:
        if Fraction(m["fden"]) == 0:
            return None
        number = Fraction(m["fsign"] + m["fnum"]) / Fraction(m["fden"])
    else:
        number = Fraction(m["num"].replace(",", ""))
        if m["den"] is not None:
            if Fraction(m["den"]) == 0:
                return None
            number /= Fraction(m["den"])
        exponent = m["exp"] or m["bexp"] or m["dexp"]
        if exponent is not None:
            if abs(int(exponent)) > 400:  # left to sympy's size guard
                return None
            number *= Fraction(10) ** int(exponent)
    return -number if m["sign"] == "-" else number


def half_unit(value: str) -> Fraction | None:
    """Half a unit in the last place of a plain decimal (`0.005` for `12345.67`, `5` for `1.23e3`),
    the precision a decimal gold is written with; None for integers, fractions and expressions."""
    m = _NUMBER.fullmatch(value) if len(value) <= 100 else None
    if m is None or m["num"] is None or "." not in m["num"] or m["den"] is not None:
        return None
    places = len(m["num"].split(".")[1])
    exponent = int(m["exp"] or m["bexp"] or m["dexp"] or 0)
    if abs(exponent) > 400:
        return None
    return Fraction(1, 2) * Fraction(10) ** (exponent - places)


def written_as_decimal(value: str) -> bool:
    """An integer or a decimal as written (`12`, `0.3333`, `1.5e3`), not a fraction (`1/3`, `\\frac{2}{3}`)."""
    m = _NUMBER.fullmatch(value) if len(value) <= 100 else None
    return m is not None and m["num"] is not None and m["den"] is None


def numbers_equal(predicted: Fraction, gold: Fraction, half: Fraction | None, predicted_decimal: bool) -> bool:
    """The precision rule: equal values; or, for a decimal gold (`half` is half a unit in its last
    place) and a prediction that is not itself a written decimal (`1/3`, `0.\\overline{3}`), the
    prediction rounded at the gold's precision (`1/3` is `0.33`). A decimal the model wrote is taken
    at its word: `0.3333` is not `0.333`, `12345.66` is not `12345.67`, `7.000000001` is not `7`."""
    if predicted == gold:
        return True
    if half is None or predicted_decimal or terminates(predicted):  # `1/16` is 0.0625, not 0.06
        return False
    return abs(predicted - gold) < half


def number_work(value: str) -> str | None:
    """Why a plain number as written still holds work (`92/2`, `\\frac{22}{24}`, `46/1`), or None."""
    m = _NUMBER.fullmatch(value) if len(value) <= 100 else None
    if m is None or (m["den"] is None and m["fden"] is None):
        return None
    numerator = Fraction((m["num"] or m["fnum"]).replace(",", ""))
    return fraction_work(numerator, Fraction(m["den"] or m["fden"]))


def long_decimal_of(value: str, number: Fraction, gold: Fraction) -> bool:
    """A decimal of at least 10 significant digits that is a repeating fraction rounded to the digits
    it writes (`0.142857142857143` for `\\frac{1}{7}`) is that fraction; `0.1428571` is not."""
    m = _NUMBER.fullmatch(value) if len(value) <= 100 else None
    if m is None or m["num"] is None or m["den"] is not None or terminates(gold):
        return False
    half = half_unit(value)
    digits = re.sub(r"\D", "", m["num"]).lstrip("0")
    return half is not None and len(digits) >= 10 and abs(number - gold) <= half


def terminates(number: Fraction) -> bool:
    """Has a finite decimal: the reduced denominator has no prime factor but 2 and 5."""
    d = number.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


_DECIMAL = re.compile(r"\d?\.\d|\d[eE][-+]?\d")


def approximate(value: str) -> bool:
    """Written with decimals (`3.14159`, `1.5\\sqrt{2}`): compared within `rel_tol` when it meets
    an irrational value in sympy. Two plain numbers never get there: the precision rule decides them."""
    return bool(_DECIMAL.search(value))


_CHOICE = re.compile(r"\(([A-Ja-j])\)|([A-Ja-j])\)?")
_CHOICE_WITH_TEXT = re.compile(r"(?:\(([A-Ja-j])\)|([A-J])[.:)])\s*(.+)")
_ANOTHER_CHOICE = re.compile(r"(?<![A-Za-z])\(?[A-J]\)?(?![A-Za-z])")


def choice_letter(value: str, strict: bool = True) -> str | None:
    """The letter a multiple-choice answer names: strict, only `C` and `(C)`; otherwise also `c`,
    `C)`, `option C` and `(C) 24`, but never two letters (`C or D`, `(C) or (D)`)."""
    if strict:
        m = re.fullmatch(r"\(([A-J])\)|([A-J])", value)
        return (m.group(1) or m.group(2)) if m else None
    value = re.sub(r"(?i)^(?:option|choice)\s*", "", value).strip()
    m = _CHOICE.fullmatch(value)
    if m:
        return (m.group(1) or m.group(2)).upper()
    m = _CHOICE_WITH_TEXT.fullmatch(value)
    if m and not _ANOTHER_CHOICE.search(m.group(3)):
        return (m.group(1) or m.group(2)).upper()
    return None


def _is_text(value: str) -> bool:
    """Words (`Tuesday`, `no solution!`), not a product of letters (`xy`) or a function (`sin x`)."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z' .,!?;:-]*", value):
        return False
    return any(len(word) >= 3 and word.lower() not in _KNOWN_WORDS for word in re.findall(r"[A-Za-z]+", value))


def _value_key(value: str) -> str:
    letter = choice_letter(value)
    if letter:
        return letter
    number = parse_number(value)
    if number is not None and number_work(value) is None:  # `92/2` holds work: it votes apart from 46
        return str(number.numerator) if number.denominator == 1 else f"{number.numerator}/{number.denominator}"
    if _is_text(value):  # case, spacing and punctuation aside: `North-East!` is `northeast`
        return re.sub(r"[^A-Za-z]", "", value).casefold()
    return re.sub(r"(?<![\w.])\s+|\s+(?![\w.])", "", value)  # keep the space of `2 3` (not 23)


def _key(answer: Answer) -> str:
    letter = f"{answer.letter}=" if answer.letter else ""
    unit = f" {answer.unit}" if answer.unit else ""
    return letter + _value_key(answer.value) + unit


def canonical(text: str) -> str:
    """The voting key of an answer (module docstring): `"21"`, `"3/4"`, `"x=5"`, `"7 kg"`, `"C"`."""
    return _key(parse_answer(clean(text)))


def _sympy_text(answer: Answer, other: Answer) -> str:
    """The text sympy reads; a lone-letter side is kept when the other answer is an equation
    (`y = 2x + 3` against `2x - y + 3 = 0`)."""
    number = parse_number(answer.value)
    text = _value_key(answer.value) if number is not None else answer.value.replace("%", "")
    if answer.letter and "=" in other.value and not other.letter:
        return f"{answer.letter} = {text}"
    return text


def decide(predicted: Answer, gold: Answer, rel_tol: float) -> bool | tuple[str, str, float, float]:
    """True or False when decided in this process, else the job for `sympy_compare`: the two texts,
    the relative tolerance (`rel_tol` when a decimal meets an irrational value, else 0) and the
    absolute one (half a unit of a decimal gold's last place, else 0)."""
    gold_choice = choice_letter(gold.value) if not (gold.letter or gold.unit) else None
    if gold_choice:
        return choice_letter(predicted.value, strict=False) == gold_choice
    if predicted.letter and gold.letter and predicted.letter != gold.letter:
        return False
    if predicted.unit and gold.unit and predicted.unit != gold.unit:
        return False
    if _value_key(predicted.value) == _value_key(gold.value):
        return True
    a, b = parse_number(predicted.value), parse_number(gold.value)
    half = half_unit(gold.value)
    if a is not None and b is not None:
        return numbers_equal(a, b, half, written_as_decimal(predicted.value)) or long_decimal_of(predicted.value, a, b)
    if _is_text(predicted.value) or _is_text(gold.value):
        return False
    if not predicted.value or max(len(predicted.value), len(gold.value)) > MAX_SYMPY_CHARS:
        return False
    approx = approximate(predicted.value) or approximate(gold.value)
    return (
        _sympy_text(predicted, gold),
        _sympy_text(gold, predicted),
        rel_tol if approx and half is None else 0.0,
        float(half) if half is not None else 0.0,
    )


# ------------------------------------------------------------------ verifier


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _prompt_numbers(sample: dict[str, Any]) -> set[Fraction]:
    """The numbers written in the sample's problem (`prompt`, else `question` or `problem`)."""
    for field in PROMPT_FIELDS:
        if isinstance(sample.get(field), str):
            text = sample[field][-MAX_SEARCH_CHARS:].replace("\u2212", "-")
            numbers = (parse_number(n.replace(",", "")) for n in _LAST_NUMBER.findall(text))
            return {n for n in numbers if n is not None}
    return set()


def _restates(value: str, numbers: set[Fraction]) -> bool:
    number = parse_number(normalize(value))
    return number is not None and number in numbers


class MathVerifier(Verifier):
    """Reward 1.0 when the completion's final answer equals the gold `answer`, else 0.0.

    extract: extraction methods in order (a list, or a string separated by commas, spaces or `|`),
        some of boxed, hash, answer_is, bare, dollars, last_number; or `strict` (the default:
        boxed, hash, answer_is, bare) or `flexible` (strict, then dollars, last_number).
    rel_tol: relative tolerance for a decimal compared with an irrational value (`3.14159265` and
        `\\pi`); integers and fractions are exact and decimal golds are compared at their precision.
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
        if isinstance(extract, str):  # `|` too: `--verifier math:extract=boxed|hash` (commas split options there)
            extract = [m for m in re.split(r"[\s,|]+", extract) if m]
        extract = [name for m in extract for name in EXTRACT_PRESETS.get(m, (m,))]
        unknown = [m for m in extract if m not in EXTRACTORS]
        if unknown or not extract:
            raise ValueError(
                f"extract must be strict, flexible or list some of {list(EXTRACTORS)}, got {list(extract)}"
            )
        self.extract = tuple(extract)
        # What a flexible extraction would add (`info["flexible"]`, the second score `grpo eval` reports).
        self._flexible = tuple(m for m in FLEXIBLE_EXTRACT if m not in self.extract)
        self.rel_tol = float(rel_tol)
        self.timeout = float(timeout)
        self.workers = int(workers)
        self.memory_mb = int(memory_mb)
        if not (0 <= self.rel_tol < math.inf and self.timeout > 0 and self.workers >= 1 and self.memory_mb > 0):
            raise ValueError("rel_tol must be >= 0, timeout > 0, workers >= 1 and memory_mb > 0")
        self._watchdog = Watchdog(
            self.workers, memory_mb=self.memory_mb, preload=("sympy",)
        )  # starts workers on first use

    def verify(self, samples: list[dict[str, Any]]) -> list[Verdict]:
        verdicts: list[Verdict] = []
        jobs: list[tuple[int, str, tuple]] = []  # (verdict index, "reward" or "flexible", sympy job)
        for sample in samples:
            if sample.get("answer") is None:
                verdicts.append(Verdict(None, info={"reason": "the sample has no gold 'answer'"}))
                continue
            numbers = _prompt_numbers(sample)
            verdict, job = self._judge(sample["completion"], sample["answer"], self.extract, numbers)
            if job is not None:
                jobs.append((len(verdicts), "reward", job))
            if self._flexible:
                if verdict.info["extracted"] is None:  # strict found nothing: what would flexible find?
                    other, job = self._judge(sample["completion"], sample["answer"], self._flexible, numbers)
                    verdict.info["flexible"] = other.reward
                    if "restated" in other.info:
                        verdict.info["restated"] = other.info["restated"]
                    if job is not None:
                        jobs.append((len(verdicts), "flexible", job))
                else:
                    verdict.info["flexible"] = verdict.reward
            verdicts.append(verdict)
        if jobs:
            outcomes = self._watchdog.map(sympy_compare, [job for _, _, job in jobs], self.timeout)
            for (index, target, _), outcome in zip(jobs, outcomes):
                verdict = verdicts[index]
                info = verdict.info
                if outcome.ok:
                    equal, note = outcome.value
                    if target == "reward":
                        verdict.reward = 1.0 if equal else 0.0
                        if "flexible" in info:
                            info["flexible"] = verdict.reward
                    else:
                        info["flexible"] = 1.0 if equal else 0.0
                    if note and note.startswith("refused") and target == "reward":
                        info["refused"] = note
                    if note and note.startswith(("unevaluated: ", "unparsed: ")) and target == "reward":
                        kind, reason = note.split(": ", 1)
                        info[kind] = reason
                elif target == "reward":
                    info["error"] = outcome.error
                    info["timeout"] = outcome.timed_out
        return verdicts

    def _judge(
        self, completion: Any, answer: Any, methods: Sequence[str], numbers: set[Fraction]
    ) -> tuple[Verdict, tuple | None]:
        """The verdict when decided here, else a zero verdict and the sympy job that decides it."""
        text, sanitized = _as_text(completion)
        # The end holds the answer, and this bounds the work on megabytes; U+2212 is a minus sign
        # for every extractor (`last_number` reads ASCII).
        text = text[-MAX_SEARCH_CHARS:].replace("\u2212", "-")
        gold_text, _ = _as_text(answer)
        gold_raw = extract_gold(gold_text, FLEXIBLE_EXTRACT)
        found = extract_answer(text, methods)
        info: dict[str, Any] = {"extracted": None, "canonical": None, "gold": _short(gold_raw)}
        if sanitized:
            info["sanitized"] = True
        if found is None:
            return Verdict(0.0, info=info), None
        method, raw = found
        info.update(extracted=_short(raw), method=method)
        if len(raw) > MAX_ANSWER_CHARS or len(gold_raw) > MAX_ANSWER_CHARS:
            info["refused"] = f"answer or gold longer than {MAX_ANSWER_CHARS} characters"
            return Verdict(0.0, info=info), None
        if method in UNMARKED and _restates(raw, numbers):
            info["restated"] = (
                f"the {method} answer {_short(raw, 40)} restates the problem: an unmarked number never counts"
            )
            return Verdict(0.0, info=info), None
        gold_clean = clean(gold_raw)
        predicted, gold = parse_answer(stated_member(clean(raw), "=" in gold_clean)), parse_answer(gold_clean)
        info.update(canonical=_key(predicted), gold=_key(gold))
        work = number_work(predicted.value)
        if work and not number_work(gold.value):
            info["unevaluated"] = work
            return Verdict(0.0, info=info), None
        decided = decide(predicted, gold, self.rel_tol)
        if isinstance(decided, tuple):
            return Verdict(0.0, info=info), decided
        return Verdict(1.0 if decided else 0.0, info=info), None

    def close(self) -> None:
        self._watchdog.close()
