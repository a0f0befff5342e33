"""TRL's own DPOTrainer, one step, under a real engine (DeepSpeed ZeRO-1/2/3, or FSDP2) on this rank;
what the engine holds, read off its own partitions. One JSON file per rank.

    DS_ACCELERATOR=cpu OMP_NUM_THREADS=1 python -m torch.distributed.run --nproc_per_node 2 \\
        conformance/sharded_run.py OUTDIR --engine zero3 --checkpoint DIR

Each rank records:

* `from_pretrained`: the keywords each call received (is there a `device_map`?) and whether ZeRO-3's
  `zero.Init` was active (`is_deepspeed_zero3_enabled()`) when it ran;
* `checkpoint_reads`: every `load_state_dict(map_location=...)` and `safe_open` transformers made, so
  which ranks read tensor data and which only the header (map_location "meta");
* `after_load` (end of `DPOTrainer.__init__`), `after_step` (just after the ZeRO optimizer's step) and
  `after_train` (once `train()` with max_steps=1 returned): the policy's and the reference's elements
  as the engine holds them on this rank: a ZeRO-3 parameter's `ds_tensor` (its partition), otherwise
  the parameter itself; and which parameters are materialised whole (gathered and not released);
* `gradients`: read inside the ZeRO optimizer's `step` (DeepSpeed steps inside accelerate's
  `backward`, so no Trainer callback sees them): stage 1/2 `averaged_gradients` (this rank's
  partition), stage 3 `grad_partitions_flat_buffer`, plus any `param.grad` left on the module;
* `optimizer_state`: the fp32 master partitions (`single_partition_of_fp32_groups`,
  `fp32_partitioned_groups_flat`) and the inner torch optimizer's state tensors (exp_avg, exp_avg_sq);
* `host`: VmHWM / RSS (information only: host memory on CPU is noisy, see the module docs).

`conformance/test_sharded.py` launches this for each engine and holds the records to the per-rank plan
(`policyload.plan.sharding`). The DeepSpeed-on-CPU workaround is `upstream_patches.deepspeed_on_cpu`,
the FSDP2 one `upstream_patches.fsdp2_on_cpu` (`run_fsdp2_rank`: the same figures off DTensor local
shards, gradients at the Trainer's `on_pre_optimizer_step`). On CUDA (NCCL, one GPU per rank) the
DeepSpeed runs use the Trainer's own state and add `torch.cuda.max_memory_allocated` per rank.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
# As distributed_check.py: after PYTHONPATH's entries, so a mutated tree put first there wins.
_AFTER_PYTHONPATH = 1 + len([entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry])
sys.path[_AFTER_PYTHONPATH:_AFTER_PYTHONPATH] = [str(_ROOT), str(_ROOT / "src")]

SCRIPT_NAME = "conformance/sharded_run.py"
ENGINES = {"zero1": 1, "zero2": 2, "zero3": 3, "fsdp2": None}
#: accelerate's FSDP2 plugin as the policy gets it: per decoder layer, resharded after forward.
FSDP2_PLUGIN = dict(
    auto_wrap_policy="transformer_based_wrap", transformer_cls_names_to_wrap=["LlamaDecoderLayer"],
    reshard_after_forward=True, cpu_ram_efficient_loading=False, state_dict_type="SHARDED_STATE_DICT",
)


def deepspeed_config(stage: int) -> dict:
    """The smallest DeepSpeed config for the Trainer: the stage, everything else "auto" (filled by
    transformers' `HfTrainerDeepSpeedConfig` from the TrainingArguments); no optimizer block, so the
    Trainer's own AdamW is the client optimizer ZeRO wraps."""
    return {
        "zero_optimization": {"stage": stage},
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
    }


def module_holdings(module) -> dict:
    """Elements and bytes this rank holds for `module`'s parameters, as the engine holds them: a ZeRO-3
    parameter's `ds_tensor`, an FSDP2 parameter's DTensor local shard (`to_local()`), else itself."""
    local = whole = 0
    local_bytes = 0
    persistent = []
    for name, param in module.named_parameters():
        shard = getattr(param, "ds_tensor", None)
        zero3 = shard is not None
        if hasattr(param, "to_local"):
            shard = param.to_local()
        if shard is not None:
            local += shard.numel()
            local_bytes += shard.numel() * shard.element_size()
            if zero3 and param.data.numel():  # gathered and not released
                whole += param.data.numel()
                persistent.append(name)
        else:
            local += param.numel()
            local_bytes += param.numel() * param.element_size()
    return {
        "elements": local,
        "bytes": local_bytes,
        "full_elements": sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters()),
        "dtensor": any(hasattr(p, "to_local") for p in module.parameters()),
        "materialised_whole_elements": whole,
        "materialised_whole": persistent,
        "partitioned": any(hasattr(p, "ds_tensor") for p in module.parameters()),
    }


def _tensor_sizes(tensors) -> tuple[int, int]:
    tensors = [t for t in tensors if t is not None]
    return sum(t.numel() for t in tensors), sum(t.numel() * t.element_size() for t in tensors)


def optimizer_holdings(zero_optimizer) -> dict:
    """The ZeRO optimizer's fp32 master partitions and the inner optimizer's state tensors."""
    masters = getattr(zero_optimizer, "single_partition_of_fp32_groups", None)
    if masters is None:
        masters = getattr(zero_optimizer, "fp32_partitioned_groups_flat", [])
    master_elements, master_bytes = _tensor_sizes(masters)
    state = {}
    for per_param in zero_optimizer.optimizer.state.values():
        for key, value in per_param.items():
            if hasattr(value, "numel") and value.dim() > 0:
                elements, size = state.get(key, (0, 0))
                state[key] = (elements + value.numel(), size + value.numel() * value.element_size())
    return {
        "master_elements": master_elements,
        "master_bytes": master_bytes,
        "state": {key: {"elements": e, "bytes": b} for key, (e, b) in sorted(state.items())},
    }


def gradient_holdings(zero_optimizer, module) -> dict:
    """This rank's gradients just before the optimizer step."""
    flat = getattr(zero_optimizer, "grad_partitions_flat_buffer", None)  # ZeRO-3
    if flat is not None:
        partition_elements, partition_bytes = flat.numel(), flat.numel() * flat.element_size()
    else:  # ZeRO-1/2: averaged_gradients[group] = this rank's partition, as a list of tensors
        groups = getattr(zero_optimizer, "averaged_gradients", {})
        tensors = [t for group in groups.values() for t in (group or [])]
        partition_elements, partition_bytes = _tensor_sizes(tensors)
    on_module = _tensor_sizes(p.grad for p in module.parameters())
    return {
        "partition_elements": partition_elements,
        "partition_bytes": partition_bytes,
        "param_grad_elements": on_module[0],
        "param_grad_bytes": on_module[1],
    }


def host() -> dict:
    """VmHWM / VmRSS, and on CUDA the allocator's record for this rank's GPU (information beside the
    partitions; on GPUs `max_memory_allocated` is the reading the step peak is held to)."""
    import torch

    status = Path("/proc/self/status").read_text().splitlines()
    fields = {line.split(":")[0]: line.split()[1] for line in status if line.startswith(("VmHWM", "VmRSS"))}
    readings = {name: int(value) * 1024 for name, value in fields.items()}
    if torch.cuda.is_available():
        readings["cuda_memory_allocated"] = torch.cuda.memory_allocated()
        readings["cuda_max_memory_allocated"] = torch.cuda.max_memory_allocated()
    return readings


def _local(tensor):
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def one_step_config(out_dir: Path, name: str, **engine):
    """The DPOConfig both engines' runs share: one float32 optimizer step of batch 2, nothing saved or
    logged, in a fresh folder of `out_dir`; `engine` adds the engine's own fields."""
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=out_dir))),
        report_to="none", bf16=False, max_steps=1, per_device_train_batch_size=2, save_strategy="no",
        logging_strategy="no", model_init_kwargs={"dtype": "float32"}, **engine,
    )


def run_fsdp2_rank(out_dir: Path, checkpoint: str) -> dict:
    """TRL's DPOTrainer under FSDP2, one step: accelerate's device check bypassed (`fsdp2_on_cpu`)."""
    import torch
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOTrainer

    from conformance.upstream_patches import accelerate_distributed_type_with_fsdp_plugin_on_cpu, fsdp2_on_cpu
    from fixtures.preference_data import ROWS
    from policyload.plan.trainer import word_tokenizer

    PartialState(cpu=True, backend="gloo")  # the process group, then the probe on a MULTI_CPU rank
    without_bypass = accelerate_distributed_type_with_fsdp_plugin_on_cpu()
    state = PartialState(cpu=True, backend="gloo")
    record: dict = {
        "engine": "fsdp2", "rank": state.process_index, "world_size": state.num_processes,
        "backend": state.backend, "accelerate_without_bypass": without_bypass,
    }
    args = one_step_config(
        out_dir, f"fsdp2-rank{state.process_index}",
        use_cpu=True, ddp_backend="gloo", accelerator_config={"use_configured_state": True},
    )
    with fsdp2_on_cpu(FSDP2_PLUGIN):
        trainer = DPOTrainer(
            model=checkpoint, args=args, train_dataset=Dataset.from_list(ROWS), processing_class=word_tokenizer(ROWS)
        )
    record["distributed_type"] = str(trainer.accelerator.distributed_type.value)
    record["reference_class"] = type(trainer.ref_model).__name__
    record["reference_wrapped_submodules"] = sum(
        1 for m in trainer.ref_model.modules() if type(m).__name__.startswith("FSDP") and m is not trainer.ref_model
    )
    record["after_load"] = {"policy": module_holdings(trainer.model), "reference": module_holdings(trainer.ref_model)}

    class AtTheStep(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            grads = [_local(p.grad) for p in model.parameters() if p.grad is not None]
            record["gradients"] = {
                "partition_elements": sum(g.numel() for g in grads),
                "partition_bytes": sum(g.numel() * g.element_size() for g in grads),
            }

    trainer.add_callback(AtTheStep())
    trainer.train()
    states = [
        (key, _local(value)) for per_param in trainer.optimizer.state.values()
        for key, value in per_param.items() if hasattr(value, "dim") and value.dim() > 0
    ]
    record["after_step"] = {
        "policy": module_holdings(trainer.model_wrapped),
        "reference": module_holdings(trainer.ref_model),
        "optimizer_state": {
            key: {"elements": sum(v.numel() for k, v in states if k == key),
                  "bytes": sum(v.numel() * v.element_size() for k, v in states if k == key)}
            for key in sorted({k for k, _ in states})
        },
        "host": host(),
    }
    record["policy_wrapped_submodules"] = sum(
        1 for m in trainer.model_wrapped.modules()
        if type(m).__name__.startswith("FSDP") and m is not trainer.model_wrapped
    )
    record["torch"] = torch.__version__
    state.wait_for_everyone()
    return record


def run_rank(engine: str, out_dir: Path, checkpoint: str) -> dict:
    if engine == "fsdp2":
        return run_fsdp2_rank(out_dir, checkpoint)
    import torch
    from accelerate import PartialState

    from conformance.upstream_patches import deepspeed_on_cpu

    stage = ENGINES[engine]
    cuda = torch.cuda.is_available()
    if cuda:  # NCCL: the Trainer's own DeepSpeed path works; one GPU per rank
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        torch.cuda.reset_peak_memory_stats()
    else:
        deepspeed_on_cpu()  # the workaround, fenced there: DeepSpeed's state over gloo, both ranks
    import transformers.modeling_utils as modeling_utils
    from datasets import Dataset
    from transformers.integrations import is_deepspeed_zero3_enabled
    from trl import DPOTrainer

    from fixtures.preference_data import ROWS
    from policyload.plan.trainer import word_tokenizer

    record: dict = {"engine": engine, "zero_stage": stage, "from_pretrained": [], "checkpoint_reads": []}

    from transformers import PreTrainedModel

    # TRL 1.16 create_model_from_path: `architecture.from_pretrained(model_id, **kwargs)` with the class
    # named by the config (trainer/utils.py:1312-1360), which inherits PreTrainedModel's.
    original_from_pretrained = PreTrainedModel.from_pretrained.__func__
    original_load_state_dict = modeling_utils.load_state_dict
    original_safe_open = modeling_utils.safe_open
    inside_load_state_dict = []

    def from_pretrained(cls, path, *args, **kwargs):
        record["from_pretrained"].append(
            {
                "keywords": sorted(kwargs),
                "device_map": repr(kwargs.get("device_map", "<absent>")),
                "zero3_init": bool(is_deepspeed_zero3_enabled()),
            }
        )
        return original_from_pretrained(cls, path, *args, **kwargs)

    def load_state_dict(checkpoint_file, map_location="cpu", *args, **kwargs):
        # ZeRO-3 path (modeling_utils.py:4530-4545): "cpu" on rank 0, "meta" (header only) elsewhere
        record["checkpoint_reads"].append({"via": "load_state_dict", "map_location": str(map_location)})
        inside_load_state_dict.append(True)
        try:
            return original_load_state_dict(checkpoint_file, map_location, *args, **kwargs)
        finally:
            inside_load_state_dict.pop()

    def safe_open(*args, **kwargs):
        if not inside_load_state_dict:  # the other path: every rank maps the file (modeling_utils.py:4579)
            record["checkpoint_reads"].append({"via": "safe_open", "map_location": str(kwargs.get("device", "cpu"))})
        return original_safe_open(*args, **kwargs)

    PreTrainedModel.from_pretrained = classmethod(from_pretrained)
    modeling_utils.load_state_dict = load_state_dict
    modeling_utils.safe_open = safe_open

    args = one_step_config(
        out_dir, f"{engine}-rank{os.environ['RANK']}",
        deepspeed=deepspeed_config(stage), accelerator_config={"use_configured_state": not cuda},
    )
    state = PartialState()  # the workaround's on CPU; the one DPOConfig made on CUDA
    record.update(
        rank=state.process_index,
        world_size=state.num_processes,
        distributed_type=str(state.distributed_type.value),
        backend=state.backend,
    )
    trainer = DPOTrainer(
        model=checkpoint,
        args=args,
        train_dataset=Dataset.from_list(ROWS),
        processing_class=word_tokenizer(ROWS),
    )
    PreTrainedModel.from_pretrained = classmethod(original_from_pretrained)
    modeling_utils.load_state_dict = original_load_state_dict
    modeling_utils.safe_open = original_safe_open

    reference = trainer.ref_model
    record["reference_engine_stage"] = reference.zero_optimization_stage() if hasattr(reference, "module") else None
    reference_module = getattr(reference, "module", reference)
    record["after_load"] = {
        "policy": module_holdings(trainer.model),
        "reference": module_holdings(reference_module),
        "host": host(),
    }

    engines = {}
    original_prepare = trainer.accelerator.prepare

    def prepare(*objects, **kwargs):  # the Trainer prepares the policy engine inside train()
        prepared = original_prepare(*objects, **kwargs)
        engine_ = trainer.accelerator.deepspeed_engine_wrapped
        if engine_ is not None and "engine" not in engines:
            engines["engine"] = engine_.engine
            zero_optimizer = engine_.engine.optimizer
            original_step = zero_optimizer.step

            def step(*a, **k):
                module = engine_.engine.module
                record["gradients"] = gradient_holdings(zero_optimizer, module)
                result = original_step(*a, **k)
                record["after_step"] = {
                    "policy": module_holdings(module),
                    "reference": module_holdings(reference_module),
                    "optimizer_state": optimizer_holdings(zero_optimizer),
                    "host": host(),
                }
                return result

            zero_optimizer.step = step
        return prepared

    trainer.accelerator.prepare = prepare
    trainer.train()
    engine_ = engines["engine"]
    record["policy_engine_stage"] = engine_.zero_optimization_stage()
    groups = getattr(engine_.optimizer, "fp16_groups", None) or engine_.optimizer.bit16_groups
    record["optimizer_groups_elements"] = [sum(getattr(p, "ds_numel", p.numel()) for p in group) for group in groups]
    record["after_train"] = {"policy": module_holdings(engine_.module), "host": host()}
    record["torch"] = torch.__version__
    state.wait_for_everyone()
    return record


def _realsize(name: str) -> str:
    """The real-size checkpoint, built once: rank 0 first, the others after a barrier."""
    import torch.distributed as dist

    from fixtures.realsize import realsize_checkpoint

    dist.init_process_group(backend="nccl" if __import__("torch").cuda.is_available() else "gloo")
    if dist.get_rank() == 0:
        realsize_checkpoint(name)
    dist.barrier()
    folder = str(realsize_checkpoint(name))
    dist.destroy_process_group()
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder for <engine>-rank<RANK>.json")
    parser.add_argument("--engine", required=True, choices=sorted(ENGINES))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint folder (the odd tiny Llama fixture)")
    source.add_argument("--realsize", help="a real-size fixture (fixtures.realsize), built by rank 0 first")
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        parser.error("run under torchrun: python -m torch.distributed.run --nproc_per_node 2 " + str(SCRIPT_NAME))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint or _realsize(args.realsize)
    record = run_rank(args.engine, args.out_dir, checkpoint)
    (args.out_dir / f"{args.engine}-rank{record['rank']}.json").write_text(json.dumps(record, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
