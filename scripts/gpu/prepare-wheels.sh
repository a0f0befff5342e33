#!/usr/bin/env bash
# Run HERE (a machine with pip and the package registry), from anywhere in the repository:
# downloads into .whl/ the wheels the GPU machine lacks, for its Python 3.12 on x86-64 Linux,
# builds the project's own wheel, and fails if .whl/ plus the working tree would not travel
# (the device tool sends at most 64 MiB: tracked files, untracked-not-ignored files, shared/,
# and the carried paths). scripts/gpu/run-on-device.sh installs them there, offline.
#
#     bash scripts/gpu/prepare-wheels.sh            # then: the device `run` call of scripts/gpu/README.md
#
# What is carried, and why (the machine's package list: KINDS.md of the device tool):
#   trl, transformers, datasets, bitsandbytes   the versions of constraints/newest.txt + base.txt, the
#                                               environment of `tox -e bench-gpu` (the machine has
#                                               transformers too, an older one; no trl, datasets, bnb)
#   peft                                        the pinned release (base.txt): the DPO bill's PEFT cases;
#                                               the tool's brief lists no peft on the machine
#   dill, multiprocess                          datasets' needs the machine lacks (it has pyarrow,
#                                               pandas, xxhash, fsspec, huggingface-hub, ...)
#   policyload                                  this project, `pip wheel --no-deps .`
# torch, accelerate, pytest, pytest-benchmark, nvidia-ml-py, matplotlib, hypothesis are
# there already and are not carried (torch must be the machine's own CUDA build anyway).
#
# bitsandbytes ships native libraries for every CUDA 11/12/13, ROCm and XPU release (43 MB
# compressed); the machine's torch is a CUDA 13 build, so the wheel is repacked with the CPU
# library and the CUDA 13.x ones only (bitsandbytes falls back within a CUDA major, never across).
# BNB_CUDA_MAJORS="12 13" keeps more; BNB_CUDA_MAJORS=all keeps the wheel as published.
#
# Environment: WHEELS_DIR (default .whl), PYTHON (default python3: only its pip is used),
# BUDGET_BYTES (default 64 MiB), EXTRA_PINS (default "dill==0.4.1 multiprocess==0.70.19").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
WHEELS_DIR="${WHEELS_DIR:-.whl}"
PYTHON="${PYTHON:-python3}"
BUDGET_BYTES="${BUDGET_BYTES:-$((64 * 1024 * 1024))}"
BNB_CUDA_MAJORS="${BNB_CUDA_MAJORS:-13}"
EXTRA_PINS="${EXTRA_PINS:-dill==0.4.1 multiprocess==0.70.19}"

die() { echo "prepare-wheels: error: $*" >&2; exit 1; }

# The version of NAME pinned in the constraints files (newest.txt first, then base.txt).
pin() {
    local line
    line="$(grep -hiE "^$1==" constraints/newest.txt constraints/base.txt | head -n 1)" || true
    [ -n "$line" ] || die "no pin for $1 in constraints/newest.txt or constraints/base.txt"
    echo "${line%%[[:space:]#]*}"
}

PINS=("$(pin trl)" "$(pin transformers)" "$(pin datasets)" "$(pin bitsandbytes)" "$(pin peft)")
read -ra extra <<< "$EXTRA_PINS"
PINS+=("${extra[@]}")

case "$WHEELS_DIR" in
    /*|*..*|''|.) die "WHEELS_DIR=$WHEELS_DIR: give a folder inside the repository, like .whl" ;;
esac
# Fresh folder: two versions of one package would stop the whole install there.
rm -rf "$WHEELS_DIR"
mkdir -p "$WHEELS_DIR"
if ! git check-ignore -q "$WHEELS_DIR/x.whl"; then
    die "$WHEELS_DIR/ is not ignored by git: it would travel twice (as a file of the tree and as carry). Add '$WHEELS_DIR/' to .gitignore."
fi

echo "== downloading for CPython 3.12, manylinux x86-64: ${PINS[*]}"
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$WHEELS_DIR" "${PINS[@]}"

echo "== building the project's wheel (pip wheel --no-deps, in a copy: no build/ or egg-info left here)"
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
# What the build reads (pyproject.toml, its readme, src/), as the files are now: uncommitted edits count.
cp pyproject.toml README.md "$build/"
cp -r src "$build/"
find "$build/src" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
"$PYTHON" -m pip wheel --quiet --no-deps -w "$ROOT/$WHEELS_DIR" "$build"

if [ "$BNB_CUDA_MAJORS" != all ]; then
    echo "== repacking bitsandbytes: CPU + CUDA ${BNB_CUDA_MAJORS} libraries only"
    "$PYTHON" - "$WHEELS_DIR" $BNB_CUDA_MAJORS <<'EOF'
import base64, hashlib, pathlib, re, sys, zipfile

folder, majors = pathlib.Path(sys.argv[1]), sys.argv[2:]
(wheel,) = folder.glob("bitsandbytes-*.whl")
keep = re.compile(r"libbitsandbytes_(cpu|cuda(%s)\d)\.so$" % "|".join(map(re.escape, majors)))
native = re.compile(r"libbitsandbytes_\w+\.so$")
kept, dropped, out = [], [], wheel.with_suffix(".tmp")
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
    names = [info.filename for info in src.infolist()]
    dropped = [n for n in names if native.search(n) and not keep.search(n)]
    kept = [n for n in names if native.search(n) and keep.search(n)]
    if not any("cuda" in n for n in kept):
        sys.exit(f"no CUDA {majors} library in {wheel.name}: nothing to keep; set BNB_CUDA_MAJORS")
    record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
    for info in src.infolist():
        if info.filename in dropped or info.filename == record_name:
            continue
        dst.writestr(info, src.read(info.filename))
    # RECORD without the dropped files, so the wheel stays self-consistent for pip.
    lines = [l for l in src.read(record_name).decode().splitlines() if l and l.split(",", 1)[0] not in dropped]
    dst.writestr(zipfile.ZipInfo(record_name, date_time=src.getinfo(record_name).date_time), "\n".join(lines) + "\n")
out.replace(wheel)
print("  kept:", ", ".join(n.rsplit("/", 1)[-1] for n in kept))
print(f"  dropped {len(dropped)} native libraries (other CUDA majors, ROCm, XPU)")
EOF
fi

# One version per distribution: two would stop the install there.
dupes="$(ls "$WHEELS_DIR"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z_.' 'a-z--' | sort | uniq -d)"
[ -z "$dupes" ] || die "more than one wheel of: $dupes"

(cd "$WHEELS_DIR" && sha256sum -- *.whl > SHA256SUMS)

echo "== wheels"
wheel_bytes=0
for wheel in "$WHEELS_DIR"/*.whl; do
    size=$(stat -c %s "$wheel")
    wheel_bytes=$((wheel_bytes + size))
    printf '  %10d  %s\n' "$size" "$(basename "$wheel")"
done
carry_bytes=$(du -cb "$WHEELS_DIR" | tail -n 1 | cut -f1)

# What travels besides the carried folder: tracked files, untracked files git does not ignore,
# and shared/ where the checkout has one.
tree_bytes=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } \
    | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}')
shared_bytes=0
[ -d shared ] && shared_bytes=$(du -sb shared | cut -f1)
total=$((carry_bytes + tree_bytes + shared_bytes))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "== sizes"
echo "  wheels           $(mib "$wheel_bytes") ($wheel_bytes bytes)"
echo "  $WHEELS_DIR/ (carry)   $(mib "$carry_bytes")"
echo "  working tree     $(mib "$tree_bytes") (tracked + untracked-not-ignored)"
[ "$shared_bytes" -gt 0 ] && echo "  shared/          $(mib "$shared_bytes")"
echo "  total            $(mib "$total") of $(mib "$BUDGET_BYTES")"
if [ "$total" -gt "$BUDGET_BYTES" ]; then
    die "$(mib "$total") would travel, over the $(mib "$BUDGET_BYTES") budget: drop a wheel (transformers is optional: the machine has one) or untracked files"
fi
echo "ok: carry [\"$WHEELS_DIR\"] fits, $(mib $((BUDGET_BYTES - total))) to spare"
