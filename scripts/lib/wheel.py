"""Assembles Ferry's platform wheel (used by scripts/wheel): the SDK's pure wheel, as
setuptools built it from sdk/pyproject.toml, plus Ferry's binaries as the wheel's
scripts, tagged for the platform the binaries run on.

A wheel is a zip: the package's files, `<dist>-<version>.dist-info/` with METADATA,
WHEEL and RECORD (every file with its sha256 and size), and `<dist>-<version>.data/
scripts/`, whose files the installer puts in the environment's bin/ with their exec
bit. So this copies the pure wheel's files and METADATA as they are, adds the binaries
there, rewrites WHEEL's tag, and writes RECORD anew. Standard library only.

The tag: `manylinux_2_<minor>_<arch>` when every shared library the binaries need is
one manylinux allows (glibc's and libgcc_s) and glibc's newest symbol version they use
is 2.<minor> (read with `objdump`), which is what `auditwheel show` decides too; else
`linux_<arch>`, saying why.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

# Libraries every manylinux policy lets a wheel take from the system (auditwheel's
# policy lists more; these are the ones a Rust program links, glibc's and libgcc_s).
MANYLINUX_LIBS = {
    "libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1", "libutil.so.1",
    "libgcc_s.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1",
}


def fail(message: str) -> None:
    sys.exit(f"error: {message}")


def needs(binary: Path) -> tuple[set[str], tuple[int, int]]:
    """The shared libraries `binary` needs and the newest glibc symbol version it uses."""
    try:
        out = subprocess.run(["objdump", "-p", str(binary)], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(f"objdump -p {binary} failed: {e}") from e
    libs = set(re.findall(r"^\s*NEEDED\s+(\S+)", out, re.M))
    versions = [(int(a), int(b)) for a, b in re.findall(r"\bGLIBC_(\d+)\.(\d+)", out)]
    return libs, max(versions, default=(2, 17))


def platform_tag(binaries: list[Path]) -> tuple[str, str]:
    """The wheel's platform tag and the reason for it."""
    arch = platform.machine()
    if sys.platform != "linux" or shutil.which("objdump") is None:
        return f"{sys.platform}_{arch}", "not Linux, or no objdump (binutils) to read the binaries' needs"
    libs: set[str] = set()
    glibc = (2, 17)
    for binary in binaries:
        need, version = needs(binary)
        libs |= need
        glibc = max(glibc, version)
    others = sorted(libs - MANYLINUX_LIBS)
    if others:
        return f"linux_{arch}", f"the binaries need {', '.join(others)}, which manylinux does not allow"
    tag = f"manylinux_{glibc[0]}_{glibc[1]}_{arch}"
    return tag, f"they need only {', '.join(sorted(libs))}, glibc {glibc[0]}.{glibc[1]} or newer"


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def wheel_file(text: str, tag: str) -> str:
    """The pure wheel's WHEEL with the platform tag: binaries make it platlib."""
    # Headers only: a blank line would end them (setuptools leaves one at the end).
    lines = [line for line in text.splitlines() if line and not line.startswith(("Tag:", "Root-Is-Purelib:"))]
    return "\n".join([*lines, "Root-Is-Purelib: false", f"Tag: py3-none-{tag}"]) + "\n"


def assemble(pure: Path, binaries: list[Path], tag: str, out_dir: Path, level: int) -> Path:
    dist, version = pure.name.split("-")[:2]
    info, data = f"{dist}-{version}.dist-info", f"{dist}-{version}.data"
    target = out_dir / f"{dist}-{version}-py3-none-{tag}.whl"
    record: list[str] = []
    with zipfile.ZipFile(pure) as src, zipfile.ZipFile(
        target, "w", zipfile.ZIP_DEFLATED, compresslevel=level
    ) as dst:
        for item in src.infolist():
            if item.filename in (f"{info}/RECORD", f"{info}/WHEEL"):
                continue
            body = src.read(item)
            dst.writestr(item, body)
            record.append(record_line(item.filename, body))
        for binary in binaries:
            body = binary.read_bytes()
            dst.writestr(entry(f"{data}/scripts/{binary.name}", 0o755), body, compresslevel=level)
            record.append(record_line(f"{data}/scripts/{binary.name}", body))
        wheel = wheel_file(src.read(f"{info}/WHEEL").decode(), tag).encode()
        dst.writestr(entry(f"{info}/WHEEL", 0o644), wheel)
        record.append(record_line(f"{info}/WHEEL", wheel))
        record.append(f"{info}/RECORD,,")
        dst.writestr(entry(f"{info}/RECORD", 0o644), "\n".join(record) + "\n")
    return target


def entry(name: str, mode: int) -> zipfile.ZipInfo:
    """A regular file's zip entry with `mode` (pip keeps the exec bit of scripts)."""
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.external_attr = (0o100000 | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pure", type=Path, required=True, help="the SDK's pure wheel (py3-none-any)")
    ap.add_argument("--out", type=Path, required=True, help="the directory the wheel is written to")
    ap.add_argument("--fast", action="store_true", help="compress little (a debug wheel, for tests)")
    ap.add_argument("binaries", type=Path, nargs="+")
    args = ap.parse_args()
    for binary in args.binaries:
        if not binary.is_file():
            fail(f"{binary} is missing: build it first (cargo build --bins)")
    if not args.pure.name.endswith("-py3-none-any.whl"):
        fail(f"{args.pure} is not a pure py3-none-any wheel")
    try:
        tag, why = platform_tag(args.binaries)
    except RuntimeError as e:
        fail(str(e))
    print(f"platform tag {tag}: {why}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    print(assemble(args.pure, args.binaries, tag, args.out, 1 if args.fast else 6))


if __name__ == "__main__":
    main()
