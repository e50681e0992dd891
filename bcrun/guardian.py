"""A small process that keeps a build going if bcrun is killed (SIGKILL).

bcrun's own clean-up covers every way it ends but SIGKILL.  Two things of
the build then depend on bcrun's process: jobserver clients it may have
stopped for a moment (bcrun.reclaim), and, with cargo's routed pool, the pipe
the build gives its tokens back into, which only bcrun reads (without a
reader the build's next token dies with SIGPIPE or EPIPE).  The guardian,
started by the pool, holds copies of those pipes and waits on a pipe from
bcrun.  When bcrun ends it says so first, and the guardian just exits; when
bcrun dies, the guardian sees end of file without that word, continues the
clients it was told of, and passes returned tokens back to the build until
the build lets go of the pipe.  It ignores the signals that end builds: it
ends when bcrun does, or with the build.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys

#: The guardian's program: argv holds the two descriptors to forward from
#: and to, if any; stdin gives pids to continue, then "end" on a clean exit.
PROGRAM = """
import os, signal, sys
for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTERM):
    signal.signal(sig, signal.SIG_IGN)
pids, clean = set(), False
for line in sys.stdin:
    if line == "end\\n":
        clean = True
        break
    pids.add(int(line))
if not clean:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except OSError:
            pass
    if len(sys.argv) == 3:
        back, out = int(sys.argv[1]), int(sys.argv[2])
        while True:
            data = os.read(back, 4096)
            if not data:
                break
            try:
                os.write(out, data)
            except OSError:
                break
"""


class Guardian:
    """The guardian of one build: started at once when it must forward a
    pipe, else with the first client to protect."""

    def __init__(self, forward: tuple[int, int] | None = None) -> None:
        self.forward = forward
        self._process: subprocess.Popen[bytes] | None = None
        if forward is not None:
            self._start()

    def protect(self, pid: int) -> None:
        """Continue *pid* should bcrun die."""
        if self._process is None:
            self._start()
        self._say(f"{pid}\n")

    def close(self) -> None:
        """bcrun is ending cleanly: the guardian ends without acting."""
        if self._process is None:
            return
        self._say("end\n")
        with contextlib.suppress(OSError):
            assert self._process.stdin is not None
            self._process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=2)
        self._process = None

    def _start(self) -> None:
        fds = self.forward or ()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-c", PROGRAM, *map(str, fds)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                pass_fds=fds,
            )
        except OSError:
            self._process = None  # bcrun's own clean-up still covers the rest

    def _say(self, line: str) -> None:
        if self._process is None or self._process.stdin is None:
            return
        with contextlib.suppress(OSError):
            self._process.stdin.write(line.encode())
            self._process.stdin.flush()
