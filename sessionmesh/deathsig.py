"""Run a command that gets SIGTERM when its launcher dies, however the launcher dies.

    python -S deathsig.py LAUNCHER_PID COMMAND [ARG ...]

Sets PR_SET_PDEATHSIG, then checks that the launcher is still its parent: a launcher killed
between starting this and the prctl would otherwise leave the command running as an orphan
(util-linux's setpriv --pdeathsig has that window, and under load it was hit). Then execs the
command, which keeps the setting. Standard library only and run with -S, so it starts fast.
(Setting PR_SET_PDEATHSIG from Python in the forked child, as preexec_fn does, is not safe in
a process with threads, gRPC's and Playwright's: it crashed children now and then.)
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    launcher, command = int(argv[0]), argv[1:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != launcher:
        sys.exit(0)  # the launcher died before the prctl: its children must not outlive it
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
