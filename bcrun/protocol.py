"""The build-control protocol without I/O: framing, counts, tokens, addresses.

Everything here is pure so that it can be tested with any chunking of any
byte stream.  The wire format is described in bcrun(1), section PROTOCOL.
"""

from __future__ import annotations

import os
import re

# The constant-time comparison of hmac.compare_digest (its own, without
# OpenSSL), without hmac's import of hashlib and OpenSSL: bcrun checks its
# build's first token while the build starts.
from _operator import _compare_digest as compare_digest
from typing import NamedTuple

from bcrun.errors import ProtocolError

#: Longest line a peer may send us, line ending excluded.  A token is
#: ``N-`` plus 32 hex digits; control commands are shorter still.
LINE_MAX = 256

#: Largest job count on the wire: what a C ``int`` holds, the type the
#: patched tools store it in.
COUNT_MAX = 2**31 - 1

#: Random bytes in a token's secret: 128 bits, above the protocol's 96.
SECRET_BYTES = 16

# Patterns, compiled by re on first use: compiling them all as bcrun starts
# costs it a millisecond or more.
_COUNT = r"[0-9]{1,10}"
_TOKEN = r"([0-9]{1,9})-([0-9a-f]*)"


class LineDecoder:
    """Split a byte stream into lines, whatever the chunking.

    A line ends with ``\\r\\n``, ``\\n`` or a lone ``\\r``; a ``\\r\\n`` split
    between two reads is one ending, not an empty line.  Empty lines are
    dropped.  A line longer than *limit* bytes raises :class:`ProtocolError`
    as soon as it is known to be too long, so a peer cannot make us buffer
    more than *limit* bytes.  Lines completed before the long one, in the
    same read, are returned first; the error comes with the next feed.
    """

    def __init__(self, limit: int = LINE_MAX) -> None:
        self.limit = limit
        self._pending = bytearray()
        self._after_cr = False
        self._error: ProtocolError | None = None

    def feed(self, data: bytes) -> list[str]:
        if self._error is not None:
            raise self._error
        if self._after_cr and data.startswith(b"\n"):
            data = data[1:]
        self._after_cr = data.endswith(b"\r")
        # Each \r\n, then each lone \r or \n, ends a line.
        *complete, rest = (
            data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        )
        lines: list[str] = []
        try:
            for part in complete:
                self._append(part)
                if self._pending:
                    lines.append(self._pending.decode("latin-1"))
                    self._pending.clear()
            self._append(rest)
        except ProtocolError as err:
            if not lines:
                raise
            self._error = err
            self._pending.clear()
        return lines

    def _append(self, data: bytes) -> None:
        self._pending += data
        if len(self._pending) > self.limit:
            raise ProtocolError(f"line longer than {self.limit} bytes")


def parse_count(line: str) -> int:
    """The job count a line holds: a decimal integer from 0 to COUNT_MAX."""
    if not re.fullmatch(_COUNT, line):
        raise ProtocolError(f"not a job count: {line[:40]!r}")
    count = int(line)
    if count > COUNT_MAX:
        raise ProtocolError(f"job count out of range: {line}")
    return count


def format_count(count: int) -> bytes:
    """One count line as a controller sends it."""
    if not 0 <= count <= COUNT_MAX:
        raise ValueError(f"job count out of range: {count}")
    return b"%d\r\n" % count


def format_line(text: str) -> bytes:
    """One line of text as bcrun sends it."""
    return text.encode("utf-8", "replace") + b"\r\n"


class Token(NamedTuple):
    """A build's credential, ``N-SECRET`` on the wire.

    *number* lets a server find the build without a search; only *secret*
    is checked, in constant time.  (Named tuples here, not dataclasses:
    bcrun makes its tokens before it starts the build, and importing
    dataclasses alone would add several milliseconds to that.)
    """

    number: int
    secret: str

    def __str__(self) -> str:
        return f"{self.number}-{self.secret}"

    def __repr__(self) -> str:
        # Never show the secret: reprs end up in logs and tracebacks.
        return f"Token({self.number}, <secret>)"

    @classmethod
    def new(cls, number: int) -> Token:
        # What secrets.token_hex() does, without importing it.
        return cls(number, os.urandom(SECRET_BYTES).hex())

    def matches(self, line: str) -> bool:
        """Whether *line* is this token, compared in constant time."""
        return compare_digest(
            line.encode("utf-8", "surrogatepass"), str(self).encode("ascii")
        )


def token_number(line: str) -> int | None:
    """The build number a token line claims, or None if it is not ``N-hex``."""
    match = re.fullmatch(_TOKEN, line)
    return int(match.group(1)) if match else None


class UnixAddress(NamedTuple):
    path: str

    def __str__(self) -> str:
        return self.path


class InetAddress(NamedTuple):
    host: str | None  # None: the local host
    service: str

    def __str__(self) -> str:
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.service}"


Address = UnixAddress | InetAddress


def parse_address(value: str) -> Address:
    """Read a BUILDSOCKET value: a path, ``host:service``, ``[v6]:service``
    or ``:service``.  A value starting with ``/`` or ``.``, or holding no
    ``:``, is a path.
    """
    if not value:
        raise ProtocolError("empty socket address")
    if value[0] in "/." or ":" not in value:
        return UnixAddress(value)
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not host or not rest.startswith(":"):
            raise ProtocolError(f"bad address {value!r}: expected [v6-address]:port")
        service = rest[1:]
    else:
        host, _, service = value.rpartition(":")
        if ":" in host:
            raise ProtocolError(f"bad address {value!r}: write IPv6 as [addr]:port")
    if not service:
        raise ProtocolError(f"bad address {value!r}: no port")
    return InetAddress(host or None, service)
