"""bcrun under load, at a larger scale than tests/integration/test_load.py.

    python3 -m bench.load [--clients N] [--changes K] [--hostile N]
                          [--seconds S] [--interval S]

Two scenarios, each with a real bcrun in a runtime directory of its own
(tests/helpers.py) and the connection-making clients of tests/loadclients.py:

- fan-out: one build process holding --clients connections (opened 128 at
  a time, under bcrun's 256 waiting for their token); --changes counts are
  set the way ``bcrun jobs N`` sets them, each timed from just before the
  command to the clients' own receive times;
- flood: --hostile connections opened over --seconds by another process
  (silent, one byte a second, garbage, wrong tokens, connect-and-drop) while
  the build's own client (tests/buildclient.py) gets a change every
  --interval seconds; bcrun's descriptors and RSS are sampled every 5 ms.

Prints one markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import Bcrun
from tests.loadclients import Skip, fanout, flood


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def with_bcrun(function, *args, **kwargs):  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory(prefix="bcrun-load-") as tmp:
        runner = Bcrun(Path(tmp))
        # bcrun.control looks for the instance where the children put it.
        os.environ["XDG_RUNTIME_DIR"] = runner.env["XDG_RUNTIME_DIR"]
        os.environ["TMPDIR"] = runner.env["TMPDIR"]
        try:
            return function(runner, *args, **kwargs)
        finally:
            runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--clients", type=int, default=4000)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--hostile", type=int, default=30_000)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--interval", type=float, default=0.25)
    args = parser.parse_args()
    counts = [2 + i % 9 for i in range(args.changes)]
    try:
        fan = with_bcrun(fanout, args.clients, counts, timeout=60.0)
        fl = with_bcrun(flood, args.hostile, args.seconds, interval=args.interval)
    except Skip as why:
        print(f"skipped: {why}")
        return 0
    lasts = [last for _, _, last in fan.changes]
    delays = [delay for _, delay in fl.delays]
    rows = [
        ("clients of one build", f"{fan.clients}"),
        (
            f"last client gets a change (p50 / max of {len(lasts)})",
            f"{ms(statistics.median(lasts))} / {ms(max(lasts))}",
        ),
        ("hostile connections tried", f"{fl.hostile['tried']}"),
        ("  over", f"{fl.hostile['seconds']} s (opening: {args.seconds} s)"),
        ("  backlog full (EAGAIN, retried)", f"{fl.hostile['backlog_full']}"),
        ("  most open at once (attacker's side)", f"{fl.hostile['max_open']}"),
        ("bcrun peak fds (at start)", f"{fl.peak_fds} ({fl.base_fds})"),
        (
            "bcrun peak RSS (at start)",
            f"{fl.peak_rss_kib / 1024:.1f} MiB ({fl.base_rss_kib / 1024:.1f} MiB)",
        ),
        (
            f"own client's delay (p50 / max of {len(delays)})",
            f"{ms(statistics.median(delays))} / {ms(max(delays))}"
            if delays
            else "none measured",
        ),
        ("control commands that failed", f"{len(fl.control_errors)}"),
        ("bcrun stderr lines", f"{len(fl.stderr.splitlines())}"),
    ]
    print("| measure | value |")
    print("| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    for error in fl.control_errors:
        print(f"\ncontrol error: {error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
