"""Remote capacity: the job slots of a distributed compiler's hosts, read
from what the engine people already run keeps, never from a cluster of
bcrun's own.

- distcc: its host list (``DISTCC_HOSTS``, else ``$DISTCC_DIR/hosts``,
  else ``/etc/distcc/hosts``), slots per host (``/N``; 4 by default, as
  distcc(1) says), each TCP host probed for an answer;
- icecream: the scheduler's monitor port, next to its own (``listcs``:
  each compile server's job limit), when ``ICECC_SCHEDULER`` or
  ``USE_SCHEDULER`` names it, else the daemon's configuration
  (``ICECC_SCHEDULER_HOST`` in ``/etc/icecc/icecc.conf``, as Debian has it,
  or ``ICECREAM_SCHEDULER_HOST`` in ``/etc/sysconfig/icecream``); it needs
  no root;
- sccache-dist: ``sccache --dist-status`` (JSON: the scheduler's CPUs).

A build uses one when its command line or environment names the engine
(``CC='distcc gcc'``, ``CC=icecc``, ``RUSTC_WRAPPER=sccache``) or its PATH
starts with the engine's masquerade directory.  Parsers take text;
:func:`read_remote` does the I/O, with short timeouts, and is meant to be
run every few seconds off the event loop (a host that leaves or joins is
seen at the next read).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from bcrun.proc import read_text

#: distcc's defaults (distcc(1), HOST SPECIFICATIONS).
DISTCC_PORT = 3632
DISTCC_SLOTS = 4
DISTCC_LOCAL_SLOTS = 2

#: The icecream scheduler's monitor (telnet) port.
ICECREAM_MONITOR_PORT = 8766

#: Seconds a host has to answer before it counts as gone.
PROBE_TIMEOUT_S = 1.0

ENGINES = ("distcc", "icecc", "sccache")


class Remote(NamedTuple):
    """What the engine offers now."""

    engine: str
    #: Job slots of the remote hosts that answer.
    slots: int
    #: For --explain, status and reasons: "distcc: 2 of 3 hosts, 8 slots".
    source: str


@dataclass(frozen=True)
class DistccHost:
    host: str
    port: int
    slots: int
    #: Reached over ssh: not probed (an ssh login is no probe).
    ssh: bool = False


def parse_distcc_hosts(text: str) -> list[DistccHost]:
    """The remote hosts of a distcc host list: ``host``, ``host:port``,
    ``host/N``, ``host:port/N,lzo,cpp``, ``user@host/N`` (ssh), ``[v6]:port``;
    ``localhost`` entries (the local machine), global options (``--randomize``,
    ``--localslots=N``) and ``#`` comments are left out."""
    hosts = []
    for line in text.splitlines():
        for spec in line.partition("#")[0].split():
            if spec.startswith(("--", "+")):
                continue
            spec = spec.split(",")[0]
            ssh = "@" in spec
            spec = spec.rpartition("@")[2]
            slots = DISTCC_SLOTS
            host_port, slash, rest = spec.partition("/")
            if slash:
                # host/N or the old style host/N:port.
                limit, _, old_port = rest.partition(":")
                slots = int(limit) if limit.isdigit() else DISTCC_SLOTS
                if old_port.isdigit():
                    host_port = f"{host_port}:{old_port}"
            host, port = _host_port(host_port)
            if host in ("localhost", ""):
                continue
            if ssh:
                port = 0
            hosts.append(DistccHost(host, port, max(slots, 1), ssh))
    return hosts


def _host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    return host, int(port) if port.isdigit() else DISTCC_PORT


def distcc_hosts_text(env: Mapping[str, str]) -> tuple[str, str] | None:
    """distcc's host list and where it came from, in distcc's order."""
    if env.get("DISTCC_HOSTS"):
        return env["DISTCC_HOSTS"], "DISTCC_HOSTS"
    home = env.get("DISTCC_DIR") or str(Path(env.get("HOME", "/")) / ".distcc")
    for path in (Path(home) / "hosts", Path("/etc/distcc/hosts")):
        text = read_text(path)
        if text is not None:
            return text, str(path)
    return None


#: Where icecream's daemon is configured, and the variable naming the
#: scheduler there (Debian's package, then openSUSE's and Fedora's).
ICECREAM_CONFIGS = (
    ("/etc/icecc/icecc.conf", "ICECC_SCHEDULER_HOST"),
    ("/etc/sysconfig/icecream", "ICECREAM_SCHEDULER_HOST"),
)


def icecream_scheduler(
    env: Mapping[str, str], configs: Sequence[tuple[str, str]] = ICECREAM_CONFIGS
) -> tuple[str, str] | None:
    """The scheduler's ``host[:port]`` and where it was named: the
    environment, else the daemon's configuration.  None where neither names
    one (the daemons then find it by broadcast, which bcrun does not do)."""
    for name in ("ICECC_SCHEDULER", "USE_SCHEDULER"):
        if env.get(name):
            return env[name], name
    for path, name in configs:
        text = read_text(path)
        host = parse_shell_assignment(text, name) if text is not None else None
        if host:
            return host, path
    return None


def parse_shell_assignment(text: str, name: str) -> str | None:
    """The last value given to *name* in a shell-style file (``NAME="v"``,
    ``export NAME=v``), as the shell would read it; None when unset."""
    value = None
    for line in text.splitlines():
        key, equals, rest = line.strip().removeprefix("export ").partition("=")
        if equals and key.strip() == name:
            try:
                words = shlex.split(rest, comments=True)
            except ValueError:
                continue  # an unclosed quote: not a value the shell takes
            value = words[0] if words and not rest[:1].isspace() else ""
    return value


def parse_icecream_listcs(text: str) -> tuple[int, int]:
    """``(servers, slots)`` from the monitor's ``listcs`` answer: a line per
    compile server, `` node (ip:port) [platform] speed=S jobs=N/MAX load=L``."""
    servers = slots = 0
    for line in text.splitlines():
        for field in line.split():
            if field.startswith("jobs="):
                _, _, most = field.removeprefix("jobs=").partition("/")
                if most.isdigit():
                    servers += 1
                    slots += int(most)
    return servers, slots


def parse_sccache_dist_status(text: str) -> tuple[int, int] | None:
    """``(servers, CPUs)`` from ``sccache --dist-status``:
    ``{"SchedulerStatus": [url, {"num_servers": N, "num_cpus": C, ...}]}``;
    None when it reports no scheduler (``Disabled``, an error)."""
    status = json.loads(text)
    scheduler = status.get("SchedulerStatus") if isinstance(status, dict) else None
    if not isinstance(scheduler, list) or len(scheduler) != 2:
        return None
    figures = scheduler[1]
    return int(figures.get("num_servers", 0)), int(figures.get("num_cpus", 0))


def engine_of(argv: Sequence[str], env: Mapping[str, str]) -> str | None:
    """The distributed compiler a build uses, from its words and its
    environment; None for none."""
    words = " ".join(
        [
            *argv,
            *(env.get(name, "") for name in ("CC", "CXX", "RUSTC_WRAPPER")),
            env.get("MAKEFLAGS", ""),
        ]
    )
    path = env.get("PATH", "").split(os.pathsep)[:1]
    for engine in ENGINES:
        if engine in words or any(engine in entry for entry in path):
            return engine
    return None


def read_remote(engine: str, env: Mapping[str, str]) -> Remote | None:
    """What *engine* offers now (blocking: up to PROBE_TIMEOUT_S)."""
    if engine == "distcc":
        return _read_distcc(env)
    if engine == "icecc":
        return _read_icecream(env)
    return _read_sccache(env)


def _read_distcc(env: Mapping[str, str]) -> Remote | None:
    found = distcc_hosts_text(env)
    if found is None:
        return Remote("distcc", 0, "distcc: no host list (DISTCC_HOSTS, hosts file)")
    text, where = found
    hosts = parse_distcc_hosts(text)
    with ThreadPoolExecutor(max_workers=max(len(hosts), 1)) as pool:
        up = list(pool.map(_answers, hosts))
    slots = sum(h.slots for h, ok in zip(hosts, up, strict=True) if ok)
    return Remote(
        "distcc",
        slots,
        f"distcc ({where}): {sum(up)} of {len(hosts)} hosts, {slots} remote slots",
    )


def _answers(host: DistccHost) -> bool:
    if host.ssh:
        return True
    try:
        with socket.create_connection((host.host, host.port), PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _read_icecream(env: Mapping[str, str]) -> Remote | None:
    found = icecream_scheduler(env)
    if found is None:
        return None
    scheduler, where = found
    # The monitor listens next to the scheduler's own port (8765 + 1).
    host, _, port = scheduler.partition(":")
    address = (host, int(port) + 1 if port.isdigit() else ICECREAM_MONITOR_PORT)
    try:
        with socket.create_connection(address, PROBE_TIMEOUT_S) as sock:
            sock.settimeout(PROBE_TIMEOUT_S)
            sock.sendall(b"listcs\nquit\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return Remote(
            "icecc", 0, f"icecream ({where}): the scheduler {scheduler} does not answer"
        )
    servers, slots = parse_icecream_listcs(b"".join(chunks).decode("utf-8", "replace"))
    return Remote(
        "icecc",
        slots,
        f"icecream ({where}: {scheduler}): {servers} hosts, {slots} slots",
    )


def _read_sccache(env: Mapping[str, str]) -> Remote | None:
    program = shutil.which("sccache", path=env.get("PATH"))
    if program is None:
        return None
    try:
        done = subprocess.run(
            [program, "--dist-status"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S * 3,
            env=dict(env),
            check=False,
        )
        figures = parse_sccache_dist_status(done.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError, AttributeError):
        figures = None
    if figures is None:
        return None
    servers, cpus = figures
    return Remote("sccache", cpus, f"sccache-dist: {servers} servers, {cpus} CPUs")
