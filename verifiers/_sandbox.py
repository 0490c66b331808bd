"""Start one sandboxed `python _code_harness.py MODE` process, and kill it with everything it started.

With bubblewrap (`bwrap`): new PID, network, IPC and UTS namespaces (a user namespace too when not
root); an empty root holding, read-only, only the system directories (`/usr`, `/bin`, `/lib*`,
`/sbin`, `/etc`) and the Python installation (so the host's data, home directories, `/tmp` and the
caller's files do not exist inside; `hide` masks more paths within those); fresh `/dev`, `/proc`
and `/tmp`; a size-capped tmpfs work dir `/tmp/sandbox` holding only this run's files; every
capability dropped (as root, CAP_SETUID/SETGID are kept just long enough for the harness to switch
to the run's own uid); no new privileges; a new session; a cleared environment.
`--die-with-parent` plus our SIGKILL of bwrap's process group end the namespace's init, and the
kernel then kills every process in the namespace.

Limits: RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_CORE=0 always. RLIMIT_NPROC never binds root
and counts processes per uid (per user namespace since Linux 5.14), so it is set only where it
counts this run alone: as root, each concurrent run switches to a uid of its own (`uid_base` +
slot); as non-root, each run has its own user namespace. (`nproc` 0 means unset.)

Fallback without bubblewrap (`rlimit`): the same harness and rlimits (no uid switch, so no
RLIMIT_NPROC as root), its own session and process group, a private temporary directory, a clean
environment holding a random run token; afterwards the group is killed and so is every process
whose environment carries the token (children that left the group). No network, filesystem or PID
isolation: weaker, and said so.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

HARNESS = Path(__file__).with_name("_code_harness.py")
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
PATH = "/usr/local/bin:/usr/bin:/bin"
WORK = "/tmp/sandbox"


@dataclass
class Limits:
    cpu_s: int
    memory_mb: int
    fsize_mb: int
    nproc: int
    uid: int | None
    call_timeout: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """What `_code_harness.apply_limits` reads."""
        return {
            "cpu": self.cpu_s,
            "memory": self.memory_mb * 2**20,
            "fsize": self.fsize_mb * 2**20,
            "nproc": self.nproc,
            "uid": self.uid,
            "call_timeout": self.call_timeout,
        }

    def as_json(self) -> str:
        return json.dumps(self.as_dict())


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _python_dirs() -> list[str]:
    dirs = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    dirs.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    return sorted(dirs)


def bwrap_command(files: dict[str, int], work_mb: int, hide: tuple[str, ...], admin: bool = False) -> list[str]:
    """bwrap's arguments up to `--`; `files` maps a name in the work dir to a readable fd. `admin`
    (as root only) keeps CAP_SYS_ADMIN for the warm sandbox's zygote, which makes each run's own
    namespaces; no run keeps it (each switches to its own uid)."""
    root = os.geteuid() == 0
    cmd = [bwrap_path() or "bwrap", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if root:  # no user namespace: the harness switches to the run's uid, for RLIMIT_NPROC
        cmd += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        if admin:
            cmd += ["--cap-add", "CAP_SYS_ADMIN"]
    else:
        cmd += ["--unshare-all"]
    # an empty root: the system directories and the Python installation, read-only, nothing else
    bound: list[str] = []
    for path in SYSTEM:
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            cmd += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            cmd += ["--ro-bind", path, path]
            bound.append(path)
    # /tmp before the Python installation: a virtualenv under /tmp (a CI checkout) must stay visible
    cmd += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    made: set[str] = {"/tmp"}
    for path in _python_dirs():
        if any(_inside(path, b) for b in bound):
            continue
        parent, parents = os.path.dirname(path), []
        while parent != "/" and parent not in made:
            parents.insert(0, parent)
            parent = os.path.dirname(parent)
        for parent in parents:  # made open: bwrap would make them 0700, closed to the run's uid
            cmd += ["--perms", "0755", "--dir", parent]
            made.add(parent)
        cmd += ["--ro-bind", path, path]
        bound.append(path)
    for path in hide:
        path = os.path.realpath(path)
        if os.path.isdir(path) and any(_inside(path, b) for b in bound):
            cmd += ["--tmpfs", path]
    cmd += ["--perms", "0777", "--size", str(work_mb * 2**20), "--tmpfs", WORK]
    for name, fd in files.items():
        cmd += ["--perms", "0444", "--file", str(fd), f"{WORK}/{name}"]
    cmd += ["--chdir", WORK, "--clearenv", "--setenv", "PATH", PATH, "--setenv", "HOME", WORK]
    cmd += ["--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1"]
    return [*cmd, "--"]


def _kill_and_wait(pid: int, limit_s: float = 5.0) -> None:
    """SIGKILL `pid` (not our child) and wait until it has exited: a namespace init exits only
    after every process of its namespace has."""
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        return
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                    return
        except OSError:  # reaped
            return
        time.sleep(0.005)


def _kill_marked(marker: bytes) -> None:
    """SIGKILL every process whose initial environment holds `marker`, until none is left."""
    for _ in range(50):
        found = False
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    if marker not in f.read():
                        continue
                os.kill(int(entry.name), signal.SIGKILL)
                found = True
            except OSError:  # gone, or not ours to read
                continue
        if not found:
            return


class Sandboxed:
    """One running sandboxed harness. `kill()` ends it and everything it started."""

    def __init__(
        self,
        mode: str,
        files: dict[str, str],
        limits: Limits,
        *,
        use_bwrap: bool,
        pass_fds: tuple[int, ...] = (),
        stdin: IO[bytes] | int = subprocess.DEVNULL,
        stdout: int = subprocess.DEVNULL,
        stderr: IO[bytes] | int = subprocess.DEVNULL,
        work_mb: int = 64,
        hide: tuple[str, ...] = (),
        admin: bool = False,
    ) -> None:
        self.uid = limits.uid
        self.use_bwrap = use_bwrap
        self.tempdir: str | None = None
        # the script launcher only sets limits and execs: no site-packages to load (-S) saves time
        flags = ["-I", "-S"] if mode == "script" else ["-I"]
        harness = [sys.executable, *flags, "_code_harness.py", mode, limits.as_json(), *map(str, pass_fds)]
        files = {"_code_harness.py": HARNESS.read_text(encoding="utf-8"), **files}
        self.info_r = -1
        if use_bwrap:
            handles = []
            info_w = -1
            try:
                fds = {}
                for name, text in files.items():
                    handle = tempfile.TemporaryFile()
                    handle.write(text.encode("utf-8"))
                    handle.seek(0)
                    handles.append(handle)
                    fds[name] = handle.fileno()
                self.info_r, info_w = os.pipe()  # bwrap reports the namespace init's pid here
                cmd = [*bwrap_command(fds, work_mb, hide, admin), *harness]
                cmd[1:1] = ["--info-fd", str(info_w)]
                self.process = self._popen(
                    cmd, None, (*pass_fds, *fds.values(), info_w), stdin, stdout, stderr, {"PATH": PATH}
                )
            except BaseException:
                if self.info_r >= 0:
                    os.close(self.info_r)
                raise
            finally:
                for handle in handles:
                    handle.close()
                if info_w >= 0:
                    os.close(info_w)
        else:
            self.tempdir = tempfile.mkdtemp(prefix="grpo-code-")
            for name, text in files.items():
                Path(self.tempdir, name).write_text(text, encoding="utf-8")
            os.chmod(self.tempdir, 0o700)
            self.token = f"GRPO_RUN_{secrets.token_hex(8)}"
            env = {
                "PATH": PATH,
                "HOME": self.tempdir,
                "LANG": "C.UTF-8",
                "PYTHONDONTWRITEBYTECODE": "1",
                self.token: "1",
            }
            self.process = self._popen(harness, self.tempdir, pass_fds, stdin, stdout, stderr, env)

    @staticmethod
    def _popen(
        cmd: list[str],
        cwd: str | None,
        pass_fds: tuple[int, ...],
        stdin: Any,
        stdout: Any,
        stderr: Any,
        env: dict[str, str],
    ) -> subprocess.Popen:
        return subprocess.Popen(
            cmd, cwd=cwd, pass_fds=pass_fds, stdin=stdin, stdout=stdout, stderr=stderr, env=env, start_new_session=True
        )

    def _init_pid(self) -> int | None:
        """The host pid of the sandbox's PID-namespace init, from bwrap's --info-fd, if it said."""
        wait = 0.5 if self.process.poll() is None else 0.0
        if not select.select([self.info_r], [], [], wait)[0]:
            return None
        try:
            return int(json.loads(os.read(self.info_r, 4096).decode())["child-pid"])
        except (ValueError, KeyError, TypeError, OSError):
            return None

    def kill(self) -> None:
        """SIGKILL bwrap's process group and the namespace's init (the kernel then kills every
        process in the namespace), wait until the init is gone, clean up."""
        init = self._init_pid() if self.use_bwrap else None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        if self.info_r >= 0:
            os.close(self.info_r)
            self.info_r = -1
        if init is not None:
            _kill_and_wait(init)
        if not self.use_bwrap:
            _kill_marked(self.token.encode() + b"=")
        if self.tempdir is not None:
            shutil.rmtree(self.tempdir, ignore_errors=True)


class Warm:
    """A warm sandbox: one bubblewrap sandbox whose zygote (`_code_harness.zygote`) runs jobs one at
    a time, each run in namespaces, a work dir and a uid of its own (as root only: runs need their
    own uids). The solution and the tests travel from here straight to the run that reads them, and
    reports and output straight back, over pipes the zygote passes on but never reads. A job that
    does not answer by its deadline kills the whole sandbox; `broken` then says why, and the caller
    starts another."""

    PIPE_BYTES = 2**20  # asked of each pipe; a message that does not fit takes the cold path

    def __init__(self, work_mb: int, hide: tuple[str, ...]) -> None:
        import fcntl

        self.broken: str | None = None
        self.jobs = 0
        ends = {name: os.pipe() for name in ("ctrl", "result", "code", "spec", "out", "report")}
        inner = [
            ends["ctrl"][0],
            ends["result"][1],
            ends["code"][0],
            ends["spec"][0],
            ends["out"][1],
            ends["report"][1],
        ]
        self.capacity = 2**16
        for name in ("code", "spec", "out", "report"):
            try:
                fcntl.fcntl(ends[name][1], 1031, self.PIPE_BYTES)  # F_SETPIPE_SZ
            except OSError:
                pass
        self.capacity = min(fcntl.fcntl(ends[n][1], 1032) for n in ("code", "spec"))  # F_GETPIPE_SZ
        self.ctrl, self.result = ends["ctrl"][1], ends["result"][0]
        self.code, self.spec = ends["code"][1], ends["spec"][1]
        self.out, self.report = ends["out"][0], ends["report"][0]
        for fd in (self.out, self.report):
            os.set_blocking(fd, False)
        try:
            self.box = Sandboxed(
                "zygote", {}, Limits(0, 0, 0, 0, None), use_bwrap=True, pass_fds=tuple(inner),
                work_mb=work_mb, hide=hide, admin=True,
            )  # fmt: skip
        except BaseException:
            self._close_fds()
            raise
        finally:
            for fd in inner:
                os.close(fd)

    def fits(self, *values: Any) -> bool:
        """Whether each value, as the message `run` writes, fits an empty pipe: the write cannot
        block (the run that reads it starts only after the job message that follows)."""
        return all(len(json.dumps({"job": 2**62, "data": v})) + 4 <= self.capacity for v in values)

    def run(
        self, job: dict[str, Any], seconds: float, code: str, spec: Any = None, limit: int = 4 * 2**20
    ) -> tuple[dict[str, Any], bytes, bool]:
        """(the zygote's result, what the job's runs sent back, whether that went past `limit`)."""
        from grpo_verifiers._code_harness import recv, send

        if self.broken:
            raise RuntimeError(self.broken)
        self.jobs += 1
        job = {**job, "job": self.jobs}
        stream = self.out if job["op"] == "script" else self.report
        chunks: list[bytes] = []
        size, over = 0, False

        def drain() -> None:
            nonlocal size, over
            while True:
                try:
                    chunk = os.read(stream, 65536)
                except BlockingIOError:
                    return
                if not chunk:
                    return
                if size + len(chunk) > limit:
                    over = True
                    chunk = chunk[: max(0, limit - size)]
                chunks.append(chunk)
                size += len(chunk)

        try:
            send(self.code, {"job": self.jobs, "data": code})
            if spec is not None:
                send(self.spec, {"job": self.jobs, "data": spec})
            send(self.ctrl, job)
            deadline = time.monotonic() + seconds
            while True:
                left = deadline - time.monotonic()
                ready = select.select([self.result, stream], [], [], max(0.0, left))[0] if left > 0 else []
                if not ready:
                    raise TimeoutError(f"no answer in {seconds:g} s")
                if stream in ready:
                    drain()
                if self.result in ready:
                    result = recv(self.result, deadline)
                    break
            drain()  # the runs are over: what they wrote is all in the pipe
        except (OSError, EOFError, ValueError, TimeoutError) as exc:
            self.broken = f"the warm sandbox failed: {type(exc).__name__}: {exc}"
            self.close()
            raise RuntimeError(self.broken) from None
        if result.get("job") != self.jobs or result.get("stale"):
            self.broken = "the warm sandbox lost track of a job"
            self.close()
        if "error" in result:
            raise RuntimeError(str(result["error"]))
        if self.broken:
            raise RuntimeError(self.broken)
        return result, b"".join(chunks), over

    def _close_fds(self) -> None:
        for name in ("ctrl", "result", "code", "spec", "out", "report"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def close(self) -> None:
        if getattr(self, "box", None) is not None:
            self.box.kill()
            self.box = None
        self._close_fds()
