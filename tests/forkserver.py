"""Real processes without paying the imports each time: a fork server for the kill tests.

A kill test runs the same entry point many times (once per fault point, then again to recover),
each a process that the fault point SIGKILLs for real. A fresh interpreter spends seconds
importing mlflow and mlgate before it reaches the registry; that import is the same every time.
The fork server imports them once, then forks one child per job: each child is a real process
of its own (its own pid, environment, stdout and stderr files), runs the job from the top and is
reaped by the server, which reports its exit status as `subprocess` would (-9 for a SIGKILL).
Nothing runs in the server before a fork but the imports (no client, no connection, no Python
thread: the server reports its thread count, which the tests check is one), so every child
starts from the state a fresh interpreter has after the same imports.

`run_all` forks a batch and waits for it; `start_all` forks a batch and returns while it runs
(its pids, each child's stdout read as it is written, a SIGKILL of those still running), for
children that live through several rounds the test drives (the mixed race of
test_registry_moves). One batch at a time: the server reaps a batch before it reads the next,
so forking another while one runs is refused (it would read the first batch's exit statuses as
the second's pids), and `reap` SIGKILLs and reaps what a failed test left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

SERVER = r"""
import json, os, sys, threading
for name in sys.argv[1:]:
    __import__(name)
report = sys.stdout
report.write(json.dumps({"threads": threading.active_count()}) + "\n")
report.flush()


def child(job):
    code = 70
    try:
        os.dup2(os.open(job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
        os.dup2(os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        os.environ.clear()
        os.environ.update(job["env"])
        sys.argv = job["argv"]
        try:
            exec(compile(job["code"], "<job>", "exec"), {"__name__": "__main__"})
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
    finally:
        # os._exit flushes nothing: the job's streams, and the interpreter's own (a logger made
        # at import time holds them; they write to the same descriptors, now the job's files).
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


# One line, a list of jobs: all forked at once (they run side by side), their pids reported,
# then all reaped and their exit statuses reported.
for line in sys.stdin:
    pids = []
    for job in json.loads(line):
        pid = os.fork()
        if pid == 0:
            child(job)
        pids.append(pid)
    report.write(json.dumps(pids) + "\n")
    report.flush()
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    report.write(json.dumps(codes) + "\n")
    report.flush()
"""

# `mlgate ARGS`, as the console script runs it.
MLGATE = "import sys\nfrom mlgate.cli import main\nsys.exit(main())\n"


class ForkServer:
    def __init__(self, process: subprocess.Popen, scratch: Path, threads: int) -> None:
        self.process, self.scratch, self.threads, self.jobs = process, scratch, threads, 0
        self.running: Running | None = None  # the batch forked and not yet reaped

    def run(
        self, code: str, argv: Sequence[str], env: Mapping[str, str]
    ) -> subprocess.CompletedProcess:
        """Run `code` (a script, `sys.argv` = `argv`) in a forked child with environment `env`;
        return what `subprocess.run(..., capture_output=True, text=True)` would."""
        return self.run_all([(code, argv, env)])[0]

    def run_all(
        self, jobs: Sequence[tuple[str, Sequence[str], Mapping[str, str]]]
    ) -> list[subprocess.CompletedProcess]:
        """Fork one child per job, all at once (they run side by side), and wait for all."""
        return self.start_all(jobs).wait()

    def start_all(self, jobs: Sequence[tuple[str, Sequence[str], Mapping[str, str]]]) -> Running:
        """Fork one child per job, all at once, and return while they run: the test talks to
        them (files, barriers) and reads their stdout as they write it, then waits for all.
        The server forks nothing else until they are reaped."""
        assert self.running is None, (
            "the batch forked before still runs: wait() for it (or kill() it, then wait()) "
            "before forking another"
        )
        lines, files = [], []
        for code, argv, env in jobs:
            self.jobs += 1
            out, err = self.scratch / f"{self.jobs}.out", self.scratch / f"{self.jobs}.err"
            files.append((list(argv), out, err))
            lines.append(
                {"code": code, "argv": list(argv), "env": dict(env)}
                | {"stdout": str(out), "stderr": str(err)}
            )
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(lines) + "\n")
        self.process.stdin.flush()
        self.running = Running(self, files, json.loads(self.report()))
        return self.running

    def reap(self) -> None:
        """SIGKILL and reap the batch still running, if any (a test that failed before it
        waited): the server can fork the next test's batch."""
        if self.running is not None:
            self.running.kill()
            self.running.wait()

    def report(self) -> str:
        assert self.process.stdout
        line = self.process.stdout.readline()
        assert line, f"the fork server died (exit {self.process.poll()})"
        return line

    def mlgate(self, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess:
        """`mlgate ARGV` in a forked child."""
        return self.run(MLGATE, ["mlgate", *argv], env)


class Running:
    """Children forked by `ForkServer.start_all`, still running: their pids, their stdout as
    written so far, and their end (each reaped by the server)."""

    def __init__(
        self, server: ForkServer, files: list[tuple[list[str], Path, Path]], pids: list[int]
    ) -> None:
        self.server, self.files, self.pids = server, files, pids
        self.codes: list[int] | None = None

    def alive(self, i: int) -> bool:
        """Child `i` has not exited (a child that exited is a zombie until the server reaps it)."""
        if self.codes is not None:
            return False
        try:
            stat = Path(f"/proc/{self.pids[i]}/stat").read_text()
        except FileNotFoundError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"

    def line(self, i: int, n: int, seconds: float = 1800) -> str:
        """Line `n` (from 0) of child `i`'s stdout, waited for while the child lives."""
        _, out, err = self.files[i]
        deadline = time.monotonic() + seconds
        while True:
            lines = out.read_text().splitlines(keepends=True) if out.exists() else []
            if len(lines) > n and lines[n].endswith("\n"):
                return lines[n]
            assert self.alive(i), f"child {i} exited without line {n}:\n{err.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"child {i} wrote no line {n} in {seconds} s"
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the children that still run (each by its pid; the server reaps them)."""
        for i, pid in enumerate(self.pids):
            if self.alive(i):
                os.kill(pid, signal.SIGKILL)

    def wait(self) -> list[subprocess.CompletedProcess]:
        """Wait for every child; what `subprocess.run(..., capture_output=True, text=True)`
        would return for each."""
        if self.codes is None:
            self.codes = list(json.loads(self.server.report()))
            self.server.running = None
        return [
            subprocess.CompletedProcess(argv, code, out.read_text(), err.read_text())
            for (argv, out, err), code in zip(self.files, self.codes, strict=True)
        ]


@contextmanager
def fork_server(scratch: Path, modules: Sequence[str]) -> Iterator[ForkServer]:
    """A fork server that imported `modules`; stopped (and its children reaped) on exit."""
    scratch.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, *modules],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout
        hello = process.stdout.readline()
        assert hello, f"the fork server did not start (exit {process.wait()})"
        yield ForkServer(process, scratch, json.loads(hello)["threads"])
    finally:
        if process.stdin:
            process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
