"""Bundle a GPU run's work folder into the device tool's $OUT, within what comes back from it.

    python3 scripts/gpu/bundle.py WORK OUT [KEY ...]    results.tar.gz of WORK + KEY files copied flat
    python3 scripts/gpu/bundle.py --check OUT           only check OUT against the limits

What comes back from $OUT: at most 8 files, 16 MiB each, 64 MiB together, no deeper than
OUT/a/b/file, names of letters, digits, '.', '_' and '-' only. So OUT gets `results.tar.gz`
(everything in WORK; the largest files are left out, and listed in LEFT_OUT.txt inside it, if it
would exceed 16 MiB) plus up to 7 KEY files (paths relative to WORK) copied flat, in the order
given, each only while the limits hold. Every file is written under a temporary name and renamed,
so an earlier bundle stays whole if this one is cut short: the script bundles after every phase.
Standard library only: it runs under any python3 on the machine, whatever the test environment.
"""

from __future__ import annotations

import io
import os
import re
import sys
import tarfile
from pathlib import Path

MAX_FILES = 8
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_TOTAL_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 2  # folders below OUT
NAME = re.compile(r"^[A-Za-z0-9._-]+$")
TARBALL = "results.tar.gz"


def limit_problems(out: Path) -> list[str]:
    """What would not come back from `out`, one line each ([] when all of it would)."""
    problems, files, total = [], 0, 0
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out)
        if any(not NAME.match(part) for part in relative.parts):
            problems.append(f"{relative}: name outside [A-Za-z0-9._-]")
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            problems.append(f"{relative}: not a plain file or folder")
            continue
        if path.is_dir():
            continue
        if len(relative.parts) - 1 > MAX_DEPTH:
            problems.append(f"{relative}: more than {MAX_DEPTH} folders down")
        size = path.stat().st_size
        files += 1
        total += size
        if size > MAX_FILE_BYTES:
            problems.append(f"{relative}: {size} bytes, over {MAX_FILE_BYTES}")
    if files > MAX_FILES:
        problems.append(f"{files} files, over {MAX_FILES}")
    if total > MAX_TOTAL_BYTES:
        problems.append(f"{total} bytes in all, over {MAX_TOTAL_BYTES}")
    return problems


def _work_files(work: Path, skip: set[Path]) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(work):
        dirs[:] = sorted(d for d in dirs if not (Path(root) / d).is_symlink())
        for name in sorted(names):
            path = Path(root) / name
            if path.is_file() and not path.is_symlink() and path.resolve() not in skip:
                files.append(path)
    return files


def _tarball(work: Path, files: list[Path], left_out: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for path in files:
            try:
                tar.add(path, arcname=str(path.relative_to(work)), recursive=False)
            except OSError:  # vanished or unreadable mid-run: leave it out
                left_out.append(path)
        if left_out:
            note = "".join(f"{p.relative_to(work)}\t{_size(p)} bytes\n" for p in left_out).encode()
            info = tarfile.TarInfo("LEFT_OUT.txt")
            info.size = len(note)
            tar.addfile(info, io.BytesIO(note))
    return buffer.getvalue()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _write_atomically(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def bundle(work: Path, out: Path, keys: list[str]) -> list[str]:
    """Write OUT/results.tar.gz and the KEY files; return one line per thing left out."""
    work, out = Path(work), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    # A WORK that holds OUT (or the other way round) must not bundle itself.
    files = _work_files(work, skip={p.resolve() for p in out.rglob("*")} if out.exists() else set())
    too_big: list[Path] = []  # left out so that the tarball stays under MAX_FILE_BYTES
    left_out: list[Path] = []  # those, plus files that vanished or could not be read
    data = _tarball(work, files, left_out)
    while len(data) > MAX_FILE_BYTES and files:
        largest = max(files, key=_size)
        files.remove(largest)
        too_big.append(largest)
        left_out = list(too_big)
        data = _tarball(work, files, left_out)
    for path in left_out:
        notes.append(f"{TARBALL}: left out {path.relative_to(work)} ({_size(path)} bytes)")
    _write_atomically(out / TARBALL, data)

    written = {TARBALL: len(data)}
    for key in keys:
        source = work / key
        name = Path(key).name
        if not source.is_file():
            continue
        size = source.stat().st_size
        if not NAME.match(name):
            notes.append(f"{key}: name outside [A-Za-z0-9._-], only in {TARBALL}")
        elif name in written:
            notes.append(f"{key}: a file named {name} is already in OUT, only in {TARBALL}")
        elif len(written) >= MAX_FILES:
            notes.append(f"{key}: {MAX_FILES} files already, only in {TARBALL}")
        elif size > MAX_FILE_BYTES or sum(written.values()) + size > MAX_TOTAL_BYTES:
            notes.append(f"{key}: {size} bytes would pass a size limit, only in {TARBALL}")
        else:
            _write_atomically(out / name, source.read_bytes())
            written[name] = size
    return notes


def main(argv: list[str]) -> int:
    if argv[:1] == ["--check"] and len(argv) == 2:
        problems = limit_problems(Path(argv[1]))
        for line in problems:
            print(f"bundle: over the limits: {line}", file=sys.stderr)
        if not problems:
            files = [p for p in Path(argv[1]).rglob("*") if p.is_file()]
            total = sum(p.stat().st_size for p in files)
            print(f"bundle: {argv[1]}: {len(files)} files, {total / 1048576:.2f} MiB: within the limits")
        return 1 if problems else 0
    if len(argv) < 2 or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    notes = bundle(Path(argv[0]), Path(argv[1]), argv[2:])
    for line in notes:
        print(f"bundle: {line}")
    problems = limit_problems(Path(argv[1]))
    for line in problems:
        print(f"bundle: over the limits: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
