"""The code verifier's in-sandbox side: one stdlib-only file, copied into every sandbox and run as
`python -I _code_harness.py MODE LIMITS_JSON [FD ...]`. Never imports the grpo packages.

Modes (each first applies rlimits and, when started as root, switches to the run's own uid):
- `script`: exec `python solution.py` (stdin/stdout tests; the parent compares the output).
- `serve REQ_FD RESP_FD`: the candidate's process. Imports `solution.py` and executes calls that
  arrive over REQ_FD, answering over RESP_FD. It never sees the tests.
- `test REQ_FD RESP_FD REPORT_FD`: the trusted test process. Runs `tests.json`'s test code, in
  which the candidate's names are proxies that call the `serve` process; reports one JSON line per
  test to REPORT_FD, a pipe the candidate's process never holds. Candidate code never runs here.

Messages on the call pipes are length-prefixed JSON in a tagged encoding (`encode`/`decode`):
lists and numbers stay JSON; tuples, sets, frozensets, dicts, bytes, complex and non-finite floats
are tagged objects; anything else the candidate returns stays in its process, as a handle. Never
pickle: decoding must not run code chosen by the candidate.

`plan(kind, code, entry_point)` names the tests; the parent imports it from here so that it and the
test process count the same tests.
"""

from __future__ import annotations

import ast
import base64
import builtins
import json
import math
import os
import select
import struct
import symtable
import sys
import time
import traceback

MAX_MESSAGE = 16 * 2**20  # bytes of one call message; more is an error, not a memory bomb


# ---------------------------------------------------------------- test plan (shared with the parent)


def _has_assert(node: ast.AST) -> bool:
    """An `assert` in this statement, not counting function or class bodies."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return False
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Assert):
            return True
        for child in ast.iter_child_nodes(current):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                stack.append(child)
    return False


def _base_names(cls: ast.ClassDef) -> list[str]:
    names = []
    for base in cls.bases:
        if isinstance(base, ast.Name):
            names.append(base.id)
        elif isinstance(base, ast.Attribute):
            names.append(base.attr)
    return names


SOLUTION_MODULE = "solution"  # what test files import the solution as (KodCode: `from solution import f`)


def _imported_from_solution(tree: ast.Module) -> set[str]:
    """Names bound by importing the solution's module: `from solution import add` and `... as f`
    bind `add` and `f`, `import solution` and `import solution as s` bind `solution` and `s`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == SOLUTION_MODULE and not node.level:
            names |= {alias.asname or alias.name for alias in node.names if alias.name != "*"}
        elif isinstance(node, ast.Import):
            names |= {alias.asname or alias.name for alias in node.names if alias.name == SOLUTION_MODULE}
    return names


def _solution_names(tree: ast.Module, code: str) -> set[str]:
    """The solution's names in the test code: those it reads but never binds at top level
    (builtins excepted), and those it imports from the solution's module."""
    top = symtable.symtable(code, "<tests>", "exec")
    bound = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    used, tables = set(), [top]
    while tables:
        table = tables.pop()
        used |= {s.get_name() for s in table.get_symbols() if s.is_referenced() and s.is_global()}
        tables.extend(table.get_children())
    return {name for name in used - bound if not hasattr(builtins, name)} | _imported_from_solution(tree)


def _loads(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _binds(stmt: ast.stmt) -> set[str]:
    """The names a top-level statement binds (over-approximated: nested scopes' names too)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    names = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return names


def _uses_solution(tree: ast.Module, code: str) -> set[str]:
    """The solution's names and every top-level name bound from them (`r = add(1, 2)`, a helper
    function calling `add`): a test that reads none of these cannot test the solution."""
    derived = _solution_names(tree, code)
    changed = True
    while changed:
        changed = False
        for stmt in tree.body:
            if _loads(stmt) & derived and not _binds(stmt) <= derived:
                derived |= _binds(stmt)
                changed = True
    return derived


def _statement_tests(tree: ast.Module, derived: set[str]) -> list[tuple[str, ast.stmt]]:
    """(name, statement) for each top-level statement: `assert:LINE` for one holding an `assert`
    that reads the solution, "" for setup (`assert True` included: it tests nothing)."""
    out = []
    for stmt in tree.body:
        out.append((f"assert:{stmt.lineno}" if _has_assert(stmt) and _loads(stmt) & derived else "", stmt))
    return out


def _check_def(tree: ast.Module) -> ast.FunctionDef | None:
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name == "check":
            return stmt
    return None


def plan(kind: str, code: str, entry_point: str | None = None) -> list[str]:
    """The names of the tests in `code`, in run order. Raises SyntaxError or ValueError for bad tests.

    kind "check" (HumanEval): the whole `check(candidate)` call is one test (`check`), passed only
    when every assert in it passes, as HumanEval's pass@k counts it.
    kind "code": independent tests, each scored on its own: each top-level statement holding an
    `assert` (`assert:LINE`), each top-level `test*` function (`func:NAME`), each `test*` method of
    a class deriving from `*TestCase` (`case:CLASS.METHOD`) or of a plain `Test*` class
    (`class:CLASS.METHOD`). Only those that read one of the solution's names (directly or through
    a top-level name bound from them) count: `assert True, "..."` or a test of the test's own
    helpers is setup, never a passed test.
    """
    tree = ast.parse(code)
    if kind == "check":
        check = _check_def(tree)
        if check is None or len(check.args.args) != 1:
            raise ValueError("the check code must define `check(candidate)` at top level")
        if not entry_point:
            raise ValueError("a check(candidate) test needs an `entry_point` (the function's name)")
        return ["check"]
    derived = _uses_solution(tree, code)
    names = []
    for name, stmt in _statement_tests(tree, derived):
        if name:
            names.append(name)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name.startswith("test"):
            if _loads(stmt) & derived:
                names.append(f"func:{stmt.name}")
        elif isinstance(stmt, ast.ClassDef):
            bases = _base_names(stmt)
            is_case = any(b.endswith("TestCase") for b in bases)
            if is_case or (stmt.name.startswith("Test") and not bases):
                methods = [m for m in stmt.body if isinstance(m, ast.FunctionDef) and m.name.startswith("test")]
                shared = set().union(*(_loads(m) for m in stmt.body if m not in methods))  # setUp, helpers
                for item in methods:
                    if (_loads(item) | shared) & derived:
                        names.append(f"{'case' if is_case else 'class'}:{stmt.name}.{item.name}")
    if not names:
        raise ValueError(
            "the test code holds no test of the solution: no assert, test_* function or TestCase"
            " method that uses a name the solution defines"
        )
    return names


# ---------------------------------------------------------------- safe encoding


def encode(value, handle=None, depth=0):
    """A JSON-able form of `value`; `handle(value)` gives the form of anything else (or raises)."""
    if depth > 200:
        raise ValueError("value nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else {"f": repr(value)}
    d = depth + 1
    if isinstance(value, list):
        return [encode(v, handle, d) for v in value]
    if isinstance(value, tuple):
        return {"t": [encode(v, handle, d) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {"fs" if isinstance(value, frozenset) else "s": [encode(v, handle, d) for v in value]}
    if isinstance(value, dict):
        return {"d": [[encode(k, handle, d), encode(v, handle, d)] for k, v in value.items()]}
    if isinstance(value, (bytes, bytearray)):
        return {"b": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, complex):
        return {"c": [repr(value.real), repr(value.imag)]}
    if handle is None:
        raise TypeError(f"cannot pass a {type(value).__name__} to the candidate")
    return handle(value)


def decode(data, handle=None):
    """The value of an `encode`d form; `handle(id)` makes the object for a handle."""
    if isinstance(data, list):
        return [decode(v, handle) for v in data]
    if not isinstance(data, dict):
        if isinstance(data, (bool, int, float, str)) or data is None:
            return data
        raise ValueError("bad message")
    if len(data) != 1:
        raise ValueError("bad message")
    ((tag, body),) = data.items()
    if tag == "t":
        return tuple(decode(v, handle) for v in body)
    if tag == "s":
        return {decode(v, handle) for v in body}
    if tag == "fs":
        return frozenset(decode(v, handle) for v in body)
    if tag == "d":
        return {decode(k, handle): decode(v, handle) for k, v in body}
    if tag == "b":
        return base64.b64decode(str(body))
    if tag == "f":
        return float(str(body))
    if tag == "c":
        return complex(float(body[0]), float(body[1]))
    if tag == "h" and handle is not None and isinstance(body, int):
        return handle(body)
    raise ValueError(f"bad message tag {tag!r}")


def send(fd: int, message) -> None:
    data = json.dumps(message).encode()
    if len(data) > MAX_MESSAGE:
        data = json.dumps({"e": ["ValueError", "message over the size limit"]}).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data) :]


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("the candidate did not answer in time")
        chunk = os.read(fd, min(size - got, 1 << 20))
        if not chunk:
            raise EOFError("the candidate's process ended")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv(fd: int, deadline: float | None = None):
    (size,) = struct.unpack(">I", _read_exact(fd, 4, deadline))
    if size > MAX_MESSAGE:
        raise ValueError("message over the size limit")
    return json.loads(_read_exact(fd, size, deadline))


# ---------------------------------------------------------------- limits


def apply_limits(limits: dict) -> None:
    """rlimits, then (when root) this run's own uid: RLIMIT_NPROC only binds a non-root uid."""
    import resource

    for name, key in (
        ("RLIMIT_CPU", "cpu"),
        ("RLIMIT_AS", "memory"),
        ("RLIMIT_FSIZE", "fsize"),
        ("RLIMIT_NPROC", "nproc"),
    ):
        value = limits.get(key)
        if value:
            extra = 1 if key == "cpu" else 0  # the hard CPU limit kills (SIGKILL) a second after SIGXCPU
            resource.setrlimit(getattr(resource, name), (int(value), int(value) + extra))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:  # no setuid binary may raise privileges (bubblewrap sets this too)
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    except Exception:
        pass
    uid = limits.get("uid")
    if uid is not None and os.geteuid() == 0:
        os.setgroups([])
        os.setgid(int(uid))
        os.setuid(int(uid))  # drops every capability


# ---------------------------------------------------------------- the candidate's process


def serve(req_fd: int, resp_fd: int) -> None:
    import importlib.util

    objects: dict[int, object] = {}

    def keep(value):
        objects[id(value)] = value
        return {"h": id(value)}

    def reply(value):
        try:
            return {"v": encode(value, keep)}
        except BaseException as exc:  # recursion, odd types: the call's error
            return {"e": ["ValueError", f"cannot send the result back: {type(exc).__name__}"]}

    error = None
    module = None
    try:
        spec = importlib.util.spec_from_file_location("solution", os.path.join(os.getcwd(), "solution.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["solution"] = module
        spec.loader.exec_module(module)
    except BaseException as exc:  # SystemExit at import included: every call fails
        error = f"importing the solution raised {type(exc).__name__}: {exc}"[:2000]
    while True:
        try:
            message = recv(req_fd)
        except (EOFError, OSError, ValueError):
            os._exit(0)
        op = message.get("op")
        try:
            if error is not None:
                raise ImportError(error)
            if op == "names":
                public = {}
                for name, value in vars(module).items():
                    if not name.startswith("_") and type(value).__name__ != "module":
                        public[name] = value
                result = reply(public)
            else:
                target = module if message["obj"] is None else objects[message["obj"]]
                if op == "getattr":
                    value = getattr(target, message["attr"])
                elif op == "call":
                    args = decode(message["args"], objects.__getitem__)
                    kwargs = decode(message["kwargs"], objects.__getitem__)
                    value = target(*args, **kwargs)
                else:
                    raise ValueError(f"unknown op {op!r}")
                result = reply(value)
        except BaseException as exc:  # sys.exit() in a call is that call's error
            result = {"e": [type(exc).__name__, str(exc)[:2000]]}
        send(resp_fd, result)


# ---------------------------------------------------------------- the trusted test process


class CandidateError(Exception):
    """An exception the candidate raised whose type is not a builtin exception."""


class _Client:
    def __init__(self, req_fd: int, resp_fd: int, timeout: float) -> None:
        self.req_fd, self.resp_fd, self.timeout = req_fd, resp_fd, timeout
        self.broken: str | None = None

    def ask(self, message):
        if self.broken:
            raise CandidateError(self.broken)
        try:
            send(self.req_fd, message)
            reply = recv(self.resp_fd, time.monotonic() + self.timeout)
        except TimeoutError:
            self.broken = f"a call took over {self.timeout:g} s"
            raise CandidateError(self.broken) from None
        except (EOFError, OSError, ValueError) as exc:
            self.broken = f"the candidate's process failed: {exc}"
            raise CandidateError(self.broken) from None
        if isinstance(reply, dict) and "v" in reply and len(reply) == 1:
            return decode(reply["v"], self.remote)
        if isinstance(reply, dict) and "e" in reply and len(reply) == 1:
            kind, text = str(reply["e"][0]), str(reply["e"][1])
            cls = getattr(builtins, kind, None)
            # only Exception subclasses: a candidate's SystemExit must not end the test process
            if isinstance(cls, type) and issubclass(cls, Exception):
                raise cls(text)
            raise CandidateError(f"{kind}: {text}")
        self.broken = "the candidate's process sent a malformed reply"
        raise CandidateError(self.broken)

    def remote(self, handle):
        return Remote(self, handle)


class Remote:
    """A candidate's function, class or object: it lives in the candidate's process."""

    def __init__(self, client: _Client, handle: int) -> None:
        object.__setattr__(self, "_client", client)
        object.__setattr__(self, "_handle", handle)

    def __call__(self, *args, **kwargs):
        args, kwargs = encode(list(args), _pass_back), encode(kwargs, _pass_back)
        return self._client.ask({"op": "call", "obj": self._handle, "args": args, "kwargs": kwargs})

    def __getattr__(self, attr):
        if attr.startswith("__"):  # protocol probes (copy, pickle) stay local
            raise AttributeError(attr)
        return self._client.ask({"op": "getattr", "obj": self._handle, "attr": attr})

    def __repr__(self):
        return "<candidate object>"


def _pass_back(value):
    """The candidate's own objects go back to it as handles; anything else cannot be sent."""
    if isinstance(value, Remote):
        return {"h": value._handle}
    raise TypeError(f"cannot pass a {type(value).__name__} to the candidate")


def _run_tests(spec: dict, client: _Client, report) -> None:
    kind, code = spec["kind"], spec["code"]
    names = set(plan(kind, code, spec.get("entry_point")))
    candidate_names = client.ask({"op": "names"})
    # `import solution` and `from solution import add` in the test code give the same proxies (this
    # process never imports the candidate's file); only the test code's own imports see that module.
    import types

    module = types.ModuleType(SOLUTION_MODULE)
    module.__dict__.update(candidate_names)

    def import_(name, globals=None, locals=None, fromlist=(), level=0):
        if name == SOLUTION_MODULE and not level:
            return module
        return builtins.__import__(name, globals, locals, fromlist, level)

    namespace: dict = {"__name__": "__grpo_tests__", "__builtins__": {**vars(builtins), "__import__": import_}}
    # a candidate's `len` or `sorted` would answer the test's own checks: builtins stay builtins
    namespace.update({k: v for k, v in candidate_names.items() if not hasattr(builtins, k)})

    def run(name, fn):
        try:
            fn()
        except BaseException as exc:  # a failing test, whatever it raised
            if name:
                report(name, False, (str(exc) if isinstance(exc, _Failed) else f"{type(exc).__name__}: {exc}")[:300])
            return
        if name:
            report(name, True, None)

    def exec_stmt(stmt):
        compiled = compile(ast.Module(body=[stmt], type_ignores=[]), "<tests>", "exec")
        return lambda: exec(compiled, namespace)

    tree = ast.parse(code)
    if kind == "check":
        for stmt in tree.body:
            run("", exec_stmt(stmt))
        entry = spec["entry_point"]
        if entry not in candidate_names:
            raise NameError(f"the solution defines no {entry!r}")
        run("check", lambda: namespace["check"](candidate_names[entry]))
        return
    for name, stmt in _statement_tests(tree, _uses_solution(tree, code)):
        run(name, exec_stmt(stmt))
    import unittest

    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and f"func:{stmt.name}" in names:
            run(f"func:{stmt.name}", namespace.get(stmt.name) or _undefined(stmt.name))
        elif isinstance(stmt, ast.ClassDef):
            cls = namespace.get(stmt.name)
            for item in stmt.body:
                method = getattr(item, "name", "")
                if f"case:{stmt.name}.{method}" in names:
                    run(f"case:{stmt.name}.{method}", _unittest_runner(unittest, cls, method))
                elif f"class:{stmt.name}.{method}" in names:
                    run(f"class:{stmt.name}.{method}", lambda cls=cls, method=method: getattr(cls(), method)())


def _undefined(name: str):
    def fail():
        raise NameError(f"{name} is not defined: its definition (or a decorator) raised")

    return fail


class _Failed(Exception):
    """A unittest failure, its message already says what was raised."""


def _unittest_runner(unittest, cls, method):
    def run():
        result = unittest.TestResult()
        cls(method).run(result)
        problems = result.failures + result.errors + [(t, "skipped: " + why) for t, why in result.skipped]
        if problems or result.testsRun != 1:
            raise _Failed(problems[0][1].strip().splitlines()[-1] if problems else "not run")

    return run


def test_main(
    req_fd: int, resp_fd: int, report_fd: int, timeout: float, spec: dict | None = None, job: int | None = None
) -> None:
    def report(name, ok, error):
        line = json.dumps({"name": name, "ok": ok, "error": error, "job": job}).encode() + b"\n"
        while line:
            line = line[os.write(report_fd, line) :]

    if spec is None:
        with open("tests.json", encoding="utf-8") as f:
            spec = json.load(f)
    client = _Client(req_fd, resp_fd, timeout)
    try:
        _run_tests(spec, client, report)
    except BaseException:  # tests not reported count as failed; say why
        report("", False, traceback.format_exc(limit=3)[-500:])
    report("", True, "done")
    os._exit(0)


# ---------------------------------------------------------------- the warm sandbox (zygote)
#
# One per worker inside its bubblewrap sandbox, as root (CAP_SYS_ADMIN, CAP_SETUID and CAP_SETGID
# kept for it alone). It has imported everything the runs need, so a run costs a few forks, not a
# sandbox and an interpreter start. Each run of candidate or test code gets what a sandbox of its
# own gave it: its own mount, PID and IPC namespaces; a fresh size-capped tmpfs work dir (the only
# place it can write: the rest of the root is read-only or root's 0755); a trusted pid 1 that
# reaps and, by exiting when the run's process does, has the kernel kill everything the run
# started; rlimits, no new privileges and the run's own uid (which drops every capability).
# Killing that pid 1 from here ends the run early.
#
# A forked run inherits this process's memory, so nothing secret ever passes through it: the
# solution and the tests go from the parent straight to the run that needs them over pipes of their
# own (CODE_FD, SPEC_FD; a run reads its message before any candidate code runs, then closes the
# pipe), and test reports and program output go straight back (REPORT_FD, OUT_FD). The control pipe
# carries only limits, the stdin of stdin/stdout tests and job numbers; results are exit statuses.

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID = 0x00020000, 0x08000000, 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 1 << 14, 1 << 18
WORK = "/tmp/sandbox"
_libc = None


def _sys(name: str, *args) -> None:
    global _libc
    import ctypes

    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _only_fds(keep) -> None:
    """Close every fd above 2 but `keep`."""
    last = 2
    for fd in sorted(set(keep)):
        if fd > last + 1:
            os.closerange(last + 1, fd)
        last = max(last, fd)
    os.closerange(last + 1, 1 << 20)


def _stdio(stdin=None, stdout=None, stderr=None) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd, source in ((0, stdin), (1, stdout), (2, stderr)):
        os.dup2(devnull if source is None else source, fd)
    os.close(devnull)


def _status_code(status: int) -> int:
    """An exit status as one exit code: the code, or 128 + the signal."""
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _spawn(target, keep=(), work=64 * 2**20, stdin=None, stdout=None):
    """Start `target()` as pid 2 of a fresh run (see above); `[helper pid, init pid, None]`.
    The helper, in our namespaces, only waits for the init and exits with its code, so waiting
    for it waits for the whole run."""
    r, w = os.pipe()
    helper = os.fork()
    if helper == 0:
        try:
            _stdio(stdin, stdout)
            _only_fds((*keep, w))
            _sys("unshare", CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC)
            _sys("mount", None, b"/", None, MS_REC | MS_PRIVATE, None)
            _sys("mount", b"tmpfs", WORK.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, f"size={work},mode=0777".encode())
            init = os.fork()
            if init == 0:
                os.close(w)
                _init(target)
            os.write(w, str(init).encode())
            _stdio()
            _only_fds(())
            _, status = os.waitpid(init, 0)
            os._exit(_status_code(status))
        except BaseException:
            os._exit(127)
    os.close(w)
    try:
        init = int(os.read(r, 64) or 0)
    finally:
        os.close(r)
    if init <= 0:
        os.waitpid(helper, 0)
        raise OSError("a run's namespaces could not be set up")
    return [helper, init, None]


def _init(target) -> None:
    """pid 1 of a run: mounts its /proc, runs `target` as pid 2, reaps, exits when it exits."""
    code = 127
    try:
        _sys("mount", b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
        os.chdir(WORK)
        child = os.fork()
        if child == 0:
            try:
                os.setsid()
                target()
            finally:
                os._exit(1)
        _stdio()
        _only_fds(())
        while True:
            pid, status = os.waitpid(-1, 0)
            if pid == child:
                code = _status_code(status)
                break
    except BaseException:
        pass
    os._exit(code)


def _wait(helper: int, deadline: float) -> int | None:
    """The helper's exit code once it exits, None at the deadline (it is left running)."""
    fd = os.pidfd_open(helper)
    try:
        select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        pid, status = os.waitpid(helper, os.WNOHANG)
        return _status_code(status) if pid else None
    finally:
        os.close(fd)


def _end(runs, wait_s: float = 5.0) -> None:
    """SIGKILL the init of each run still going (the kernel then kills its namespace) and reap
    the helpers; a run is `[helper, init, exit code or None]`."""
    import signal

    for _, init, code in runs:
        if code is None:
            try:
                os.kill(init, signal.SIGKILL)
            except OSError:
                pass
    deadline = time.monotonic() + wait_s
    for run in runs:
        if run[2] is None:
            try:
                run[2] = _wait(run[0], deadline)
            except OSError:  # gone already
                pass


def read_until(fd: int, deadline: float, limit: int) -> tuple[bytes, str | None]:
    """Bytes from `fd` until EOF; stops with a reason at the deadline or past `limit` bytes."""
    chunks, size = [], 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b"".join(chunks), "timed out"
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks), None
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks), "output over the limit"


def _take(fd: int, job: int):
    """This job's message from a parent's pipe (read by the run itself, never by the zygote)."""
    message = recv(fd, time.monotonic() + 10)
    os.close(fd)
    if message.get("job") != job:
        raise ValueError("a message of another job")
    return message["data"]


def _write_solution(code: str) -> None:
    with open("solution.py", "w", encoding="utf-8") as f:
        f.write(code)
    os.chmod("solution.py", 0o444)


def _script(limits: dict) -> None:
    """A stdin/stdout run in this interpreter, as `python -I solution.py` would run it."""
    import threading
    import types

    apply_limits(limits)
    sys.stdin = open(0, encoding="utf-8", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    sys.argv = ["solution.py"]
    main = types.ModuleType("__main__")
    main.__file__ = os.path.join(WORK, "solution.py")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    status = 0
    try:
        with open("solution.py", encoding="utf-8") as f:
            source = f.read()
        exec(compile(source, "solution.py", "exec"), main.__dict__)
        threading._shutdown()  # non-daemon threads finish first, as at interpreter exit
    except SystemExit as exc:
        code = exc.code
        status = code if isinstance(code, int) else (0 if code is None else 1)
        if not isinstance(code, int) and code is not None:
            print(code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        status = 1
    try:
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        status = status or 120
    os._exit(status & 0xFF)


def _memfd(text: bytes) -> int:
    fd = os.memfd_create("stdin", 0)
    os.write(fd, text)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _job_script(job: dict, fds: dict) -> dict:
    n, limits = job["job"], job["limits"]

    def target():
        _write_solution(_take(fds["code"], n))
        _script(limits)

    stdin = _memfd(job["stdin"].encode("utf-8"))
    runs = []
    try:
        runs.append(_spawn(target, (fds["code"],), job["work"], stdin=stdin, stdout=fds["out"]))
        code = runs[0][2] = _wait(runs[0][0], time.monotonic() + job["timeout"])
    finally:
        _end(runs)
        os.close(stdin)
    return {"job": n, "timed_out": code is None, "code": code}


def _job_functions(job: dict, fds: dict) -> dict:
    n, serve_limits, test_limits = job["job"], job["serve"], job["test"]
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()

    def serve_target():
        _write_solution(_take(fds["code"], n))
        apply_limits(serve_limits)
        serve(req_r, resp_w)

    def test_target():
        spec = _take(fds["spec"], n)
        apply_limits(test_limits)
        test_main(req_w, resp_r, fds["report"], float(test_limits["call_timeout"]), spec, n)

    runs = []
    try:
        runs.append(_spawn(serve_target, (req_r, resp_w, fds["code"]), job["work"]))
        runs.append(_spawn(test_target, (req_w, resp_r, fds["report"], fds["spec"]), job["work"]))
        for fd in (req_r, req_w, resp_r, resp_w):  # the runs hold them now
            os.close(fd)
        req_r = req_w = resp_r = resp_w = -1
        code = runs[1][2] = _wait(runs[1][0], time.monotonic() + job["total"])
    finally:
        _end(runs)
        for fd in (req_r, req_w, resp_r, resp_w):
            if fd >= 0:
                os.close(fd)
    return {"job": n, "timed_out": code is None, "code": code}


def _unread(fd: int) -> int:
    import fcntl
    import termios

    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def zygote(ctrl_fd: int, result_fd: int, code_fd: int, spec_fd: int, out_fd: int, report_fd: int) -> None:
    import ctypes  # noqa: F401  (imported once here, not once per run)
    import importlib.util  # noqa: F401
    import resource  # noqa: F401
    import unittest  # noqa: F401

    fds = {"code": code_fd, "spec": spec_fd, "out": out_fd, "report": report_fd}
    _stdio()
    while True:
        try:
            job = recv(ctrl_fd)
        except (EOFError, OSError, ValueError):
            os._exit(0)
        try:
            result = _job_script(job, fds) if job.get("op") == "script" else _job_functions(job, fds)
        except BaseException as exc:  # a failing job costs its sample, not the sandbox
            result = {"job": job.get("job"), "error": f"{type(exc).__name__}: {exc}"[:500]}
        if _unread(code_fd) or _unread(spec_fd):  # a run did not take its message: start afresh
            result["stale"] = True
        send(result_fd, result)


def main(argv: list[str]) -> None:
    mode = argv[1]
    limits = json.loads(argv[2])
    fds = [int(a) for a in argv[3:]]
    if mode == "zygote":  # its runs set their own limits
        zygote(*fds)
    apply_limits(limits)
    if mode == "script":
        os.execv(sys.executable, [sys.executable, "-I", "solution.py"])
    elif mode == "serve":
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        serve(*fds)
    elif mode == "test":
        test_main(*fds, float(limits["call_timeout"]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv)
