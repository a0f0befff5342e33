"""What TRL's DPOTrainer holds once its `__init__` returns, read from the machine in a fresh process:
the DPO load bill, measured.

Run in a child forked by `FreshProcessServer` (request `{"dpo": {...}}`), so the heap is clean and
the peak counter resettable. The baseline is taken after trl, peft and datasets are imported (the
server imports them on the first DPO request) and, with a `warmup_path` (a tiny checkpoint of the
same architecture), after the child has built, used and freed the same trainer on it: the first
construction in a process pages in library code, runs lazy imports and makes first-use
allocations, none of which is the bill (as for one load: `fresh_process.warm_up`). Then the trainer
is built as the recipe builds it (`policyload.plan.trainer.build_dpo_trainer`) and timed; the time
is therefore a warm process's. Afterwards every model the trainer holds
(`trainer.model`, `trainer.ref_model`) is used as a load benchmark uses a model (`host_memory.use_model`:
a forward pass, a read of every page), and host memory is read from /proc exactly as for one load:
private memory after `malloc_trim` plus the file-backed pages under live tensors, and VmHWM.

Per component, what /proc can tell apart: the file-backed pages under each model's tensors (policy,
reference). Private memory has no owner in /proc, so it is one figure for the process. The tensor
sums per component (`tensor_*_bytes`: base weights, LoRA adapter, reference) are a layout check of
what the trainer built, never a memory measurement.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace

#: Libraries a DPO construction imports; the server imports them once, before forking.
DPO_IMPORTS = ("datasets", "peft", "trl")


def import_dpo_libraries() -> None:
    import importlib

    for name in DPO_IMPORTS:
        importlib.import_module(name)


def _use_held_models(trainer) -> dict[str, list]:
    """Use every model the trainer holds as a load benchmark uses one (`host_memory.use_model`: a
    forward pass, a read of every page); their storages by role ("policy", "reference")."""
    from . import host_memory

    storages = {}
    for role, model in (("policy", trainer.model), ("reference", trainer.ref_model)):
        if model is not None:
            model.eval()
            storages[role] = host_memory.use_model(model)
    return storages


def _warm_up(spec, options, rows, output_dir) -> None:
    """Build, use and free the trainer of `spec` (a tiny checkpoint), leaving nothing in the heap."""
    import gc

    from ..plan.trainer import build_dpo_trainer
    from . import host_memory

    trainer = build_dpo_trainer(spec, options, rows, output_dir)
    _use_held_models(trainer)
    del trainer
    gc.collect()
    host_memory.trim_heap()


def _tensor_bytes(model, predicate) -> int:
    """Bytes of the distinct parameter and buffer tensors of `model` whose name passes `predicate`
    (bitsandbytes' quantization state included): a layout figure, not a reading of memory."""
    from ..memory_model import quant_state_tensors

    seen: dict[int, int] = {}
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if predicate(name):
            for item in (tensor, *quant_state_tensors(tensor)):
                seen[item.data_ptr()] = item.numel() * item.element_size()
    return sum(seen.values())


def _is_adapter(name: str) -> bool:
    return ".lora_" in name


def measure_dpo_in_this_process(request: dict) -> dict:
    """Build the trainer of `request` (`spec`, `options`, `rows`), then read what the process holds."""
    import torch

    from ..plan import DPOOptions
    from ..plan.trainer import build_dpo_trainer
    from ..spec import LoadSpec
    from . import host_memory
    from .latency import LatencyTracker
    from .rss import RssTracker, reset_peak_rss

    spec = LoadSpec(**request["spec"])
    options = DPOOptions(**request["options"])
    output_dir = tempfile.mkdtemp(prefix="policyload-dpo-")
    device = "cuda" if torch.cuda.is_available() else None
    try:
        warmup_path = request.get("warmup_path")
        if warmup_path:
            _warm_up(replace(spec, model_name_or_path=warmup_path), options, request["rows"], output_dir)
        files = host_memory.checkpoint_files(spec.model_name_or_path)
        evicted = host_memory.evict_from_page_cache(files) if files else False
        reset_peak_rss()
        baseline = host_memory.proc_status()
        with RssTracker() as rss, LatencyTracker(device) as latency:
            trainer = build_dpo_trainer(spec, options, request["rows"], output_dir)
        result = {
            "dpo_init_s": latency.seconds,
            "dpo_page_cache_evicted": evicted,
            "dpo_warmed_up_on": warmup_path,
            **{f"dpo_{key}": value for key, value in rss.readout().items()},
        }
        storages = _use_held_models(trainer)
        result["dpo_models_held"] = sorted(storages)
        everything = [storage for role in storages for storage in storages[role]]
        host = host_memory.host_memory_after_load(baseline, everything)
        result.update({f"dpo_{key}": value for key, value in host.items()})
        for role in ("policy", "reference"):
            result[f"dpo_host_file_referenced_{role}_bytes"] = (
                host_memory.file_backed_resident_bytes(storages[role]) if role in storages else 0
            )
        policy, reference = trainer.model, trainer.ref_model
        result["dpo_tensor_policy_bytes"] = _tensor_bytes(policy, lambda name: not _is_adapter(name))
        result["dpo_tensor_adapter_bytes"] = _tensor_bytes(policy, _is_adapter)
        result["dpo_tensor_reference_bytes"] = 0 if reference is None else _tensor_bytes(reference, lambda name: True)
        result["dpo_adapter_parameters"] = sum(p.numel() for name, p in policy.named_parameters() if _is_adapter(name))
        if device:
            result["dpo_cuda_allocated_bytes"] = torch.cuda.memory_allocated()
            result["dpo_cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        return result
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
