"""The private runtime directories of running bcrun instances.

Each running ``bcrun`` owns one directory, ``PARENT/PID``, mode 0700, holding
its unix socket (``sock``), a record of the build (``instance.json``, which
also holds the control token), a lock file that it keeps locked for its
whole life, and the build's process (``build``: pid and start time).  A
directory whose lock can be taken belongs to a bcrun that died (SIGKILL,
power loss): any later bcrun removes it, once the build that bcrun started
has ended too (a jobserver fifo in it may still be opened by name).

PARENT is ``$XDG_RUNTIME_DIR/bcrun`` when that is usable, else
``$TMPDIR/bcrun-UID``, else ``/tmp/bcrun-UID``; a parent that is a symbolic
link, owned by someone else or writable by others is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from bcrun.errors import RuntimeDirError
from bcrun.proc import read_stat, read_text
from bcrun.protocol import Token

SOCKET_NAME = "sock"
RECORD_NAME = "instance.json"
LOCK_NAME = "lock"
BUILD_NAME = "build"

#: sun_path holds 108 bytes on Linux, 104 on the BSDs, NUL included.
SOCKET_PATH_MAX = 103

#: A half-made directory (".new-*") older than this is debris.
DEBRIS_AGE_S = 60.0


class Instance(NamedTuple):
    """What one running bcrun tells the others about itself."""

    pid: int
    directory: Path
    argv: tuple[str, ...]
    started: float
    control_token: Token

    @property
    def socket(self) -> Path:
        return self.directory / SOCKET_NAME


def candidate_parents() -> list[Path]:
    """Where instance directories may live, best first."""
    return list(_candidates())


def _candidates() -> Iterator[Path]:
    """candidate_parents(), found as they are needed: the temporary
    directory is looked for (tempfile creates a file to find it) only if
    the runtime directory will not do."""
    uid = os.geteuid()
    seen = set()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg):
        seen.add(Path(xdg) / "bcrun")
        yield Path(xdg) / "bcrun"
    for parent in (
        Path(_temporary_directory()) / f"bcrun-{uid}",
        Path("/tmp") / f"bcrun-{uid}",
    ):
        if parent not in seen:
            seen.add(parent)
            yield parent


def _new_directory(parent: Path) -> Path:
    """A new directory ``.new-*`` in *parent*, mode 0700, as
    tempfile.mkdtemp() makes one."""
    while True:
        work = parent / f".new-{os.urandom(6).hex()}"
        try:
            os.mkdir(work, 0o700)
        except FileExistsError:
            continue
        return work


def _temporary_directory() -> str:
    """$TMPDIR (or $TEMP, $TMP), as tempfile finds it.  tempfile raises when
    it can create a file in none (a full or read-only disk, no descriptor
    left): the first one named is then a candidate all the same, found
    unusable in its turn."""
    import tempfile  # not when the runtime directory will do

    try:
        return tempfile.gettempdir()
    except OSError:
        for name in ("TMPDIR", "TEMP", "TMP"):
            value = os.environ.get(name)
            if value and os.path.isabs(value):
                return value
        return "/tmp"


def ensure_private_dir(path: Path) -> None:
    """Create *path* mode 0700 or check that the existing one is ours alone."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as err:
        raise RuntimeDirError(f"{path}: {err.strerror}") from err
    try:
        st = os.lstat(path)
    except OSError as err:
        raise RuntimeDirError(f"{path}: {err.strerror}") from err
    if stat.S_ISLNK(st.st_mode):
        raise RuntimeDirError(f"{path}: is a symbolic link; refusing to use it")
    if not stat.S_ISDIR(st.st_mode):
        raise RuntimeDirError(f"{path}: not a directory")
    if st.st_uid != os.geteuid():
        raise RuntimeDirError(f"{path}: owned by uid {st.st_uid}, not by you")
    if st.st_mode & 0o022:
        raise RuntimeDirError(f"{path}: writable by others; refusing to use it")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def usable_parents() -> Iterator[tuple[Path, list[str]]]:
    """Each candidate parent that is safe to use, best first, with why any
    before it was passed over (so far)."""
    errors: list[str] = []
    for parent in _candidates():
        # A socket path longer than sun_path would be cut: pick a shorter parent.
        longest = parent / str(2**22) / SOCKET_NAME
        if len(os.fsencode(longest)) > SOCKET_PATH_MAX:
            errors.append(f"{parent}: too long a path for a unix socket")
            continue
        try:
            ensure_private_dir(parent)
        except (RuntimeDirError, OSError) as err:
            errors.append(str(err))
            continue
        yield parent, errors
    raise RuntimeDirError("no usable runtime directory: " + "; ".join(errors))


def usable_parent() -> tuple[Path, list[str]]:
    """The first candidate parent that is safe to use, and why any before it
    was passed over."""
    parent, errors = next(usable_parents())
    return parent, list(errors)


class InstanceDir:
    """The directory of this bcrun: created on enter, removed on exit."""

    def __init__(self, argv: list[str], control_token: Token) -> None:
        self.argv = argv
        self.control_token = control_token
        self.path = Path()
        #: Why better parents were passed over (a symlink, a foreign owner).
        self.passed_over: list[str] = []
        self._lock_fd = -1

    @property
    def socket(self) -> Path:
        return self.path / SOCKET_NAME

    def __enter__(self) -> InstanceDir:
        # A parent that is safe but where the directory cannot be made (a
        # full disk, no inode left) is passed over like an unsafe one.
        parents = usable_parents()
        while True:
            parent, passed_over = next(parents)
            try:
                self._create(parent)
            except OSError as err:
                where = err.filename or parent
                passed_over.append(
                    f"{where}: cannot create a runtime directory: {err.strerror or err}"
                )
                continue
            self.passed_over = list(passed_over)
            return self

    def _create(self, parent: Path) -> None:
        remove_stale(parent)
        work = None
        try:
            work = _new_directory(parent)
            self._lock_fd = os.open(work / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            record = (
                f'{{"pid": {os.getpid()}, '
                f'"argv": [{", ".join(map(json_string, self.argv))}], '
                f'"started": {time.time()!r}, '
                f'"control_token": {json_string(str(self.control_token))}}}'
            )
            fd = os.open(work / RECORD_NAME, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(record)
            # Published by one rename, so a reader never sees it half made.
            # It fails if a live bcrun of the same pid (another pid namespace)
            # has the name: never touch that one.
            os.rename(work, parent / str(os.getpid()))
            self.path = parent / str(os.getpid())
        except OSError:
            self.__exit__()
            if work is not None:
                # By name: with no descriptor left, rmtree cannot open it.
                for name in (LOCK_NAME, RECORD_NAME):
                    with contextlib.suppress(OSError):
                        os.unlink(work / name)
                with contextlib.suppress(OSError):
                    os.rmdir(work)
            raise

    def note_build(self, pid: int) -> None:
        """Record the build's process, so that a later bcrun leaves this
        directory alone while the build runs, should this one be killed."""
        started = _start_time(pid)
        if started is None:
            return
        work = self.path / f".{BUILD_NAME}"
        with contextlib.suppress(OSError):
            work.write_text(f"{pid} {started}\n")
            os.rename(work, self.path / BUILD_NAME)

    def __exit__(self, *exc_info: object) -> None:
        # The lock first: removing a tree takes descriptors, and this may be
        # the one that lets it, at a low RLIMIT_NOFILE.
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        if self.path != Path():
            shutil.rmtree(self.path, ignore_errors=True)


#: json's own short escapes.
_JSON_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def json_string(text: str) -> str:
    """*text* as a JSON string, as json.dumps() writes it: the record is
    written before the build starts, and json's import would cost that
    about a millisecond."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _JSON_ESCAPES:
            out.append(_JSON_ESCAPES[char])
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}")
        else:
            out.append(f"\\u{code:04x}")
    out.append('"')
    return "".join(out)


def _owner_alive(directory: Path) -> bool:
    """Whether the bcrun that made *directory* still holds its lock."""
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _start_time(pid: int) -> float | None:
    stat = read_stat(pid)
    return None if stat is None else stat.start_s


def _build_alive(directory: Path) -> bool:
    """Whether the build a dead bcrun started still runs."""
    text = read_text(directory / BUILD_NAME)
    try:
        pid, started = (text or "").split()
        return _start_time(int(pid)) == float(started)
    except ValueError:
        return False


def remove_stale(parent: Path) -> list[Path]:
    """Remove the directories of dead bcruns (and old half-made ones);
    return those of the live ones."""
    live = []
    for entry in _entries(parent):
        if entry.name.startswith(".new-"):
            with contextlib.suppress(OSError):
                if time.time() - entry.lstat().st_mtime > DEBRIS_AGE_S:
                    shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.isdigit():
            if _owner_alive(entry):
                live.append(entry)
            elif not _build_alive(entry):
                shutil.rmtree(entry, ignore_errors=True)
    return live


def _entries(parent: Path) -> Iterator[Path]:
    try:
        yield from parent.iterdir()
    except OSError:
        return


def read_instance(directory: Path) -> Instance | None:
    """The record in *directory*, or None if it is missing or unreadable."""
    import json  # the readers are control commands, not a build's start

    try:
        with open(directory / RECORD_NAME) as f:
            record = json.load(f)
        number, _, secret = record["control_token"].partition("-")
        return Instance(
            pid=int(record["pid"]),
            directory=directory,
            argv=tuple(record["argv"]),
            started=float(record["started"]),
            control_token=Token(int(number), secret),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_instances() -> list[Instance]:
    """The live bcrun instances of this user, oldest first."""
    found = []
    for parent in candidate_parents():
        if not parent.exists():
            continue
        try:
            ensure_private_dir(parent)
        except RuntimeDirError:
            continue
        for entry in remove_stale(parent):
            instance = read_instance(entry)
            if instance is not None:
                found.append(instance)
    return sorted(found, key=lambda i: i.started)
