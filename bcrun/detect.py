"""Which control a build command gets: the protocol, a jobserver, or none.

``--via auto`` looks at the program COMMAND runs:

1. its executable holds the string ``BUILDSOCKET``: a patched tool, which
   gets the protocol (a patched BSD make without -j leaves its compat mode
   for it, with a notice);
2. GNU make 4.2 or later (``make --version``): a jobserver on a pipe, on
   a fifo from 4.4 (braked while shrinking: see bcrun.jobserver);
3. ninja 1.13 or later (``ninja --version``): a jobserver on a fifo;
4. cargo: a jobserver on two pipes, which bcrun routes;
5. ``cmake --build DIR``: what the build tool in DIR's CMakeCache.txt gets;
6. anything else: no control of its own (said under -v); BUILDSOCKET is
   set all the same, so that patched tools it runs obey.

A jobserver client leaves the pool when told its own job count, so a jobserver
plan also says which arguments and variables to remove (with a notice each,
shown under -v).

A command that runs no job (``make -n``, ``-q``, ``--version``...) or asks
for a serial build (``make -j1``) gets nothing: bcrun runs it as it is
(plan ``direct``), so that ``alias make='bcrun make'`` changes nothing of
what it does, prints or returns.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bcrun.errors import ConfigError

if TYPE_CHECKING:
    from bcrun.jobserver import Style

Via = Literal["protocol", "jobserver", "none", "direct"]

#: The command-line dialect of a tool: GNU make's, ninja's (samurai's too)
#: or BSD make's.
Dialect = Literal["gnu", "ninja", "bsd"]

#: Each dialect's short options that take an argument: the rest of the
#: word, else the next word (from their getopt strings).
_ARGUMENT_OPTIONS: dict[Dialect, frozenset[str]] = {
    "gnu": frozenset("CfIoWE"),
    "ninja": frozenset("Cdfjkltw"),
    "bsd": frozenset("CDIJTVdfjmv"),
}

#: GNU make's options whose argument is optional: the rest of the word only
#: (``-Oline``, ``-l2``, ``-j4``).
_OPTIONAL_ARGUMENTS = frozenset("jlO")

#: Where a j in a word of short options is a -j of its own: after none of
#: these (the options, -j aside, that take an argument).
_BEFORE_J: dict[Dialect, frozenset[str]] = {
    dialect: (options | (_OPTIONAL_ARGUMENTS if dialect == "gnu" else set())) - {"j"}
    for dialect, options in _ARGUMENT_OPTIONS.items()
}

#: The dialect of a tool known by its name (ninja's as ninja-*, too).
_DIALECTS: dict[str, Dialect] = {
    "make": "gnu",
    "gmake": "gnu",
    "ninja": "ninja",
    "samu": "ninja",
    "bmake": "bsd",
}

#: Programs that join an inherited GNU make jobserver wherever they run in
#: a build (ninja under make, make under ninja): each is counted, for the
#: tokens its jobs hold, and braked while tokens are owed.
JOBSERVER_CLIENTS = frozenset({"make", "gmake", "ninja", "cargo"})

#: The reason of a plan for a command that does not exist: the launcher
#: says so, with status 127.
NOT_FOUND = "not found"


class Plan:
    """How one build is controlled, and why; filled by :func:`plan`.  (A
    plain class: a dataclass's import would cost bcrun's start-up several
    milliseconds.)"""

    def __init__(
        self,
        via: Via,
        tool: str,
        reason: str,
        style: Style | None = None,
        argv: list[str] | None = None,
        *,
        clients: frozenset[str] = frozenset(),
    ) -> None:
        self.via = via
        self.tool = tool
        self.reason = reason
        self.style = style
        self.argv = argv or []
        #: Variables to remove from the build's environment.
        self.unset: list[str] = []
        #: MAKEFLAGS as the build should see it, without any -j or jobserver.
        self.makeflags: str | None = None
        #: The -jN taken from the command line, to start with.
        self.jobs: int | None = None
        #: Whether the command line gave a count (-jN, or -j: unlimited),
        #: which a count in MAKEFLAGS does not override.
        self.counted = False
        #: Names of the jobserver clients whose direct children are jobs, for
        #: counting the tokens the build holds (none for cargo: rustc takes
        #: tokens of its own).
        self.clients = clients
        #: The option that asks for a serial build (``-j1``), if any.
        self.serial: str | None = None
        self.notices: list[str] = []

    def __repr__(self) -> str:
        return f"Plan({self.via!r}, {self.tool!r}, {self.reason!r}, {self.style!r})"

    def explain(self) -> str:
        how = {
            "protocol": "the build-control protocol",
            "none": "no control",
            "direct": "run as it is",
        }.get(self.via, f"a jobserver ({self.style})")
        return f"{self.tool}: {how}: {self.reason}"


def program_path(name: str) -> Path | None:
    found = shutil.which(name)
    return Path(found).resolve() if found else None


def reads_buildsocket(path: Path) -> bool:
    """Whether the executable at *path* mentions BUILDSOCKET: a patched tool."""
    return _holds(path, b"BUILDSOCKET")


def _holds(path: Path, needle: bytes) -> bool:
    # Mapped, not read: cargo's executable alone is tens of megabytes.
    import mmap  # only for a program not in ProgramFacts

    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            return m.find(needle) >= 0
    except (OSError, ValueError):  # ValueError: an empty file
        return False


def _says_buildsocket(path: Path) -> str:
    return "yes" if reads_buildsocket(path) else "no"


def _says_bsd_make(path: Path) -> str:
    """Whether *path* is a BSD make: only it has .MAKE.JOBS."""
    return "yes" if _holds(path, b".MAKE.JOBS") else "no"


def tool_version(path: Path) -> str:
    """The first line of ``PROGRAM --version``, or '' if it does not say."""
    import subprocess  # only when the program is not in the cache

    try:
        result = subprocess.run(
            [str(path), "--version"],
            capture_output=True,
            text=True,
            timeout=5,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = (result.stdout or result.stderr).splitlines()
    return lines[0].strip() if lines else ""


class ProgramFacts:
    """What bcrun learnt of each program it was asked to run: whether it
    reads BUILDSOCKET, the first line of its ``--version``.  Finding out
    costs each build's start a few milliseconds (running ``make
    --version``; mapping cargo's tens of megabytes), so it is kept in
    ``$XDG_CACHE_HOME/bcrun/programs`` for as long as the file stays the
    same (device, inode, size, modification and change times); a cache that
    cannot be read or written is done without.

    The file holds a heading line, then a line per program: its path, its
    identity and its facts (``name=value``), separated by tabs.
    """

    HEADING = "bcrun programs 1"
    #: Programs remembered; the ones learnt first are forgotten first.
    MOST = 64

    def __init__(self, environ: Mapping[str, str]) -> None:
        base = environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        self.path = Path(base) / "bcrun" / "programs"
        self._programs: dict[str, dict[str, str]] | None = None
        self._changed = False

    def get(self, program: Path, name: str, find: Callable[[Path], str]) -> str:
        """The fact *name* of *program*: remembered, or found by *find*."""
        key = str(program)
        try:
            st = os.stat(program)
        except OSError:
            return find(program)
        if "\t" in key or "\n" in key:
            # Kept on one line, between tabs: not such a path.
            return find(program)
        identity = (
            f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"
        )
        programs = self._load()
        entry = programs.get(key)
        if entry is None or entry.get("") != identity:
            entry = programs[key] = {"": identity}
        if name not in entry:
            # Kept on one line, between tabs.
            entry[name] = " ".join(find(program).split())
            self._changed = True
        return entry[name]

    def _load(self) -> dict[str, dict[str, str]]:
        if self._programs is None:
            self._programs = {}
            with contextlib.suppress(OSError, UnicodeError):
                lines = self.path.read_text(encoding="utf-8").split("\n")
                if lines[0] == self.HEADING:
                    for line in lines[1:]:
                        key, _, rest = line.partition("\t")
                        identity, *facts = rest.split("\t")
                        entry = {"": identity}
                        entry.update(fact.partition("=")[::2] for fact in facts)
                        self._programs[key] = entry
        return self._programs

    def __enter__(self) -> ProgramFacts:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._changed or self._programs is None:
            return
        lines = [self.HEADING]
        for key, entry in list(self._programs.items())[-self.MOST :]:
            facts = [f"{name}={value}" for name, value in entry.items() if name]
            lines.append("\t".join([key, entry[""], *facts]))
        work = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            work.write_text("\n".join(lines), encoding="utf-8")
            # Published by one rename: another bcrun reads the old or the new.
            os.replace(work, self.path)
        with contextlib.suppress(OSError):
            os.unlink(work)


def _version_tuple(text: str) -> tuple[int, ...]:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return ()
    return tuple(int(part) for part in match.groups() if part is not None)


def plan(
    argv: Sequence[str],
    env: Mapping[str, str],
    via: str = "auto",
    count_given: bool = False,
) -> Plan:
    """Decide how to control *argv*; *via* is what the user asked for, and
    *count_given* whether bcrun was given a -j of its own."""
    if via == "protocol":
        name = os.path.basename(argv[0])
        result = Plan(
            "protocol", name, "asked for with --via protocol", argv=list(argv)
        )
        dialect = _dialect_of(name)
        if dialect is not None:
            result.jobs, _ = _own_count(result.argv, env, dialect)
        return result
    with ProgramFacts(env) as facts:
        result = _detect(list(argv), env, facts, as_is=via == "auto")
    if via == "jobserver" and result.via != "jobserver":
        raise ConfigError(
            f"--via jobserver: {result.tool} cannot be driven through a jobserver "
            f"({result.reason})"
        )
    if result.via == "protocol" and result.serial is not None and not count_given:
        # As make alone would run it: behind an alias, -j1 means serial.
        why = f"{result.serial} asks for a serial build"
        return Plan("direct", result.tool, why, argv=list(argv))
    if result.via == "jobserver" and _enclosing_jobserver(env):
        why = "it obeys the jobserver of an enclosing make (MAKEFLAGS)"
        if via == "jobserver":
            raise ConfigError(
                f"--via jobserver: {why}: run bcrun around the outer build instead"
            )
        return Plan("none", result.tool, why, argv=result.argv)
    if result.via == "jobserver":
        _strip_overrides(result, env)
        if result.serial is not None:
            # The user asked for one job at a time: a jobserver cannot
            # promise that (each client runs a job without a token), and
            # make alone gives it.
            if via == "jobserver":
                raise ConfigError(
                    f"--via jobserver: {result.serial} asks for a serial build, "
                    "which a jobserver cannot promise: drop it, or use bcrun -j 1"
                )
            why = f"{result.serial} asks for a serial build"
            return Plan("direct", result.tool, why, argv=list(argv))
    return result


def _enclosing_jobserver(env: Mapping[str, str]) -> bool:
    return bool(re.search(r"--jobserver-(auth|fds)=", env.get("MAKEFLAGS", "")))


def _detect(
    argv: list[str], env: Mapping[str, str], facts: ProgramFacts, as_is: bool = True
) -> Plan:
    """How *argv* obeys; with *as_is*, a command that runs no job is run
    as it is."""
    path = program_path(argv[0])
    name = os.path.basename(argv[0])
    if path is None:
        return Plan("none", name, NOT_FOUND, argv=argv)
    if name == "cmake" and "--build" in argv:
        return _detect_cmake(argv, env, facts)
    if facts.get(path, "buildsocket", _says_buildsocket) == "yes":
        return _detect_patched(argv, env, facts, path, as_is)
    version = facts.get(path, "version", tool_version)
    ninja = _dialect_of(name) == "ninja"
    if version.startswith("GNU Make"):
        number = _version_tuple(version)
        tool = f"GNU make {'.'.join(map(str, number))}"
        idle = _runs_no_job(argv, env, "gnu") if as_is else None
        if idle is not None:
            return Plan("direct", tool, f"{idle} runs no job", argv=argv)
        if number >= (4, 2):
            # 4.4 takes a fifo, which a ninja it runs can join too.
            return Plan(
                "jobserver",
                tool,
                "a jobserver client",
                "fifo" if number >= (4, 4) else "pipe",
                argv,
                clients=JOBSERVER_CLIENTS | {path.name},
            )
        return Plan(
            "none", tool, "older than 4.2, which --jobserver-auth needs", argv=argv
        )
    if ninja:
        number = _version_tuple(version)
        tool = f"{name} {version.split()[0] if version else '(no version)'}"
        idle = _runs_no_job(argv, env, "ninja") if as_is else None
        if idle is not None:
            return Plan("direct", tool, f"{idle} runs no job", argv=argv)
        if name.startswith("ninja") and number >= (1, 13):
            # Kitware's build (PyPI's ninja) takes pipes too.
            pipes = "jobserver-pipe" in version
            return Plan(
                "jobserver",
                tool,
                "ninja >= 1.13 is a jobserver client"
                + (" (Kitware's, pipes too)" if pipes else ""),
                "pipe" if pipes else "fifo",
                argv,
                clients=JOBSERVER_CLIENTS | {path.name},
            )
        return Plan("none", tool, "unpatched, and no jobserver client", argv=argv)
    if name == "cargo":
        return Plan(
            "jobserver",
            "cargo",
            "cargo joins an inherited jobserver (routed pipes: its threads "
            "cannot be braked)",
            "pipe",
            argv,
        )
    return Plan(
        "none",
        name,
        "neither a patched tool nor GNU make, ninja >= 1.13 or cargo",
        argv=argv,
    )


def _detect_patched(
    argv: list[str],
    env: Mapping[str, str],
    facts: ProgramFacts,
    path: Path,
    as_is: bool,
) -> Plan:
    """How a patched tool obeys.  Its own -jN is the count it starts at and
    stays on its command line (without a controller it is the tool's count);
    a -j1 asks for a serial build, which :func:`plan` runs as it is unless
    bcrun is given a count of its own."""
    name = os.path.basename(argv[0])
    result = Plan("protocol", name, "it reads BUILDSOCKET: a patched tool", argv=argv)
    dialect: Dialect
    # Only BSD make has .MAKE.JOBS; its patch obeys with or without -j.
    if facts.get(path, "bsd-make", _says_bsd_make) == "yes":
        dialect = "bsd"
        result.reason += "; BSD make follows any count up to 1024, whatever its -j"
    elif _dialect_of(name) == "ninja":
        dialect = "ninja"
    elif facts.get(path, "version", tool_version).startswith("GNU Make"):
        dialect = "gnu"
    else:
        return result  # a tool whose options bcrun does not know
    idle = _runs_no_job(argv, env, dialect) if as_is else None
    if idle is not None:
        return Plan("direct", name, f"{idle} runs no job", argv=argv)
    if dialect == "bsd":
        result.notices += _bsd_make_notices(argv, env)
    result.jobs, result.serial = _own_count(argv, env, dialect)
    return result


def _own_count(
    argv: list[str], env: Mapping[str, str], dialect: Dialect
) -> tuple[int | None, str | None]:
    """The count a tool of *dialect* takes from its command line, else from
    its variable (MAKEFLAGS, samurai's SAMUFLAGS), read as a jobserver's
    plan would take them off; and the option asking for a serial build."""
    read = Plan("protocol", "", "", argv=argv)
    _strip_jobs(read, "--jobs", _BEFORE_J[dialect])
    if dialect != "ninja":
        _clean_makeflags(env.get("MAKEFLAGS", ""), read, dialect)
    elif os.path.basename(argv[0]) == "samu":
        _clean_makeflags(env.get("SAMUFLAGS", ""), read, dialect)
    return read.jobs, read.serial


def _dialect_of(name: str) -> Dialect | None:
    """The dialect of the tool called *name*, if bcrun knows it by name."""
    return "ninja" if name.startswith("ninja") else _DIALECTS.get(name)


def _options(
    words: Sequence[str],
    arguments: Collection[str],
    long_arguments: Collection[str] = (),
    optional: Collection[str] = (),
) -> Iterator[str]:
    """The options of *words* up to ``--``: each short one as ``-x``
    (``-kj4``: ``-k``, ``-j``), each long one by its name; the arguments of
    *arguments* (the rest of the word, else the next word), of *optional*
    (the rest of the word) and of *long_arguments* (after ``=``, else the
    next word) skipped."""
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        if word == "--":
            return
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            yield name
            skip = name in long_arguments and "=" not in word
        elif word.startswith("-"):
            for pos, letter in enumerate(word[1:]):
                yield f"-{letter}"
                if letter in arguments:
                    skip = pos == len(word) - 2
                    break
                if letter in optional:
                    break


def _bsd_make_notices(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """What a patched BSD make does differently under bcrun: without -j it
    runs its job engine, not compat mode (patches/bmake/NOTES.md)."""
    arguments = _ARGUMENT_OPTIONS["bsd"]
    flags = {*_options(argv[1:], arguments)}
    flags.update(_options(env.get("MAKEFLAGS", "").split(), arguments))
    if "-B" in flags:
        return ["-B: BSD make's compat mode is not controlled (no count applies)"]
    if "-j" not in flags:
        return [
            "no -j: BSD make runs its job engine at the count rather than compat "
            "mode: each target's commands run in one shell, as with -j "
            "(-B keeps compat mode, uncontrolled)"
        ]
    return []


def _detect_cmake(argv: list[str], env: Mapping[str, str], facts: ProgramFacts) -> Plan:
    where = argv[argv.index("--build") + 1] if argv[-1] != "--build" else "."
    cache = Path(where) / "CMakeCache.txt"
    try:
        text = cache.read_text(errors="replace")
    except OSError:
        return Plan(
            "none", "cmake --build", f"no {cache} to tell its generator", argv=argv
        )
    match = re.search(r"^CMAKE_MAKE_PROGRAM:\w+=(.*)$", text, re.MULTILINE)
    if not match:
        return Plan(
            "none", "cmake --build", f"{cache} names no build program", argv=argv
        )
    inner = _detect([match.group(1).strip(), *argv[1:]], env, facts)
    inner.tool = f"cmake --build ({inner.tool})"
    inner.argv = argv
    return inner


# -- overrides ------------------------------------------------------------


def _strip_overrides(result: Plan, env: Mapping[str, str]) -> None:
    """Remove what would make the build leave bcrun's jobserver."""
    name = os.path.basename(result.argv[0])
    if name == "cmake":
        result.argv = _strip_jobs(result, "--parallel")
        if "CMAKE_BUILD_PARALLEL_LEVEL" in env:
            level = env["CMAKE_BUILD_PARALLEL_LEVEL"]
            if result.jobs is None and level.strip() == "1":
                result.serial = "CMAKE_BUILD_PARALLEL_LEVEL=1"
            result.unset.append("CMAKE_BUILD_PARALLEL_LEVEL")
            result.notices.append(
                "removed CMAKE_BUILD_PARALLEL_LEVEL: cmake would pass -j and escape the jobserver"
            )
    elif name != "cargo":
        dialect = _dialect_of(name) or "gnu"
        result.argv = _strip_jobs(result, "--jobs", _BEFORE_J[dialect])
    # A count in MAKEFLAGS is make's (cmake's too, which may run make), and
    # the jobserver's to replace.
    makes = name != "cargo" and _dialect_of(name) != "ninja"
    result.makeflags = _clean_makeflags(env.get("MAKEFLAGS", ""), result, count=makes)


def _take_jobs(result: Plan, value: str | None, shown: str) -> None:
    # The last count given wins, as in make; -j alone is no count.
    result.counted = True
    result.jobs = int(value) if value is not None and value.isdigit() else None
    result.serial = shown if result.jobs == 1 else None
    result.notices.append(
        f"took {shown} off the command line: bcrun's jobserver sets the count"
    )


def _strip_jobs(
    result: Plan, long: str, before_j: frozenset[str] | None = None
) -> list[str]:
    """*result*'s arguments without ``-j [N]``, ``-jN``, ``LONG [N]`` and
    ``LONG=N``; with *before_j*, the options that take an argument, also
    the j of short options run together (``-kj4`` -> ``-k``)."""
    argv = result.argv
    out = [argv[0]]
    i = 1
    while i < len(argv):
        word = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if word == "--":
            out += argv[i:]
            break
        if word in ("-j", long):
            value = nxt if nxt is not None and nxt.isdigit() else None
            _take_jobs(result, value, f"{word} {value}" if value else word)
            i += 2 if value else 1
            continue
        if word.startswith(long + "="):
            _take_jobs(result, word.split("=", 1)[1], word)
            i += 1
            continue
        kept, value = (
            _split_short(word, before_j) if before_j is not None else (word, None)
        )
        if before_j is None and re.fullmatch(r"-j\d+", word):
            kept, value = "-", word[2:]
        if value is not None:
            shown = word
            if value == "" and nxt is not None and nxt.isdigit():
                value, shown = nxt, f"{word} {nxt}"
                i += 1
            _take_jobs(result, value or None, shown)
            if kept != "-":
                out.append(kept)
            i += 1
            continue
        out.append(word)
        i += 1
    return out


def _split_short(word: str, before_j: frozenset[str]) -> tuple[str, str | None]:
    """``-kj8`` -> (``-k``, ``8``); a j inside the argument of an option of
    *before_j* stays; None when *word* holds no -j."""
    if not word.startswith("-") or word.startswith("--"):
        return word, None
    letters = word[1:]
    for pos, letter in enumerate(letters):
        if letter == "j":
            digits = re.match(r"\d*", letters[pos + 1 :])
            value = digits.group(0) if digits else ""
            rest = letters[pos + 1 + len(value) :]
            return "-" + letters[:pos] + rest, value
        if letter in before_j:
            break
    return word, None


def _clean_makeflags(
    makeflags: str, result: Plan, dialect: Dialect = "gnu", count: bool = True
) -> str:
    """MAKEFLAGS (or samurai's SAMUFLAGS) without a job count, for a tool of
    *dialect*.  With *count*, the count there is *result*'s, unless the
    command line gave one (which the tool obeys): make reads it, ninja
    does not."""
    words = makeflags.split()
    kept: list[str] = []
    commanded = result.counted or result.serial is not None
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            kept += words[i - 1 :]  # the variables of an enclosing GNU make
            break
        # GNU make writes its single-letter flags first, without a dash.
        letters = (
            dialect == "gnu" and i == 1 and not word.startswith("-") and "=" not in word
        )
        value: str | None
        if re.fullmatch(r"--jobs(=\d*)?", word):
            rest, value = "-", word.partition("=")[2]
        else:
            flags = "-" + word if letters else word
            rest, value = _split_short(flags, _BEFORE_J[dialect])
        if value is None:
            kept.append(word)
            continue
        shown = word
        if value == "" and i < len(words) and words[i].isdigit():
            value, shown = words[i], f"{word} {words[i]}"  # BSD make's "-j 4"
            i += 1
        if count and not commanded:
            result.jobs = int(value) if value else None
            result.serial = f"{shown} in MAKEFLAGS" if result.jobs == 1 else None
        result.notices.append(
            f"took {shown} out of MAKEFLAGS: bcrun's jobserver sets the count"
        )
        if rest != "-":
            kept.append(rest[1:] if letters else rest)
    return " ".join(kept)


# -- commands that run no job ------------------------------------------------

#: GNU make's options after which it runs no job: it says whether the
#: targets are up to date, prints what it would run, marks files up to date,
#: or prints its version or help (make(1)).  And -p: it prints make's
#: database (the environment and MAKEFLAGS included), then builds as usual;
#: run as it is, the database is the makefiles' own, not bcrun's too.
_MAKE_IDLE_LETTERS = "qntvhp"
_MAKE_IDLE_LONG = frozenset(
    {"--question", "--just-print", "--dry-run", "--recon", "--touch"}
    | {"--version", "--help", "--print-data-base"}
)
#: Long options of GNU make whose argument may be the next word.
_MAKE_LONG_ARGUMENTS = frozenset(
    {"--directory", "--file", "--makefile", "--include-dir", "--old-file"}
    | {"--assume-old", "--new-file", "--assume-new", "--what-if", "--eval"}
)
#: ninja's (and samurai's): a dry run, a subtool, the help; -v is --verbose.
_NINJA_IDLE_LETTERS = "nth"
_NINJA_IDLE_LONG = frozenset({"--version", "--help"})
#: BSD make's: -n, -q and -t as GNU make's, and -V and -v, which print
#: variables and build nothing (bmake(1)).
_BSD_MAKE_IDLE_LETTERS = "nqtVv"


def _runs_no_job(
    argv: Sequence[str], env: Mapping[str, str], dialect: Dialect
) -> str | None:
    """The option of *argv*, or of MAKEFLAGS, after which a tool of
    *dialect* runs no job; None if it builds."""
    long_arguments: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()
    if dialect == "ninja":
        idle, idle_long = _NINJA_IDLE_LETTERS, _NINJA_IDLE_LONG
    elif dialect == "bsd":
        idle, idle_long = _BSD_MAKE_IDLE_LETTERS, frozenset()
    else:
        idle, idle_long = _MAKE_IDLE_LETTERS, _MAKE_IDLE_LONG
        long_arguments, optional = _MAKE_LONG_ARGUMENTS, _OPTIONAL_ARGUMENTS
    idle_options = {f"-{letter}" for letter in idle} | idle_long
    arguments = _ARGUMENT_OPTIONS[dialect]
    for option in _options(argv[1:], arguments, long_arguments, optional):
        if option in idle_options:
            return option
    if dialect == "gnu":
        # The flags an enclosing make passes on: single letters first.
        first = env.get("MAKEFLAGS", "").split()[:1]
        if first and not first[0].startswith("-") and "=" not in first[0]:
            for letter in first[0]:
                if letter in "qntp":
                    return f"-{letter} (MAKEFLAGS)"
    return None
