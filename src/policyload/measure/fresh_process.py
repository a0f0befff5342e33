"""The fresh-process measurement: cold start, and the host memory of a load in a process that
holds nothing else (anonymous and file-backed resident memory once the model is usable, and the peak).

In-process host numbers lie (glibc keeps freed memory, `ru_maxrss` only ever grows), so these
are read in a process that has only imported the libraries. `FreshProcessServer` starts that
interpreter once (`python -m policyload.measure serve`, see `__main__.py`) and it forks a child
per measurement.

A forked child does not inherit its parent's page-table entries for library code (Linux copies
only mappings with private pages), and the load path's lazy imports and first-use allocations
happen on the first load of a process. Both land in the child's peak RSS although neither is the
model's: on the 2-core machine they put 50-130 MiB on the Qwen2-0.5B peak (bf16 +13.5%, nf4 +10%
over the prediction). With a `warmup_path` (a tiny checkpoint of the same architecture), the host
memory is therefore read in a second child that first runs the same load and forward pass on it,
frees it, and only then takes its baseline: the same peaks came within 1% of the prediction. The
cold start stays the first child's, where nothing ran before the load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from .latency import LatencyTracker
from .nvml import NvmlTracker
from .rss import RssTracker, reset_peak_rss

SERVE_COMMAND = [sys.executable, "-m", "policyload.measure", "serve"]
#: glibc's mmap threshold, pinned in the server (and so its forked children): allocations of 1 MiB
#: and more are mmap'ed and given back on free. By default glibc raises the threshold after the
#: first large free (up to 32 MiB), so quantization's per-layer transients stay in its heap: the
#: same 8-bit Qwen2-0.5B load then peaked anywhere between 1.39 and 2.06 GiB across four runs on
#: the 2-core machine, and held 0.4-1.1 GiB of private memory before `malloc_trim`. Pinned, the
#: peak is the load's own working set (1.35 GiB), run after run.
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1024 * 1024)}
#: What "cold" means in `cold_first_load_s`.
COLD_MEANING = (
    "first load in a fresh process (libraries imported, not timed), the checkpoint's files evicted "
    "from the page cache first (POSIX_FADV_DONTNEED)"
)
COLD_MEANING_NOT_EVICTED = "first load in a fresh process (libraries imported, not timed); page cache not evicted"
# NvmlTracker read-out keys the cold result keeps, prefixed with "cold_" (the delta would be the
# whole process's, which the allocator and RSS numbers already tell better).
COLD_NVML_KEYS = ("nvml_process_used_bytes", "cuda_context_bytes", "nvml_unavailable")


class FreshProcessServer:
    """A child interpreter that imports torch, transformers, bitsandbytes and policyload once,
    then forks a fresh process per measurement: cold first load, peak and resident RSS.

    Forking from a process that has loaded nothing gives each measurement a clean heap and a
    resettable peak counter without paying the imports (seconds) per case. The interpreter's
    import time is measured once (`import_s`). CUDA is never initialised in the server, so each
    forked child may use it.
    """

    def __init__(self, timeout_s: float = 600):
        self.timeout_s = timeout_s
        self._process = subprocess.Popen(
            SERVE_COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            env={**os.environ, **ALLOCATOR_ENV},
        )
        self.import_s = self._reply()["import_s"]

    def _reply(self) -> dict:
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"fresh-process server exited with code {self._process.wait()}")
        return json.loads(line)

    def measure(self, spec_fields: dict, warmup_path: str | None = None) -> dict:
        """Cold-start numbers of `load_policy(LoadSpec(**spec_fields))` in a fresh process; with
        `warmup_path`, its host memory from a second child warmed up on that checkpoint (module doc).

        Raises RuntimeError naming the failure if a child crashed (OOM-killed included).
        """
        return self._ask({"spec": spec_fields, "warmup_path": warmup_path}, "load")

    def measure_dpo(self, request: dict) -> dict:
        """What a constructed DPOTrainer holds, in a fresh process (`dpo_bill`: the request's keys);
        RuntimeError naming the failure if the child crashed (OOM-killed included)."""
        return self._ask({"dpo": request}, "DPO trainer")

    def measure_train_step(self, request: dict) -> dict:
        """The first DPO training steps, read per phase, in a fresh process (`train_step`: the request's keys);
        RuntimeError naming the failure if the child crashed (OOM-killed included)."""
        return self._ask({"train": request}, "DPO training step")

    def _ask(self, request: dict, what: str) -> dict:
        """Send one request line, read its reply; a child's failure as RuntimeError naming `what`."""
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        reply = self._reply()
        if "error" in reply:
            raise RuntimeError(f"fresh-process {what} failed: {reply['error']}")
        return reply

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            self._process.wait(timeout=30)

    def __enter__(self) -> FreshProcessServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cold_device_memory(device: str, device_index: int, nvml=None) -> dict:
    """What the cold load holds on `device` once loaded: the allocator's bytes and NVML's process
    share and CUDA context, or the reason NVML could not say (`cold_nvml_unavailable`)."""
    import torch

    with NvmlTracker(device_index, nvml=nvml) as tracker:
        pass
    readout = tracker.readout()
    result = {f"cold_{key}": readout[key] for key in COLD_NVML_KEYS if key in readout}
    result["cold_cuda_allocated_bytes"] = torch.cuda.memory_allocated(device)
    return result


def warm_up(spec_fields: dict, warmup_path: str) -> None:
    """Run the load path once on `warmup_path` (same spec fields), use the model, free it: library
    code paged in, lazy imports done, first-use allocations made, none of it left in the heap."""
    import gc

    from ..load import load_policy
    from ..spec import LoadSpec
    from ..topology import Topology
    from . import host_memory

    model = load_policy(LoadSpec(**{**spec_fields, "model_name_or_path": warmup_path}), Topology.detect())
    host_memory.use_model(model)
    del model
    gc.collect()
    host_memory.trim_heap()


def measure_in_this_process(spec_fields: dict, warmup_path: str | None = None) -> dict:
    """The load itself, in the forked child: latency, host memory from /proc (anonymous and
    file-backed, once usable, and the peak), and on CUDA device memory; with `warmup_path`, after
    `warm_up` on it (then only its `host_*` figures are kept: module docstring).

    The checkpoint's files are evicted from the page cache first, so the load reads them from disk."""
    from ..load import load_policy
    from ..spec import LoadSpec
    from ..topology import Topology
    from . import host_memory

    if warmup_path:
        warm_up(spec_fields, warmup_path)
    spec = LoadSpec(**spec_fields)
    topology = Topology.detect()
    device = topology.device if topology.accelerator == "cuda" else None
    files = host_memory.checkpoint_files(spec.model_name_or_path)
    evicted = host_memory.evict_from_page_cache(files) if files else False
    reset_peak_rss()
    baseline = host_memory.proc_status()
    with RssTracker() as rss, LatencyTracker(device) as latency:
        model = load_policy(spec, topology)
    result = {
        "cold_first_load_s": latency.seconds,
        "cold_meaning": COLD_MEANING if evicted else COLD_MEANING_NOT_EVICTED,
        "cold_page_cache_evicted": evicted,
        **rss.readout(),
        # An estimator held against the measurement (policyload.estimators), not a measurement.
        "get_memory_footprint_bytes": int(model.get_memory_footprint()),
    }
    storages = host_memory.use_model(model)
    result.update(host_memory.host_memory_after_load(baseline, storages), host_warmup_checkpoint=warmup_path)
    if device:
        result.update(cold_device_memory(device, topology.local_process_index))
    return result


def serve() -> None:
    """The server's loop: import the libraries, say how long that took, then per request line on
    stdin (`{"spec": fields, "warmup_path": path or null}`) one JSON reply line on stdout: the cold
    child's numbers, its `host_*` keys replaced by the warmed-up child's when a path is given;
    `{"dpo": request}`: what a constructed DPOTrainer holds (`dpo_bill`), from one cold child;
    `{"train": request}`: the first DPO training steps read per phase (`train_step`), from one cold child."""
    start = time.perf_counter()
    import bitsandbytes  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from .. import load  # noqa: F401

    print(json.dumps({"import_s": time.perf_counter() - start}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if "dpo" in request or "train" in request:
            # trl, peft and datasets imported once, before forking: every DPO child's baseline has them.
            from .dpo_bill import import_dpo_libraries, measure_dpo_in_this_process
            from .train_step import measure_train_step_in_this_process

            import_dpo_libraries()
            function = measure_dpo_in_this_process if "dpo" in request else measure_train_step_in_this_process
            print(json.dumps(measure_in_a_fork(function, request.get("dpo") or request["train"])), flush=True)
            continue
        reply = measure_in_a_fork(measure_in_this_process, request["spec"])
        if request["warmup_path"] and "error" not in reply:
            warm = measure_in_a_fork(measure_in_this_process, request["spec"], request["warmup_path"])
            host = {key: value for key, value in warm.items() if key.startswith("host_")}
            reply = warm if "error" in warm else {**reply, **host}
        print(json.dumps(reply), flush=True)


def measure_in_a_fork(function, *args) -> dict:
    """`function(*args)` in a forked child; its failure, or its death, as `{"error": ...}`."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            reply = function(*args)
        except BaseException as error:  # reported to the parent, which fails the case
            reply = {"error": f"{type(error).__name__}: {error}"}
        with os.fdopen(write_end, "w") as out:
            out.write(json.dumps(reply))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as source:
        text = source.read()
    _, status = os.waitpid(pid, 0)
    if not text:
        signal = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        return {"error": f"child died (signal {signal}, status {status}); out of memory?"}
    return json.loads(text)
