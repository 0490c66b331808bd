"""The `code` verifier: code extraction, the four test formats, partial credit, options, the rlimit
fallback, and `grpo score --verifier code` end to end."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import warnings

import pytest
from grpo_verifiers import code as code_module
from grpo_verifiers.code import CodeVerifier, extract_code, outputs_match, parse_tests

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")

ADD = "def add(a, b):\n    return a + b\n"
ADD_WRONG = "def add(a, b):\n    return a * b\n"  # right for (2, 2) and (0, 0) only
ASSERTS = "assert add(1, 2) == 3\nassert add(2, 2) == 4\nassert add(0, 0) == 0\nassert add(-1, 5) == 4\n"
UNITTEST = """import unittest
class TestAdd(unittest.TestCase):
    def test_small(self):
        self.assertEqual(add(1, 2), 3)
    def test_square(self):
        self.assertEqual(add(2, 2), 4)
    def test_raises(self):
        with self.assertRaises(TypeError):
            add(1, None)
"""
PYTEST = """import pytest
def test_small():
    assert add(1, 2) == 3
def test_raises():
    with pytest.raises(TypeError):
        add(1, None)
class TestMore:
    def test_neg(self):
        assert add(-1, 5) == 4
"""
CHECK = {
    "check": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(2, 2) == 4\n",
    "entry_point": "add",
}
IO = [{"input": "1 2\n", "output": "3\n"}, {"input": "2 2\n", "output": "4"}, {"input": "-1 5", "output": "4\n"}]
IO_ADD = "a, b = map(int, input().split())\nprint(a + b)\n"
IO_MUL = "a, b = map(int, input().split())\nprint(a * b)\n"


def fenced(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}```\nIt adds."


@pytest.fixture(scope="module")
def verifier():
    v = CodeVerifier(timeout=2, total_timeout=6, memory_mb=512, workers=2)
    yield v
    v.close()


def rewards(verifier, samples):
    return [v.reward for v in verifier.verify(samples)]


# ------------------------------------------------------------ pure parts


def test_extract_code_last_first_all_bare():
    text = "a\n```python\nx = 1\n```\nb\n```py\nx = 2\n```\n"
    assert extract_code(text) == ("x = 2\n", "fenced")
    assert extract_code(text, "first") == ("x = 1\n", "fenced")
    assert extract_code(text, "all") == ("x = 1\n\nx = 2\n", "fenced")
    assert extract_code("```\ny = 3\n```") == ("y = 3\n", "fenced")  # an untagged fence
    assert extract_code("```python\nz = 4\n") == ("z = 4\n", "fenced")  # cut off by the length limit
    assert extract_code("def f(): pass") == ("def f(): pass", "bare")
    assert extract_code("def f(): pass", bare=False) is None


def test_parse_tests_shapes_and_counts():
    assert parse_tests({"tests": ASSERTS}).names == ("assert:1", "assert:2", "assert:3", "assert:4")
    assert parse_tests({"tests": UNITTEST}).names == (
        "case:TestAdd.test_small",
        "case:TestAdd.test_square",
        "case:TestAdd.test_raises",
    )
    assert parse_tests({"tests": PYTEST}).names == ("func:test_small", "func:test_raises", "class:TestMore.test_neg")
    check = parse_tests({"tests": CHECK})
    assert (check.kind, check.names, check.entry_point) == ("check", ("check",), "add")  # one test
    humaneval = parse_tests({"tests": CHECK["check"], "entry_point": "add"})  # HumanEval's own shape
    assert (humaneval.kind, humaneval.names) == ("check", ("check",))
    io = parse_tests({"tests": IO})
    assert (io.kind, io.pairs[1]) == ("io", ("2 2\n", "4"))
    apps = parse_tests({"tests": json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]})})
    assert apps.pairs == (("1 2\n", "3\n"),)
    assert parse_tests({"tests": [{"stdin": "x", "stdout": "y"}]}).pairs == (("x", "y"),)
    mbpp = parse_tests({"tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]})
    assert (mbpp.kind, mbpp.names) == ("code", ("assert:1", "assert:2"))
    assert parse_tests({"prompt": "p"}) is None


@pytest.mark.parametrize(
    ("tests", "words"),
    [
        ("assert add(1,", "SyntaxError"),
        ("x = 1\n", "no test"),
        ({"check": "def check(candidate):\n    assert candidate(1)\n"}, "entry_point"),
        (42, "list of {'input', 'output'}"),
    ],
)
def test_parse_tests_rejects_malformed_with_row_and_field(tests, words):
    with pytest.raises(ValueError) as err:
        parse_tests({"id": "p7", "tests": tests})
    assert "row 'p7'" in str(err.value) and "'tests'" in str(err.value) and words in str(err.value)


def test_only_tests_that_read_the_solution_count():
    # `assert True` (HumanEval's debugging lines) and asserts on the test's own values are setup
    tests = "assert True, 'good for debugging'\nX = 3\nassert X == 3\nassert len([1]) == 1\n" + ASSERTS
    assert parse_tests({"tests": tests}).names == ("assert:5", "assert:6", "assert:7", "assert:8")
    # a name bound from the solution carries it: `r = add(1, 2)` then `assert r == 3` tests add
    derived = "r = add(1, 2)\nassert r == 3\ndef helper(x):\n    return add(x, x)\nassert helper(2) == 4\n"
    assert parse_tests({"tests": derived}).names == ("assert:2", "assert:5")
    unit = """import unittest
class T(unittest.TestCase):
    def setUp(self):
        self.c = Counter(1)
    def test_bump(self):
        self.assertEqual(self.c.bump(), 2)
    def test_nothing(self):
        self.assertTrue(True)
def test_own():
    assert sorted([2, 1]) == [1, 2]
def test_add():
    assert add(1, 1) == 2
"""
    # test_nothing shares setUp, which builds the solution's Counter: it counts (a static rule)
    assert parse_tests({"tests": unit}).names == ("case:T.test_bump", "case:T.test_nothing", "func:test_add")
    with pytest.raises(ValueError, match="no test of the solution"):
        parse_tests({"tests": "assert True\nassert 1 + 1 == 2\n"})


# Test files that import the solution, as KodCode's pytest files do (`solution.py` + `from solution
# import f`), in every import form; and MBPP's bare asserts.
IMPORT_FORMS = {
    "from": "from solution import add\n\ndef test_add():\n    assert add(1, 2) == 3\n    assert add(-1, 5) == 4\n",
    "from-as": "from solution import add as f\n\ndef test_add():\n    assert f(1, 2) == 3\n\ndef test_neg():\n"
    "    assert f(-1, 5) == 4\n",
    "module": "import solution\n\ndef test_add():\n    assert solution.add(1, 2) == 3\n",
    "module-as": "import solution as s\n\ndef test_add():\n    assert s.add(1, 2) == 3\n",
    "star": "from solution import *\n\ndef test_add():\n    assert add(1, 2) == 3\n",
    "unittest": "import unittest\nfrom solution import add\n\nclass TestAdd(unittest.TestCase):\n"
    "    def test_small(self):\n        self.assertEqual(add(1, 2), 3)\n",
    "mbpp": ["assert add(1, 2) == 3", "assert add(-1, 5) == 4"],
}


@pytest.mark.parametrize("form", sorted(IMPORT_FORMS))
def test_a_test_that_imports_the_solution_tests_it(form):
    # each names its tests: none is "setup" for reading a name it imported
    assert parse_tests({"tests": IMPORT_FORMS[form]}).names


def test_a_test_importing_another_module_is_not_a_test_of_the_solution():
    with pytest.raises(ValueError, match="no test of the solution"):
        parse_tests({"tests": "from helpers import add\nassert True\n"})


@needs_bwrap
def test_every_import_form_passes_right_code_and_fails_wrong_code(verifier):
    forms = sorted(IMPORT_FORMS)
    samples = [{"completion": fenced(code), "tests": IMPORT_FORMS[f]} for f in forms for code in (ADD, ADD_WRONG)]
    got = dict(zip([(f, c) for f in forms for c in ("right", "wrong")], rewards(verifier, samples)))
    assert all(got[(f, "right")] == 1.0 for f in forms), got
    assert all(got[(f, "wrong")] < 1.0 for f in forms), got
    assert got[("module", "wrong")] == 0.0 and got[("from-as", "wrong")] == 0.0  # a*b: (1,2) and (-1,5) fail


@needs_bwrap
def test_a_test_importing_a_name_the_solution_lacks_fails_with_a_reason(verifier):
    tests = "from solution import subtract\n\ndef test_sub():\n    assert subtract(3, 1) == 2\n"
    (verdict,) = verifier.verify([{"completion": fenced(ADD), "tests": tests}])
    assert verdict.reward == 0.0
    assert "subtract" in json.dumps(verdict.info), verdict.info


def test_outputs_match_modes():
    assert outputs_match("3  \n\n", "3", "lines")
    assert not outputs_match("3 4", "3  4", "lines")
    assert outputs_match("3 4\n", "3\n4", "tokens")
    assert not outputs_match("3\n", "3", "exact")


def test_bad_options_are_rejected():
    for options in ({"reward": "half"}, {"extract": "middle"}, {"sandbox": "docker"}, {"timeout": 0}, {"workers": 0}):
        with pytest.raises(ValueError):
            CodeVerifier(**options)


# ------------------------------------------------------------ running code


@needs_bwrap
def test_four_formats_right_wrong_and_partial(verifier):
    samples = []
    for tests, right, wrong in (
        (ASSERTS, ADD, ADD_WRONG),
        (UNITTEST, ADD, ADD_WRONG),
        (PYTEST, ADD, ADD_WRONG),
        (CHECK, ADD, ADD_WRONG),
        (IO, IO_ADD, IO_MUL),
    ):
        samples += [{"completion": fenced(right), "tests": tests}, {"completion": fenced(wrong), "tests": tests}]
    verdicts = verifier.verify(samples)
    got = [v.reward for v in verdicts]
    # a*b equals a+b on (2, 2) and (0, 0): asserts 2/4; unittest: square passes, and a*None raises
    # TypeError too, so 2/3; pytest: raises 1/3; check: one test, (1, 2) fails, so 0; stdin/stdout:
    # only "2 2" -> 1/3
    assert got == pytest.approx([1, 2 / 4, 1, 2 / 3, 1, 1 / 3, 1, 0, 1, 1 / 3])
    assert all(v.info["sandbox"] == "bwrap" for v in verdicts)
    assert verdicts[1].info["passed"] == 2 and verdicts[1].info["total"] == 4
    assert verdicts[1].info["failures"][0]["test"] == "assert:1"


@needs_bwrap
def test_all_or_nothing():
    v = CodeVerifier(reward="all", timeout=2, total_timeout=6, workers=2)
    samples = [{"completion": fenced(ADD), "tests": ASSERTS}, {"completion": fenced(ADD_WRONG), "tests": ASSERTS}]
    assert rewards(v, samples) == [1.0, 0.0]


@needs_bwrap
def test_a_solution_that_raises_scores_zero_on_assert_true_lines():
    # default options: `assert True` lines are never passed tests, whatever the format
    raising = "def add(a, b):\n    raise NotImplementedError\n"
    lines = "assert True, 'This prints if this assert fails 1 (good for debugging!)'\n"
    suites = [
        lines + ASSERTS + lines,
        "def test_true():\n    assert True\n" + PYTEST,
        {"check": "def check(candidate):\n" + "    " + lines + CHECK["check"].split(":\n", 1)[1], "entry_point": "add"},
    ]
    v = CodeVerifier()
    verdicts = v.verify([{"completion": fenced(code), "tests": t} for t in suites for code in (raising, ADD)])
    assert [x.reward for x in verdicts] == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0], [x.info for x in verdicts]


@needs_bwrap
def test_humaneval_check_is_all_or_nothing(verifier):
    # HumanEval counts a problem solved only when the whole check(candidate) passes
    check = {
        "check": "def check(candidate):\n    assert True\n    assert candidate(2, 2) == 4\n"
        "    assert candidate(0, 0) == 0\n    assert candidate(1, 2) == 3\n",
        "entry_point": "add",
    }
    samples = [{"completion": fenced(code), "tests": check} for code in (ADD, ADD_WRONG)]
    verdicts = verifier.verify(samples)
    # a*b is right on (2, 2) and (0, 0), 3 of 4 asserts, yet the one test fails
    assert [x.reward for x in verdicts] == [1.0, 0.0]
    assert (verdicts[1].info["total"], verdicts[1].info["failures"][0]["test"]) == (1, "check")


@needs_bwrap
def test_values_and_objects_cross_the_pipe(verifier):
    solution = """
import math
LIMIT = 10
class Counter:
    def __init__(self, start):
        self.n = start
    def bump(self, k=1):
        self.n += k
        return self.n
def stats(xs):
    return {"sum": sum(xs), "set": set(xs), "pair": (min(xs), max(xs)), "mean": sum(xs) / len(xs),
            "none": None, "raw": bytes(xs)}
def peek(counter):
    return counter.n
def boom():
    raise KeyError("missing")
def nan():
    return math.nan
"""
    tests = """
import math, pytest
assert LIMIT == 10
assert stats([1, 2, 2]) == {"sum": 5, "set": {1, 2}, "pair": (1, 2), "mean": 5 / 3, "none": None,
                            "raw": b"\\x01\\x02\\x02"}
c = Counter(5)
assert c.bump() == 6 and c.bump(k=4) == 10 and c.n == 10
assert peek(c) == 10  # the candidate's object, passed back to it
def test_raises():
    with pytest.raises(KeyError):
        boom()
assert math.isnan(nan())
"""
    verdict = verifier.verify([{"completion": fenced(solution), "tests": tests}])[0]
    assert verdict.reward == 1.0, verdict.info


@needs_bwrap
def test_prepend_prompt_humaneval_style():
    v = CodeVerifier(prepend_prompt=True, timeout=2, total_timeout=6)
    prompt = 'def add(a, b):\n    """Return a + b."""\n'
    sample = {"prompt": prompt, "completion": "    return a + b\n", "tests": CHECK["check"], "entry_point": "add"}
    assert rewards(v, [sample]) == [1.0]


@needs_bwrap
def test_no_code_no_tests_and_syntax_errors(verifier):
    samples = [
        {"completion": "I don't know.", "tests": ASSERTS},  # prose run as code: a SyntaxError
        {"completion": fenced("def add(a, b) return"), "tests": ASSERTS},
        {"completion": fenced(ADD), "prompt": "no tests here"},
    ]
    verdicts = verifier.verify(samples)
    assert [v.reward for v in verdicts] == [0.0, 0.0, None]
    v = CodeVerifier(bare=False)
    assert (
        v.verify([{"completion": "def add(a, b): return a + b", "tests": ASSERTS}])[0].info["error"]
        == "no code in the completion"
    )


@needs_bwrap
def test_a_broken_harness_costs_one_sample(verifier, monkeypatch):
    calls = []
    real = verifier._run_functions

    def flaky(code, tests, slot, info, *box):
        calls.append(code)
        if "BREAK" in code:
            raise OSError("no more pipes")
        return real(code, tests, slot, info, *box)

    monkeypatch.setattr(verifier, "_run_functions", flaky)
    samples = [
        {"completion": fenced(ADD + "# BREAK\n"), "tests": ASSERTS},
        {"completion": fenced(ADD), "tests": ASSERTS},
    ]
    verdicts = verifier.verify(samples)
    assert [v.reward for v in verdicts] == [0.0, 1.0]
    assert verdicts[0].info["error"] == "OSError: no more pipes"


def test_rlimit_fallback_works_and_warns(monkeypatch):
    monkeypatch.setattr(code_module, "_warned", False)
    monkeypatch.setenv("GRPO_CODE_SANDBOX", "rlimit")
    with pytest.warns(RuntimeWarning, match="NO network, filesystem or PID isolation"):
        v = CodeVerifier(timeout=2, total_timeout=6, workers=2)
    samples = [
        {"completion": fenced(ADD), "tests": ASSERTS},
        {"completion": fenced(ADD_WRONG), "tests": CHECK},
        {"completion": fenced(IO_ADD), "tests": IO},
        {"completion": fenced("import sys\nprint('4 passed')\nsys.exit(0)\n"), "tests": ASSERTS},
        {"completion": fenced("while True:\n    pass\n"), "tests": IO[:1]},
    ]
    verdicts = v.verify(samples)
    assert [x.reward for x in verdicts] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert {x.info["sandbox"] for x in verdicts} == {"rlimit"}
    with warnings.catch_warnings():  # said once per process, not once per verifier
        warnings.simplefilter("error")
        CodeVerifier(sandbox="rlimit")


def test_missing_bwrap_falls_back_and_explicit_bwrap_refuses(monkeypatch):
    monkeypatch.setattr(code_module, "_warned", False)
    monkeypatch.setattr(code_module._sandbox, "bwrap_path", lambda: None)
    with pytest.warns(RuntimeWarning, match="not installed"):
        assert CodeVerifier().use_bwrap is False
    with pytest.raises(ValueError, match="bubblewrap does not work here"):
        CodeVerifier(sandbox="bwrap")


@needs_bwrap
def test_grpo_score_verifier_code_end_to_end(tmp_path):
    rows = [
        {"id": "p1", "prompt": "add", "tests": ASSERTS, "completion": fenced(ADD)},
        {"id": "p1", "prompt": "add", "tests": ASSERTS, "completion": fenced(ADD_WRONG)},
        {"id": "p2", "prompt": "sum", "tests": IO, "completion": fenced(IO_ADD)},
        {"id": "p3", "prompt": "he", "tests": CHECK, "completion": "```python\nimport os\nos._exit(0)\n```"},
    ]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "grpo_cli", "score", "s.jsonl", "--out", "sc.jsonl",
         "--verifier", "code:timeout=2,workers=2", "-q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    scored = [json.loads(line) for line in (tmp_path / "sc.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["rewards"]["code"] for r in scored] == [1.0, 0.5, 1.0, 0.0]
    assert scored[1]["info"]["code"]["passed"] == 2


def test_a_python_under_tmp_stays_visible_in_the_sandbox(monkeypatch):
    # A CI checkout's virtualenv may live under /tmp, which the sandbox replaces with a tmpfs: the
    # interpreter must be bound after that, or bwrap cannot exec it and every sample scores 0.
    from grpo_verifiers import _sandbox

    monkeypatch.setattr(_sandbox, "_python_dirs", lambda: ["/tmp/ci/.venv"])
    cmd = _sandbox.bwrap_command({}, 8, ())
    pairs = list(zip(cmd, cmd[1:]))
    assert pairs.index(("--tmpfs", "/tmp")) < pairs.index(("--ro-bind", "/tmp/ci/.venv"))
    assert ("--dir", "/tmp/ci") in pairs and ("--dir", "/tmp") not in pairs


@needs_bwrap
@pytest.mark.parametrize("warm", [True, False])
def test_every_run_is_fresh_and_alone(warm):
    # Each run, warm or not: pid 2 under its own pid 1 with nothing else in its PID namespace, a
    # work dir holding only its own files (nothing left by the run before it on the same worker),
    # and, as root, a uid of its own.
    probe = """import os
print(sorted(os.listdir('.')))
print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), os.getpid())
print(os.getuid() != 0 or os.geteuid() != 0)
open('left_behind', 'w').write('x')
"""
    files = ["solution.py"] if warm else ["_code_harness.py", "solution.py"]
    seen = f"{files}\n[1, 2] 2\n{os.geteuid() == 0}\n"
    v = CodeVerifier(workers=1, warm=warm, timeout=5)
    verdicts = v.verify([{"completion": fenced(probe), "tests": [{"input": "", "output": seen}] * 2}] * 2)
    assert [x.reward for x in verdicts] == [1.0, 1.0], verdicts[0].info
    if warm and os.geteuid() == 0:
        assert code_module._warm_works is True  # the warm sandbox ran, not the fallback


@needs_bwrap
@pytest.mark.parametrize("warm", [True, False])
def test_the_tests_never_reach_the_candidates_memory(warm):
    # The candidate scans its whole address space for the tests' tokens: those of its own problem
    # and those of the problems run before it on the same worker. A forked run must not inherit them.
    scanner = r"""import ctypes, re
def leaked(canary=False):
    if canary:  # the scan sees a token made at run time: it would see one inherited
        kept = (''.join(map(chr, b'grpo-secret-')) + 'ab' * 6).encode()  # not a constant
    found = set()
    with open('/proc/self/maps') as maps:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith('r') or fields[-1] in ('[vvar]', '[vvar_vclock]', '[vsyscall]'):
                continue
            start, end = (int(x, 16) for x in fields[0].split('-'))
            found.update(re.findall(rb'grpo-secret-[0-9a-f]{12}', ctypes.string_at(start, end - start)))
    return sorted(found)
"""
    samples = []
    for _ in range(3):
        token = "grpo-secret-" + secrets.token_hex(6)
        tests = f"assert leaked() == []  # {token}\nassert leaked(True) == [b'grpo-secret-' + b'ab' * 6]\n"
        samples.append({"completion": fenced(scanner + ADD), "tests": tests})
    v = CodeVerifier(workers=1, warm=warm, timeout=10, total_timeout=20)
    verdicts = v.verify(samples)
    assert [x.reward for x in verdicts] == [1.0, 1.0, 1.0], [x.info["failures"] for x in verdicts]


@needs_bwrap
def test_a_solution_too_large_for_the_warm_pipes_still_runs(verifier):
    # past the pipes' capacity (1 MiB here) the sample takes a sandbox of its own, same verdict;
    # non-ASCII text counts as the JSON escapes it is sent as
    big = ADD + "# " + "é" * 300_000 + "\n"
    samples = [{"completion": fenced(big), "tests": ASSERTS}, {"completion": fenced(big), "tests": IO}]
    samples[1]["completion"] = fenced(IO_ADD + "# " + "é" * 300_000 + "\n")
    assert rewards(verifier, samples) == [1.0, 1.0]
