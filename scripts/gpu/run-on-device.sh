#!/usr/bin/env bash
# The GPU run of policyload, in one command on the device machine (scripts/gpu/README.md):
#
#     OUT=/some/empty/folder bash scripts/gpu/run-on-device.sh            there, from the repo root
#     bash scripts/gpu/run-on-device.sh --cpu-dry-run                     here: the same plumbing on CPU
#
# 1. installs the wheels of .whl/ (scripts/gpu/prepare-wheels.sh) offline into $SITE;
# 2. records nvidia-smi, the machine, the versions, and whether the carried wheels' needs are met;
# 3. runs the phases, most important first, each under a time cap inside one overall deadline:
#      cuda        the tests that load and place on a real device (tests/, conformance/), junit XML
#      tiny        the tiny matrix on CUDA (`pytest benchmarks`, 5 rounds): bench-tiny-1.json + table, chart
#      realsize    Qwen2-0.5B and Llama-3.2-1B shapes, every dtype x quantization (--realsize --quick)
#      noise       two more runs of the tiny matrix (its llama cases); `report noise` over the three: NOISE.md
#      realsize8b  Llama-3.1-8B shapes, with whatever time is left
# 4. bundles after every phase into $OUT (scripts/gpu/bundle.py): results.tar.gz of everything
#    plus the key files flat, within what the device tool brings back (8 files, 16 MiB each).
#
# A phase's cap is soft first: once POLICYLOAD_PHASE_DEADLINE passes, pytest stops after the
# running test and still writes its JSON/XML (scripts/gpu/phase_deadline.py); a test that overruns
# gets SIGTERM at the hard cap (also handled: the JSON is still written), then SIGKILL 15 s later.
#
# Environment (defaults in brackets; --cpu-dry-run changes several):
#   OUT [required on the device; a temp folder in a dry run]  WORK [a temp folder]  SITE [/tmp/site]
#   PYTHON [python3]  WHEELS [.whl]  POLICYLOAD_FIXTURES [/var/tmp/policyload-fixtures]
#   DEADLINE_S [470]: the whole script, install and bundling included   RESERVE_S [20]: kept for the end
#   PHASES ["cuda tiny realsize noise realsize8b"]: which, in which order
#   CAP_CUDA [150] CAP_TINY [160] CAP_REALSIZE [130] CAP_NOISE [90 per run] CAP_REALSIZE8B [600]
#   CUDA_TESTS [the files below]  CUDA_TESTS_K [not simulated_placement_matches_trl]  CUDA_TESTS_ARGS []
#   TINY_K [all]  TINY_QUICK [0]  NOISE_K [llama: repeats 2 and 3 run the 17 llama cases]
#   REALSIZE_K [qwen2-0.5b or llama-3.2-1b]  REALSIZE8B_K [llama-3.1-8b]  REALSIZE_QUICK [1]
# Exit status: 0 every phase that ran passed (time cuts included); 1 a phase failed; 3 setup failed.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

configure() {
    DRY_RUN="${POLICYLOAD_GPU_DRY_RUN:-0}"
    for arg in "$@"; do
        case "$arg" in
            --cpu-dry-run) DRY_RUN=1 ;;
            -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
            *) echo "run-on-device: unknown argument $arg (try --help)" >&2; exit 2 ;;
        esac
    done
    T0=$(date +%s)
    PY="${PYTHON:-python3}"
    WHEELS="${WHEELS:-.whl}"
    RESERVE_S="${RESERVE_S:-20}"
    MIN_PHASE_S="${MIN_PHASE_S:-20}"
    GRACE_S="${GRACE_S:-30}"
    PHASES="${PHASES:-cuda tiny realsize noise realsize8b}"
    REALSIZE_K="${REALSIZE_K:-qwen2-0.5b or llama-3.2-1b}"
    REALSIZE8B_K="${REALSIZE8B_K:-llama-3.1-8b}"
    REALSIZE_QUICK="${REALSIZE_QUICK:-1}"
    CUDA_TESTS_ARGS="${CUDA_TESTS_ARGS:-}"
    if [ "$DRY_RUN" = 1 ]; then
        # CPU, tiny limits, one or two cases per phase: the plumbing, not the numbers.
        OUT="${OUT:-$(mktemp -d /tmp/policyload-dry-out.XXXXXX)}"
        [ -n "${SITE:-}" ] || { SITE="$(mktemp -d /tmp/policyload-dry-site.XXXXXX)"; SITE_IS_TEMP=1; }
        export POLICYLOAD_FIXTURES="${POLICYLOAD_FIXTURES:-/tmp/policyload-dry-fixtures}"
        DEADLINE_S="${DEADLINE_S:-300}"
        CAP_CUDA="${CAP_CUDA:-90}"; CAP_TINY="${CAP_TINY:-90}"; CAP_NOISE="${CAP_NOISE:-60}"
        CAP_REALSIZE="${CAP_REALSIZE:-60}"; CAP_REALSIZE8B="${CAP_REALSIZE8B:-60}"
        CUDA_TESTS="${CUDA_TESTS:-tests/test_measure.py}"
        CUDA_TESTS_K="${CUDA_TESTS_K:-cuda or allocator or bandwidth}"
        TINY_K="${TINY_K:-llama-bf16-none or gpt2-fp32-8bit}"
        TINY_QUICK="${TINY_QUICK:-1}"
        NOISE_K="${NOISE_K-$TINY_K}"
        DRY_REALSIZE="${DRY_REALSIZE:-0}"  # 1: run the real-size phases too (GBs of disk, minutes of CPU)
    else
        SITE="${SITE:-/tmp/site}"
        export POLICYLOAD_FIXTURES="${POLICYLOAD_FIXTURES:-/var/tmp/policyload-fixtures}"
        DEADLINE_S="${DEADLINE_S:-470}"
        CAP_CUDA="${CAP_CUDA:-150}"; CAP_TINY="${CAP_TINY:-160}"; CAP_NOISE="${CAP_NOISE:-90}"
        CAP_REALSIZE="${CAP_REALSIZE:-130}"; CAP_REALSIZE8B="${CAP_REALSIZE8B:-600}"
        # The tests that load for real on this machine's device: the CUDA-only ones of
        # test_measure.py (plus its load/free cycles), level 4 (load_policy on every case),
        # the real placements, remote code, and the torchrun check (skips on one GPU).
        CUDA_TESTS="${CUDA_TESTS:-tests/test_measure.py conformance/test_loading.py conformance/test_placement.py conformance/test_revision_remote_code.py conformance/test_distributed.py}"
        # The simulated placements patch torch.cuda away: CPU work, run by CI already.
        CUDA_TESTS_K="${CUDA_TESTS_K:-not simulated_placement_matches_trl}"
        TINY_K="${TINY_K:-}"
        TINY_QUICK="${TINY_QUICK:-0}"
        # Repeats 2 and 3 of the tiny matrix: its 17 llama cases (every dtype x quantization), so
        # that three runs fit the 8 minutes; NOISE_K="" repeats all 51 (about 2 minutes each).
        NOISE_K="${NOISE_K-llama}"
        DRY_REALSIZE=1
    fi
    if [ -z "${OUT:-}" ]; then
        echo "run-on-device: OUT is not set (the device tool sets it; use --cpu-dry-run here)" >&2
        exit 2
    fi
    WORK="${WORK:-$(mktemp -d /tmp/policyload-gpu-work.XXXXXX)}"
    mkdir -p "$OUT" "$WORK/logs" "$WORK/env"
    export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error \
        TOKENIZERS_PARALLELISM=false PYTHONHASHSEED=0 PYTHONUNBUFFERED=1 MPLBACKEND=Agg \
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
    FAILED=0
    NVSMI_PID=""
}

log() { printf '[%4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

# Seconds left before the deadline, less what is kept for the end.
remaining() { echo $(( DEADLINE_S - ($(date +%s) - T0) - RESERVE_S )); }

record() {  # name status rc seconds cap note
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$WORK/phases.tsv"
}

# run_phase NAME CAP COMMAND...: COMMAND under the phase's time cap, its output in logs/NAME.log.
# KEEP=N (seconds left for what follows) and MIN=N (skip unless this many are left) may prefix it.
run_phase() {
    local name="$1" cap="$2"; shift 2
    local left=$(( $(remaining) - ${KEEP:-0} ))
    local eff=$(( cap < left ? cap : left ))
    if (( eff < ${MIN:-$MIN_PHASE_S} )); then
        log "phase $name: skipped, ${left}s left before the deadline"
        record "$name" skipped - 0 "$cap" "no time left (${left}s)"
        return 0
    fi
    local grace=$(( eff / 4 < GRACE_S ? eff / 4 : GRACE_S ))
    local stopped="$WORK/logs/$name.stopped" start rc
    rm -f "$stopped"
    start=$(date +%s)
    log "phase $name: cap ${eff}s (stops between tests after $((eff - grace))s): $*"
    POLICYLOAD_PHASE_DEADLINE=$(( start + eff - grace )) POLICYLOAD_PHASE_STOPPED="$stopped" \
        timeout --signal=TERM --kill-after=15 "$eff" "$@" > "$WORK/logs/$name.log" 2>&1
    rc=$?
    local seconds=$(( $(date +%s) - start )) status outcome
    # pytest's closing line ("3 passed, 1 skipped in 4.20s"), else the command's last line.
    outcome="$(grep -E '(passed|failed|errors?|skipped|deselected|no tests ran).* in [0-9.]+s' "$WORK/logs/$name.log" \
        | tail -n 1 | tr -d '=' | sed 's/^ *//; s/ *$//')"
    [ -n "$outcome" ] || outcome="$(tail -n 1 "$WORK/logs/$name.log" | tr '|' '/' | cut -c1-160)"
    if [ -s "$stopped" ] || [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        status="cut at the time cap"
        # An interrupted pytest exits 2 whatever failed before the cut: the closing line tells.
        if [[ "$outcome" =~ [0-9]+\ (failed|errors?)([ ,]|$) ]]; then status="cut at the time cap, after failures"; FAILED=1; fi
        outcome="$outcome; $(head -n 1 "$stopped" 2>/dev/null || echo "signal at the hard cap")"
    else
        case "$rc" in
            0) status=ok ;;
            5) status="no tests ran" ;;
            1) status=failed; FAILED=1 ;;
            *) status="error"; FAILED=1 ;;
        esac
    fi
    log "phase $name: $status (rc $rc, ${seconds}s): $outcome"
    record "$name" "$status" "$rc" "$seconds" "$eff" "$outcome"
    bundle_now
    return 0
}

# pytest benchmarks under a phase, then its table and chart.
bench_phase() {  # NAME CAP STEM PYTEST_ARGS...
    local name="$1" cap="$2" stem="$3"; shift 3
    KEEP=25 run_phase "$name" "$cap" "$PY" -m pytest benchmarks -p no:xdist -p no:randomly -p no:cacheprovider \
        -p phase_deadline --benchmark-json "$WORK/$stem.json" --benchmark-columns=min,median,max,rounds "$@"
    if has_benchmarks "$WORK/$stem.json"; then
        MIN=5 run_phase "report-$stem" 60 "$PY" -m policyload.report "$WORK/$stem.json" \
            --markdown "$WORK/$stem.md" --chart "$WORK/$stem.png"
    fi
}

has_benchmarks() {
    [ -s "$1" ] && "$PY" -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get("benchmarks") else 1)' "$1" 2>/dev/null
}

quick_flag() { [ "$1" = 1 ] && echo --quick; }

KEY_FILES=(SUMMARY.md run.log cuda-tests.xml bench-tiny-1.json bench-realsize.json NOISE.md bench-realsize-8b.json)

write_summary() {
    {
        echo "# policyload GPU run"
        echo
        echo "mode: $([ "$DRY_RUN" = 1 ] && echo 'CPU dry run' || echo device); $(date -u '+%Y-%m-%d %H:%M UTC'); $(( $(date +%s) - T0 ))s of a ${DEADLINE_S}s deadline"
        [ -s "$WORK/device.txt" ] && echo "results folder name (policyload.report device): $(cat "$WORK/device.txt")"
        echo
        echo "| phase | status | rc | seconds | cap | outcome |"
        echo "|---|---|---:|---:|---:|---|"
        [ -f "$WORK/phases.tsv" ] && awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6}' "$WORK/phases.tsv"
        local counts
        counts="$("${BUNDLE_PYTHON:-python3}" - "$WORK" 2>/dev/null <<'PY'
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("bench-*.json")):
    try:
        rows = json.loads(path.read_text())["benchmarks"]
    except Exception as error:
        print(f"- {path.name}: unreadable ({type(error).__name__})")
        continue
    kinds = sorted({(row.get("extra_info") or {}).get("checkpoint", "?") for row in rows})
    print(f"- {path.name}: {len(rows)} cases ({', '.join(kinds)})")
PY
)"
        if [ -n "$counts" ]; then
            echo; echo "benchmark files:"; echo "$counts"
        fi
        if [ -s "$WORK/versions.txt" ]; then
            echo; echo '```'; cat "$WORK/versions.txt"; echo '```'
        fi
        if [ -s "$WORK/logs/bundle.log" ] && grep -q . "$WORK/logs/bundle.log"; then
            echo; echo "bundle notes:"; sort -u "$WORK/logs/bundle.log" | sed 's/^/    /'
        fi
        echo
        echo "Everything (logs, JSON, tables, charts, env/) is in results.tar.gz."
    } > "$WORK/SUMMARY.md.tmp" && mv "$WORK/SUMMARY.md.tmp" "$WORK/SUMMARY.md"
}

bundle_now() {
    write_summary
    local bundle_py="${BUNDLE_PYTHON:-python3}" notes
    notes="$(mktemp)"
    if ! "$bundle_py" "$ROOT/scripts/gpu/bundle.py" "$WORK" "$OUT" "${KEY_FILES[@]}" > "$notes" 2>&1; then
        # No usable python3 for the bundler: the tarball alone, by tar.
        tar -czf "$OUT/.results.tar.gz.tmp" -C "$WORK" . 2>/dev/null && mv "$OUT/.results.tar.gz.tmp" "$OUT/results.tar.gz"
        cp "$WORK/SUMMARY.md" "$OUT/SUMMARY.md" 2>/dev/null
    fi
    mv "$notes" "$WORK/logs/bundle.log" 2>/dev/null
}

# ------------------------------------------------------------------------------------------
# setup: install, machine, versions

install_wheels() {
    shopt -s nullglob
    local wheels=("$WHEELS"/*.whl)
    shopt -u nullglob
    if [ ${#wheels[@]} = 0 ]; then
        log "no wheels in $WHEELS/: run scripts/gpu/prepare-wheels.sh here first, and carry [\"$WHEELS\"]"
        record install error - 0 - "no wheels in $WHEELS/"
        return 1
    fi
    local tags=()
    if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
        # A dry run on another Python: install the very same 3.12 wheels, as pip would there.
        tags=(--python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none)
        for tag in manylinux_2_28_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
            tags+=(--platform "$tag")
        done
    fi
    MIN=5 run_phase install 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$SITE" "${tags[@]}" "${wheels[@]}"
    [ "$(tail -n 1 "$WORK/phases.tsv" | cut -f2)" = ok ]
}

record_machine() {
    local env="$WORK/env"
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi > "$env/nvidia-smi.txt" 2>&1
        nvidia-smi -q > "$env/nvidia-smi-q.txt" 2>&1
        # Clocks, memory and load through the run, every 5 s (ended on exit).
        nvidia-smi --query-gpu=timestamp,name,clocks.sm,clocks.mem,memory.used,utilization.gpu,temperature.gpu,power.draw \
            --format=csv -l 5 > "$env/nvidia-smi-log.csv" 2>&1 &
        NVSMI_PID=$!
    else
        echo "nvidia-smi: not found" > "$env/nvidia-smi.txt"
    fi
    {
        uname -a; echo "cores: $(nproc)"; grep -m1 'model name' /proc/cpuinfo
        free -g; df -h /tmp "$POLICYLOAD_FIXTURES" "$ROOT" 2>/dev/null
    } > "$env/machine.txt" 2>&1
    "$PY" -m pip list --format=freeze > "$env/pip-freeze.txt" 2>&1
    ls -la "$WHEELS" > "$env/wheels.txt" 2>&1
}

versions_script() {
cat <<'EOF'
import importlib, importlib.metadata as md, json, os, pathlib, sys

site, wheels, dry = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3] == "1"
print(f"python {sys.version.split()[0]} ({sys.executable})")
import torch
cuda = torch.cuda.is_available()
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, cuda available: {cuda}")
if cuda:
    p = torch.cuda.get_device_properties(0)
    print(f"device 0: {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}, {p.multi_processor_count} SMs; {torch.cuda.device_count()} device(s)")
names = ["transformers", "trl", "datasets", "bitsandbytes", "accelerate", "peft", "huggingface-hub", "tokenizers",
         "safetensors", "pyarrow", "fsspec", "numpy", "pytest", "pytest-benchmark", "nvidia-ml-py", "matplotlib",
         "hypothesis", "policyload"]
for name in names:
    try:
        dist = md.distribution(name)
        print(f"  {name} {dist.version}  ({'carried' if str(dist.locate_file('')).startswith(str(site)) else 'machine'})")
    except md.PackageNotFoundError:
        print(f"  {name}: not installed")
import policyload
src = pathlib.Path(policyload.__file__).parent
print(f"policyload imported from {src}")
wheel_copy = site / "policyload"
if wheel_copy.is_dir():
    differ = [p.name for p in src.glob("*.py") if not (wheel_copy / p.name).is_file() or (wheel_copy / p.name).read_bytes() != p.read_bytes()]
    print("policyload wheel == src/" if not differ else f"policyload wheel is older than src/ ({', '.join(differ)} differ): src/ is first on PYTHONPATH, so src/ runs")

# Are the needs of every carried wheel met by what is importable here?
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
problems = []
for wheel in sorted(wheels.glob("*.whl")):
    dist_name = wheel.name.split("-")[0]
    try:
        requires = md.requires(dist_name) or []
    except md.PackageNotFoundError:
        problems.append(f"{dist_name}: carried but not installed"); continue
    for line in requires:
        req = Requirement(line)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            problems.append(f"{dist_name} needs {req}: missing"); continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            problems.append(f"{dist_name} needs {req}: {have} here")
print("needs of the carried wheels: " + ("all met" if not problems else "NOT MET:\n    " + "\n    ".join(problems)))

for module in ("trl", "datasets", "bitsandbytes", "transformers"):
    try:
        importlib.import_module(module)
    except Exception as error:  # report, do not stop: the benchmarks need only some of these
        print(f"import {module}: FAILED: {type(error).__name__}: {error}")
if cuda:
    try:
        from bitsandbytes.cextension import get_cuda_bnb_library_path
        from bitsandbytes.cuda_specs import get_cuda_specs
        path = get_cuda_bnb_library_path(get_cuda_specs())
        print(f"bitsandbytes native library: {path.name} ({'present' if path.exists() else 'MISSING: re-run prepare-wheels.sh with BNB_CUDA_MAJORS set'})")
    except Exception as error:
        print(f"bitsandbytes native library: could not tell ({type(error).__name__}: {error})")
elif not dry:
    print("NO CUDA DEVICE VISIBLE: the GPU phases would measure the CPU; stopping")
    sys.exit(3)
EOF
}

setup() {
    record_machine
    install_wheels || return 1
    export PYTHONPATH="$ROOT/src:$SITE:$ROOT/scripts/gpu${PYTHONPATH:+:$PYTHONPATH}"
    versions_script > "$WORK/versions.py"
    MIN=5 run_phase versions 120 "$PY" "$WORK/versions.py" "$SITE" "$WHEELS" "$DRY_RUN"
    cp "$WORK/logs/versions.log" "$WORK/versions.txt"
    if [ "$(tail -n 1 "$WORK/phases.tsv" | cut -f2)" != ok ]; then
        cat "$WORK/versions.txt"
        return 1
    fi
    if command -v nvidia-smi > /dev/null; then
        timeout 60 "$PY" -m bitsandbytes > "$WORK/env/bitsandbytes-diagnostics.txt" 2>&1
    fi
    sed 's/^/    /' "$WORK/versions.txt"
    bundle_now
}

# ------------------------------------------------------------------------------------------
# phases

phase_cuda() {
    local files=() path
    for path in $CUDA_TESTS; do
        if [ -e "$path" ]; then files+=("$path"); else log "cuda: $path not found (moved?): left out"; fi
    done
    [ ${#files[@]} -gt 0 ] || files=(tests conformance)
    # shellcheck disable=SC2086
    run_phase cuda-tests "$CAP_CUDA" "$PY" -m pytest "${files[@]}" -k "$CUDA_TESTS_K" -p no:randomly -p no:cacheprovider \
        -p phase_deadline --junitxml="$WORK/cuda-tests.xml" -o junit_family=xunit2 -rs $CUDA_TESTS_ARGS
}

tiny_args() {
    local args=()
    [ "$TINY_QUICK" = 1 ] && args+=(--quick)
    [ -n "$TINY_K" ] && args+=(-k "$TINY_K")
    printf '%s\0' "${args[@]}"
}

phase_tiny() {
    local args=()
    mapfile -d '' args < <(tiny_args)
    bench_phase tiny-1 "$CAP_TINY" bench-tiny-1 "${args[@]}"
    if [ -s "$WORK/bench-tiny-1.json" ]; then
        "$PY" -m policyload.report device "$WORK/bench-tiny-1.json" > "$WORK/device.txt" 2>/dev/null || rm -f "$WORK/device.txt"
    fi
}

phase_realsize() {
    if [ "$DRY_REALSIZE" != 1 ]; then
        log "phase realsize: skipped in a dry run (GBs of checkpoints; DRY_REALSIZE=1 runs it)"
        record realsize skipped - 0 "$CAP_REALSIZE" "dry run"
        return
    fi
    bench_phase realsize "$CAP_REALSIZE" bench-realsize --realsize $(quick_flag "$REALSIZE_QUICK") -k "$REALSIZE_K"
    # The DPO planner and the training-step plan held to the allocator's readings on the GPU (the same
    # checks as tox -e bench-realsize-cpu; exit 2, nothing measured, when the phase ran no such case).
    local check
    for check in check_dpo_bill check_train_step; do
        has_benchmarks "$WORK/bench-realsize.json" && MIN=5 run_phase "$check" 120 "$PY" -m "benchmarks.$check" \
            "$WORK/bench-realsize.json"
    done
}

phase_realsize8b() {
    if [ "$DRY_REALSIZE" != 1 ]; then
        log "phase realsize8b: skipped in a dry run"
        record realsize8b skipped - 0 "$CAP_REALSIZE8B" "dry run"
        return
    fi
    # Building the 16 GB checkpoint alone takes a minute or more: not worth starting with less.
    MIN=${MIN_8B_S:-120} bench_phase realsize8b "$CAP_REALSIZE8B" bench-realsize-8b --realsize \
        $(quick_flag "$REALSIZE_QUICK") -k "$REALSIZE8B_K"
}

phase_noise() {
    local args=() i runs=()
    [ "$TINY_QUICK" = 1 ] && args+=(--quick)
    [ -n "$NOISE_K" ] && args+=(-k "$NOISE_K")
    for i in 2 3; do
        KEEP=25 run_phase "tiny-$i" "$CAP_NOISE" "$PY" -m pytest benchmarks -p no:xdist -p no:randomly -p no:cacheprovider \
            -p phase_deadline --benchmark-json "$WORK/bench-tiny-$i.json" --benchmark-columns=min,median,max,rounds "${args[@]}"
    done
    for i in 1 2 3; do has_benchmarks "$WORK/bench-tiny-$i.json" && runs+=("$WORK/bench-tiny-$i.json"); done
    if [ ${#runs[@]} -ge 2 ]; then
        MIN=5 run_phase noise-report 60 "$PY" -m policyload.report noise "${runs[@]}" --markdown "$WORK/NOISE.md"
        # Would today's thresholds stay quiet between runs of unchanged code? (exit 1 = they would not)
        for i in 2 3; do
            [ -s "$WORK/bench-tiny-$i.json" ] || continue
            timeout 60 "$PY" -m policyload.report compare "$WORK/bench-tiny-1.json" "$WORK/bench-tiny-$i.json" \
                --thresholds benchmarks/thresholds.toml > "$WORK/compare-tiny-$i-vs-1.txt" 2>&1
            log "thresholds, run $i vs 1 (rc $?): $(tail -n 1 "$WORK/compare-tiny-$i-vs-1.txt")"
        done
    else
        record noise-report skipped - 0 60 "fewer than 2 runs with benchmarks"
    fi
}

# ------------------------------------------------------------------------------------------

finish() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$NVSMI_PID" ] && kill "$NVSMI_PID" 2>/dev/null
    # A dry run's own temporary install goes; WORK stays, to look at.
    [ "$DRY_RUN" = 1 ] && [ -n "${SITE_IS_TEMP:-}" ] && rm -rf "$SITE"
    bundle_now
    local check
    check="$("${BUNDLE_PYTHON:-python3}" "$ROOT/scripts/gpu/bundle.py" --check "$OUT" 2>&1)" || rc=4
    log "$check"
    log "done: exit $rc; OUT=$OUT: $(ls "$OUT" | tr '\n' ' ')"
    echo
    sed -n '/^| phase/,/^$/p' "$WORK/SUMMARY.md"
    exit "$rc"
}

main() {
    configure "$@"
    cd "$ROOT" || exit 3
    exec > >(tee -a "$WORK/run.log") 2>&1
    trap finish EXIT
    trap 'log "signal: stopping"; exit 130' INT TERM
    log "policyload GPU run ($([ "$DRY_RUN" = 1 ] && echo 'CPU dry run' || echo device)): deadline ${DEADLINE_S}s, phases: $PHASES"
    log "WORK=$WORK OUT=$OUT SITE=$SITE POLICYLOAD_FIXTURES=$POLICYLOAD_FIXTURES PYTHON=$PY"
    setup || exit 3
    local phase
    for phase in $PHASES; do
        case "$phase" in
            cuda|tiny|realsize|noise|realsize8b) "phase_$phase" ;;
            *) log "unknown phase $phase: skipped" ;;
        esac
    done
    [ "$FAILED" = 0 ] || exit 1
    exit 0
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
