"""Fetching, building and caching the real build tools the tests run.

Sources come from Debian's source packages (``apt-get source --tar-only``,
which needs deb-src entries: tests/setup adds them); samurai, which no
registry here has, from the directory or tarball named by
$BCRUN_SAMURAI_SOURCE, or else from ../shared/vendor/samurai-1.3.tar.gz
beside the project's root (where CI has it).  Each tool is built twice with
patches/build, with and without bcrun's patch, into a cache keyed by the
patch and the build script, so a changed patch is rebuilt and an unchanged
one is not.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "patches" / "build"
CACHE = Path(
    os.environ.get("BCRUN_TEST_CACHE") or Path.home() / ".cache" / "bcrun-tests"
)
#: samurai 1.3 beside the project, where CI keeps it: used when
#: $BCRUN_SAMURAI_SOURCE is unset.
VENDORED_SAMURAI = ROOT.parent / "shared" / "vendor" / "samurai-1.3.tar.gz"


@dataclass(frozen=True)
class ToolSpec:
    name: str  # as patches/build knows it
    version: str
    program: str  # what PREFIX/bin holds
    debian_source: str | None  # "package=version" for apt-get source
    tarball_glob: str = ""


TOOLS = {
    "gmake": ToolSpec(
        "gmake", "4.4.1", "make", "make-dfsg=4.4.1-3", "make-dfsg_4.4.1.orig.tar.*"
    ),
    "ninja": ToolSpec(
        "ninja",
        "1.13.2",
        "ninja",
        "ninja-build=1.13.2-1",
        "ninja-build_1.13.2.orig.tar.*",
    ),
    "bmake": ToolSpec(
        "bmake", "20200710", "bmake", "bmake=20200710-15", "bmake_20200710.orig.tar.*"
    ),
    "samurai": ToolSpec("samurai", "1.3", "samu", None),
}


class Unavailable(Exception):
    """The tool cannot be had here; the message says why (for a skip)."""


def source_of(spec: ToolSpec) -> Path:
    """The pristine source: a cached Debian tarball, or samurai's from the
    environment."""
    if spec.debian_source is None:
        given = os.environ.get("BCRUN_SAMURAI_SOURCE")
        if not given:
            if VENDORED_SAMURAI.exists():
                return VENDORED_SAMURAI
            raise Unavailable(
                "samurai's source is in no registry reached here: set "
                "BCRUN_SAMURAI_SOURCE to a samurai-1.3 directory or tarball "
                f"(or put it at {VENDORED_SAMURAI})"
            )
        if not Path(given).exists():
            raise Unavailable(f"BCRUN_SAMURAI_SOURCE={given} does not exist")
        return Path(given)
    where = CACHE / "src"
    where.mkdir(parents=True, exist_ok=True)
    found = sorted(where.glob(spec.tarball_glob))
    if not found:
        result = subprocess.run(
            ["apt-get", "source", "--tar-only", spec.debian_source],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=600,
        )
        found = sorted(where.glob(spec.tarball_glob))
        if not found:
            raise RuntimeError(
                f"apt-get source {spec.debian_source} failed (run tests/setup "
                f"to add deb-src entries): {result.stderr.strip()[-400:]}"
            )
    return found[0]


def pypi_ninja() -> Path:
    """PyPI's ninja (Kitware's build, which takes a pipe jobserver too),
    downloaded once with pip and unpacked from its wheel."""
    where = CACHE / "pypi-ninja"
    program = where / "ninja"
    if program.exists():
        return program
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            str(where),
            "ninja>=1.13,<1.14",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    wheels = sorted(where.glob("ninja-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download ninja failed: {result.stderr.strip()[-400:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        member = next(n for n in wheel.namelist() if n.endswith("/scripts/ninja"))
        program.write_bytes(wheel.read(member))
    program.chmod(0o755)
    return program


def _key(spec: ToolSpec, patched: bool) -> str:
    digest = hashlib.sha256(BUILD.read_bytes())
    patch = ROOT / "patches" / spec.name / f"{spec.version}.patch"
    if patched:
        digest.update(patch.read_bytes())
    flavour = "patched" if patched else "stock"
    return f"{spec.name}-{spec.version}-{flavour}-{digest.hexdigest()[:12]}"


def build_tool(name: str, patched: bool) -> Path:
    """The installed program, built once per patch version."""
    spec = TOOLS[name]
    if patched and not (ROOT / "patches" / name / f"{spec.version}.patch").exists():
        raise RuntimeError(f"patches/{name}/{spec.version}.patch is missing")
    source = source_of(spec)
    key = _key(spec, patched)
    prefix = CACHE / "tools" / key
    program = prefix / "bin" / spec.program
    if program.exists():
        return program
    shutil.rmtree(prefix, ignore_errors=True)
    args = [str(BUILD), "--version", spec.version]
    args += ["--build-dir", str(build_dir(name, patched))]
    if not patched:
        args.append("--unpatched")
    result = subprocess.run(
        [*args, name, str(source), str(prefix)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if result.returncode != 0 or not program.exists():
        raise RuntimeError(f"patches/build {name} failed: {result.stderr.strip()}")
    return program


def build_dir(name: str, patched: bool) -> Path:
    """Where the build tree is kept, for the tool's own test suite."""
    spec = TOOLS[name]
    return CACHE / "build" / _key(spec, patched)
