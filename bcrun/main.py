"""bcrun's entry point.

``bcrun [OPTIONS] COMMAND`` (the common case, in front of every build) is
read by bcrun.quickargs and run by bcrun.start without importing click;
everything else goes to bcrun.cli.

Exit status: the build's own; 125 for bcrun's errors, 126 when COMMAND cannot
be run, 127 when it is not found (as nice(1) and env(1) do).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from bcrun.errors import BcrunError, LaunchError
from bcrun.launcher import ExitStatus, exit_like
from bcrun.quickargs import quick_request
from bcrun.start import EXIT_ERROR, run


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the command line, exit as the build or bcrun says."""
    args = list(sys.argv[1:] if argv is None else argv)
    request = quick_request(args, os.environ)
    if request is None:
        from bcrun import cli

        cli.main(args)
    try:
        result = run(request)
        sys.stdout.flush()  # --explain's lines, where a reader gone shows
    except BcrunError as err:
        fail(err)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # What read --explain's lines has gone (| head -1): end as a tool
        # killed by SIGPIPE, with nothing more to flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + 13)
    finish(result)


def fail(err: BcrunError | str, code: int = EXIT_ERROR) -> NoReturn:
    """Say bcrun's error in one line and exit: with a LaunchError's status,
    else *code*."""
    if isinstance(err, LaunchError):
        code = err.exit_code
    print(f"bcrun: {err}", file=sys.stderr)
    sys.exit(code)


def finish(result: ExitStatus | int | None) -> NoReturn:
    """Exit as the build ended, or with *result*'s status."""
    if isinstance(result, ExitStatus):
        exit_like(result)
    sys.exit(result if isinstance(result, int) else 0)
