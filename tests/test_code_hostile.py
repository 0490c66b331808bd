"""Hostile programs against the `code` verifier's bubblewrap sandbox (issue 4 acceptance): each gets
the right verdict (it fails, or passes only when its answers are right), this process survives,
nothing is left running and nothing is written outside the sandbox. Small limits keep each fast."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import time
import warnings
from pathlib import Path

import pytest
from grpo_verifiers.code import CodeVerifier
from test_code_verifier import ADD, ASSERTS, UNITTEST

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")

UID_BASE = 1_950_000_000  # this module's runs' uids (as root): a leftover process is easy to spot
MARKER = f"grpo-hostile-{secrets.token_hex(6)}"
LOOP = "def add(a, b):\n    while True:\n        pass\n"
ZERO = "def add(a, b):\n    return 0\n"  # right only for add(0, 0)
PYTEST = (
    "import pytest\ndef test_small():\n    assert add(1, 2) == 3\n"
    "def test_raises():\n    with pytest.raises(TypeError):\n        add(1, None)\n"
)
IO = [{"input": "1 2\n", "output": "3\n"}, {"input": "2 2\n", "output": "4\n"}]


@pytest.fixture(scope="module")
def verifier():
    return CodeVerifier(
        timeout=1, total_timeout=4, memory_mb=256, fsize_mb=1, work_mb=8, nproc=32, workers=2,
        max_output_kb=64, uid_base=UID_BASE,
    )  # fmt: skip


def _leftovers() -> list[str]:
    """Live processes of this module's runs: their uids, the marker in argv, or an unreaped bwrap."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry.name}/status").read_text()
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("State", "").startswith("Z"):  # dead, waiting for its reaper
            continue
        uid = int(fields["Uid"].split()[0])
        ours = UID_BASE <= uid < UID_BASE + 8 or MARKER in cmdline
        child_bwrap = int(fields["PPid"]) == os.getpid() and "bwrap" in cmdline
        if ours or child_bwrap:
            found.append(f"{entry.name} uid={uid} {cmdline[:80]}")
    return found


def assert_nothing_left() -> None:
    deadline = time.monotonic() + 3
    while _leftovers() and time.monotonic() < deadline:  # the kernel tears a namespace down async
        time.sleep(0.05)
    assert _leftovers() == []


def score(verifier, code: str, tests, max_s: float = 6.0) -> tuple[float, dict]:
    start = time.monotonic()
    verdict = verifier.verify([{"completion": f"```python\n{code}\n```", "tests": tests}])[0]
    assert time.monotonic() - start < max_s
    assert_nothing_left()
    return verdict.reward, verdict.info


HOSTILE = {
    # name: (code, tests, the right reward)
    "infinite loop at import": ("while True:\n    pass\n" + ADD, ASSERTS, 0.0),
    "infinite loop in the call": ("def add(a, b):\n    while True:\n        pass\n", ASSERTS, 0.0),
    "sleep": ("import time\ndef add(a, b):\n    time.sleep(1000)\n", ASSERTS, 0.0),
    "memory bomb": ("blocks = []\nwhile True:\n    blocks.append(bytearray(2**24))\n" + ADD, ASSERTS, 0.0),
    "fork bomb": (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n" + ADD,
        ASSERTS,
        0.0,
    ),
    "fork bomb, stdin/stdout": (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        IO[:1],
        0.0,
    ),
    "deep recursion": ("def add(a, b):\n    return add(a, b)\n", ASSERTS, 0.0),
    "C stack overflow": (
        "import sys\nsys.setrecursionlimit(10**8)\ndef add(a, b):\n    return add(a, b)\n",
        ASSERTS,
        0.0,
    ),
    "output flood at import": ("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n" + ADD, ASSERTS, 0.0),
    "output flood after the answer": (
        "print(sum(map(int, input().split())))\nwhile True:\n    print('y' * 65536)\n",
        IO,
        0.0,
    ),
    "sys.exit(0) at import": ("import sys\nsys.exit(0)\n" + ADD, ASSERTS, 0.0),
    "os._exit(0) at import": ("import os\nos._exit(0)\n" + ADD, ASSERTS, 0.0),
    "sys.exit(0) in the call": ("import sys\ndef add(a, b):\n    sys.exit(0)\n", UNITTEST, 0.0),
    "exit 0 without output": ("import sys\nsys.exit(0)\n", IO, 0.0),
    "fake 'N passed' output": (
        "print('collected 4 items\\n\\n==== 4 passed in 0.01s ====\\nRan 4 tests\\n\\nOK')\nimport os\nos._exit(0)\n",
        UNITTEST,
        0.0,
    ),
    "fake 'N passed' output, stdin/stdout": ("print('==== 2 passed in 0.01s ====')\n", IO, 0.0),
    "patched unittest": (
        "import unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\n"
        "unittest.TestCase.run = lambda self, result=None: None\n"
        "unittest.TestResult.wasSuccessful = lambda self: True\n" + ZERO,
        UNITTEST,
        0.0,
    ),
    "patched pytest and builtins": (
        "import builtins\nbuiltins.AssertionError = type('AssertionError', (Exception,), {})\n"
        "try:\n    import pytest\n    pytest.raises = lambda *a, **k: "
        "__import__('contextlib').nullcontext()\nexcept ImportError:\n    pass\n" + ZERO,
        PYTEST,
        0.0,
    ),
    "an object equal to everything": (
        "class Liar:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Liar()\n",
        ASSERTS,
        0.0,
    ),
    "an int equal to everything": (
        "class Liar(int):\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Liar(7)\n",
        ASSERTS,
        0.0,
    ),
    "shadowing the tests' builtins": (
        "def len(x):\n    return 2\ndef sorted(x):\n    return [1, 2]\ndef pair(x):\n    return [x]\n",
        "assert len(pair(1)) == 2\nassert sorted(pair(2)) == [1, 2]\n",
        0.0,
    ),
    "a thread left running, right answers": (
        "import threading, time\ndef spin():\n    while True:\n        time.sleep(0.01)\n"
        "threading.Thread(target=spin).start()\n" + ADD,
        ASSERTS,
        1.0,
    ),
    "ignoring SIGTERM": (
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        + LOOP,
        ASSERTS,
        0.0,
    ),
    "segfault": ("import ctypes\ndef add(a, b):\n    return ctypes.string_at(0)\n", ASSERTS, 0.0),
    "a child that leaves the session": (
        f"import subprocess\nsubprocess.Popen(['/bin/sh', '-c', 'trap \"\" TERM; sleep 1000', '{MARKER}'], "
        "start_new_session=True)\n" + ZERO,
        ASSERTS,
        0.25,
    ),
    "killing the parent, kill -1": (
        "import os, signal\nfor pid in (os.getppid(), -1, 1):\n    try:\n        os.kill(pid, "
        "signal.SIGKILL)\n    except OSError:\n        pass\n" + ZERO,
        ASSERTS,
        0.25,  # add(0, 0) == 0 is right
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_gets_the_right_verdict(verifier, name):
    code, tests, right = HOSTILE[name]
    reward, info = score(verifier, code, tests)
    assert reward == right, info
    assert info["sandbox"] == "bwrap"


def test_killing_the_parent_spares_the_other_samples(verifier):
    killer = (
        "import os, signal\nfor pid in (os.getppid(), -1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n   "
        " except OSError:\n        pass\n" + ADD
    )
    samples = [{"completion": f"```python\n{c}\n```", "tests": ASSERTS} for c in (killer, ADD, killer, ZERO)]
    # killing is refused (another uid, another PID namespace), so the killer's right answers count
    assert [v.reward for v in verifier.verify(samples)] == [1.0, 1.0, 1.0, 0.25]
    assert_nothing_left()


def test_writes_outside_land_nowhere(verifier, tmp_path):
    targets = [tmp_path / "pwned", Path(f"/tmp/{MARKER}"), Path(f"/var/tmp/{MARKER}"), Path(f"/dev/shm/{MARKER}"),
               Path(f"/etc/{MARKER}"), Path(os.getcwd()) / MARKER, Path(f"/opt/{MARKER}")]  # fmt: skip
    code = (
        f"for path in {[str(t) for t in targets]!r}:\n    try:\n        open(path, 'w').write('x')\n    except "
        "OSError:\n        pass\n" + ADD
    )
    reward, _ = score(verifier, code, ASSERTS)
    assert reward == 1.0  # its answers are right; its writes went nowhere
    assert [t for t in targets if t.exists()] == []


def test_secrets_outside_cannot_be_read(verifier, tmp_path):
    token = secrets.token_hex(8)  # an answer no program can compute: only reading it passes
    planted = tmp_path / "expected_output.txt"
    planted.write_text(token)
    shadow = tmp_path / "shadow"
    shadow.write_text(token)
    shadow.chmod(0o600)
    io = [{"input": "\n", "output": token + "\n"}]
    # the thief must not hold the token itself (its own source is readable in the sandbox)
    thief = f"""
import glob, os
def steal():
    patterns = {[str(planted), str(shadow), "/etc/shadow", "/tmp/**"]!r}
    patterns += {[str(tmp_path) + "/**", "/root/**", "/home/**"]!r}
    for pattern in patterns:
        for path in glob.iglob(pattern, recursive=True):
            if os.path.basename(path) in ("expected_output.txt", "shadow"):
                try:
                    return open(path).read()
                except OSError:
                    continue
    return "nothing"
found = steal()
print(found)
"""
    reward, _ = score(verifier, thief, io)
    assert reward == 0.0
    function_thief = thief.replace("print(found)", "def add(a, b):\n    return found")
    reward, _ = score(verifier, function_thief, f"assert add(1, 2) == {token!r}\n")
    assert reward == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        control = CodeVerifier(timeout=1, total_timeout=4, sandbox="rlimit")  # without the sandbox the thief wins
    assert control.verify([{"completion": f"```python\n{thief}\n```", "tests": io}])[0].reward == 1.0


def test_deleting_or_rewriting_the_tests_changes_nothing(verifier, tmp_path):
    host_tests = tmp_path / "problems.jsonl"
    host_tests.write_text(ASSERTS)
    vandal = (
        f"""
import glob, os
for path in glob.glob("*") + glob.glob("/tmp/**", recursive=True) + [{str(host_tests)!r}]:
    try:
        open(path, "w").write("assert True\\n")
        os.unlink(path)
    except OSError:
        pass
"""
        + ZERO
    )
    for tests in (ASSERTS, UNITTEST):
        reward, info = score(verifier, vandal, tests)
        assert reward == (0.25 if tests is ASSERTS else 0.0), info
    assert host_tests.read_text() == ASSERTS


def test_loopback_network_is_unreachable(verifier):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    port = server.getsockname()[1]
    caller = (
        "import socket\ntry:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=0.5).sendall(b'{MARKER}')\n"
        "    REACHED = 1\nexcept OSError:\n    REACHED = 0\n"
        "def add(a, b):\n    return a + b + REACHED\n"
    )
    try:
        reward, _ = score(verifier, caller, ASSERTS)
        assert reward == 1.0  # the connection failed, so its answers stayed right
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()
