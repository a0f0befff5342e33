"""Per rank: what each engine holds of a DPO run's model states (policy, reference, adapter, gradients,
optimizer state) on N ranks, and its loading peak, from `config.json` alone.

The engines, as TRL 1.16's DPOTrainer drives them (`DPOOptions.distributed_type`, `deepspeed_zero_stage`,
`world_size`, `offload_optimizer`, `offload_param`); `W` is the world size:

* **DDP** (`MULTI_GPU`, or `NO` with one rank): everything whole on every rank.
* **ZeRO-0/1/2/3** (DeepSpeed 0.19.8, `runtime/zero/`):
  - parameters: whole under stages 0-2; under stage 3 each parameter is partitioned as it is created
    (`zero.Init`, `partition_parameters.py:1690-1702`: padded to a multiple of `W`, so each rank's
    `ds_tensor` holds `ceil(numel / W)` elements).
  - the reference: TRL's `prepare_deepspeed` (trl 1.16 `models/utils.py:285-287`) keeps stage 3 for
    the reference and forces stage 0 under ZeRO-1/2: a whole reference on every rank.
  - optimizer state: the Trainer's AdamW is the client optimizer; ZeRO keeps an fp32 master copy of this
    rank's partition plus `exp_avg` and `exp_avg_sq` on it (fp32): 12 bytes per partition element.
    Stages 1/2 flatten each parameter group (the Trainer's two: decayed and not,
    `Trainer.get_decay_parameter_names`) and pad it to a multiple of `2 x W`
    (`stage_1_and_2.py:441-446`, `nccl_start_alignment_factor = 2`): a partition is
    `ceil(group / 2W) x 2`. Stage 3 partitions per parameter (`ceil(numel / W)` each).
  - gradients: at the optimizer step each rank holds its partition (`averaged_gradients`, the optimizer
    partition's size; stage 3 `grad_partitions_flat_buffer`), in the parameters' dtype. Stage 1 too, at
    a gradient-accumulation boundary (the Trainer's default of 1 step: `reduce_ready_partitions_and_remove_grads`
    reduces and frees each bucket, `stage_1_and_2.py:2293-2295`); with accumulation, stage 1 keeps the
    whole gradients between micro-steps (not planned: `gradient_accumulation_steps=1`). Seen on 2 ranks:
    ZeRO-1 and ZeRO-2 held the same partition at the step.
  - gathered parameters under stage 3: a forward gathers each module's parameters whole and releases
    them only once more than `stage3_max_live_parameters` elements are live or a parameter's reuse
    distance passes `stage3_max_reuse_distance` (both 1e9 by default, `runtime/zero/config.py:245-251`):
    after the first step up to min(all parameters, 1e9) elements of the policy stay gathered on every
    rank (seen: the whole 2-rank test policy); the reference, run without grad, was released.
  - offload: `offload_optimizer` moves the master copy and Adam state to host memory (stages 1-3);
    `offload_param` (stage 3 only) moves the parameter partitions too (policy and reference: TRL drops
    only `offload_optimizer` for the reference, `models/utils.py:281`).
* **FSDP2** (`FSDP`: torch `fully_shard`, full shard): each parameter is split on dim 0 into `W`
  chunks, storage padded to `ceil(dim0 / W)` rows (torch `distributed/fsdp/_fully_shard/_fsdp_param.py`);
  the policy is wrapped per decoder layer and at the root by accelerate's `fsdp2_prepare_model`; the
  reference by TRL's `prepare_fsdp` at the root only (trl 1.16 `models/utils.py:313-337`): at rest both
  are sharded alike, but the reference's forward gathers the whole of it at once. Gradients are sharded
  like the parameters; AdamW's two states sit on the shards in the parameters' dtype. Not measured
  on real ranks here (accelerate enables FSDP for accelerator processes only; docs/distributed.md).

The loading peak per rank: under ZeRO-3 the model is partitioned as it is built and rank 0 alone reads
the checkpoint's tensors (other ranks read the header: transformers 5.24 `modeling_utils.py:4530-4545`,
`map_location = "cpu" if rank == 0 else "meta"`), then every module's own parameters are gathered
whole to copy the weights in (`integrations/deepspeed.py:508`, `GatheredParameters(modifier_rank=0)`):
the peak is the partitions plus the largest module's parameters whole. Every other engine loads the
whole model on every rank first (transformers#43749: `cpu_ram_efficient_loading` still loads full
weights on every rank in 5.24); the reference is loaded while the policy is resident.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .loads import DPOPlan

#: DeepSpeed's default `stage3_max_live_parameters` (runtime/zero/config.py:245): elements a ZeRO-3
#: forward may keep gathered.
ZERO3_MAX_LIVE_PARAMETERS = 10**9
#: Bytes per element of ZeRO's optimizer state: fp32 master copy, exp_avg, exp_avg_sq.
ZERO_OPTIMIZER_BYTES = 3 * 4
#: DeepSpeed stage_1_and_2.py:387, `nccl_start_alignment_factor`: groups pad to a multiple of 2 x W.
ZERO_ALIGNMENT_FACTOR = 2


@dataclass(frozen=True)
class RankPlan:
    """Elements and bytes one rank holds (the rank with the most: rank 0), by component."""

    engine: str
    world_size: int
    elements: dict[str, int]
    bytes: dict[str, int]
    host_bytes: dict[str, int]
    loading_peak_bytes: int
    #: What a forward gathers whole at once, on top of the resident states (step peak).
    gather_bytes: dict[str, int]
    #: "rank 0" (ZeRO-3: the others read the header only) or "every rank".
    checkpoint_readers: str
    #: How TRL prepares the reference: "zero3", "zero0" (TRL's stage 0 under ZeRO-1/2), "fsdp2-root", "whole".
    reference_engine: str | None

    @property
    def model_states_bytes(self) -> int:
        return sum(self.bytes.values())


def engine_name(options) -> str:
    if options.distributed_type == "DEEPSPEED":
        return f"zero{options.deepspeed_zero_stage or 0}"
    if options.distributed_type == "FSDP":
        return "fsdp2"
    return "ddp"


def zero3_partition(numel: int, world: int) -> int:
    """`ds_tensor` elements per rank: numel padded to a multiple of W (partition_parameters.py:1693-1696)."""
    return math.ceil(numel / world)


def zero12_partition(group_numel: int, world: int) -> int:
    """A stage 1/2 group's partition: padded to a multiple of 2 x W (stage_1_and_2.py:441-446), split W ways."""
    alignment = ZERO_ALIGNMENT_FACTOR * world
    return math.ceil(group_numel / alignment) * alignment // world


def fsdp2_shard(shape: tuple[int, ...], world: int) -> int:
    """FSDP2's padded local shard: ceil(dim0 / W) rows of the remaining dims."""
    if not shape:
        return 1
    return math.ceil(shape[0] / world) * math.prod(shape[1:])


def decay_groups(model, trainable: set[str]) -> list[list[str]]:
    """The Trainer's two optimizer groups (weight decay or not), trainable parameters only, empty dropped:
    transformers 5.24 `Trainer.create_optimizer` with `get_decay_parameter_names` (trainer.py:1408)."""
    from transformers import Trainer

    decay = set(Trainer.get_decay_parameter_names(None, model))
    names = [name for name, _ in model.named_parameters() if name in trainable]
    groups = [[n for n in names if n in decay], [n for n in names if n not in decay]]
    return [group for group in groups if group]


def plan_per_rank(plan: DPOPlan, config) -> RankPlan:
    """What each rank holds under `plan.options`' engine (module docstring); full fine-tune or PEFT."""

    from ..memory_model import load_dtype, meta_model
    from .bill import bill

    options = plan.options
    world = options.world_size
    engine = engine_name(options)
    dtype = load_dtype(plan.spec, config)
    itemsize = dtype.itemsize
    if plan.spec.quantization != "none" and engine != "ddp":
        raise ValueError(
            f"LoadSpec.load_in_{plan.spec.quantization}=True is not accepted with distributed_type="
            f"{options.distributed_type!r} in the per-rank plan; accepted: no quantization (sharded k-bit "
            "weights are not planned)"
        )
    whole = bill(plan, config)
    model = meta_model(config, dtype)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    numels = {name: math.prod(shape) for name, shape in shapes.items()}
    total = sum(numels.values())
    if plan.adapter is not None:
        from .adapter import adapter_parameters

        trainable_elements = adapter_parameters(model, plan.adapter)
        groups_elements = [trainable_elements]  # LoRA weights: one decayed group
        trainable_numels = None
    else:
        groups_elements = [sum(numels[n] for n in group) for group in decay_groups(model, set(numels))]
        trainable_numels = numels
    trainable_elements = sum(groups_elements)
    has_reference = plan.reference is not None

    def sharded(per_param) -> int:
        return sum(per_param(name) for name in numels)

    if engine.startswith("zero"):
        stage = int(engine[-1])
        if stage == 3:
            policy = sharded(lambda n: zero3_partition(numels[n], world))
            if trainable_numels is None:
                partition = math.ceil(trainable_elements / world)
            else:
                partition = sum(zero3_partition(numels[n], world) for n in trainable_numels)
            gradients = partition
            reference = policy if has_reference else 0
        else:
            policy = total
            reference = total if has_reference else 0  # TRL: stage 0 for the reference
            partition = sum(zero12_partition(g, world) for g in groups_elements) if stage else trainable_elements
            gradients = partition if stage else trainable_elements
        optimizer_elements = partition
    elif engine == "fsdp2":
        policy = sharded(lambda n: fsdp2_shard(shapes[n], world))
        reference = policy if has_reference else 0
        # full fine-tune: gradients sharded like the parameters; PEFT: the adapter's, about 1/W of it
        gradients = policy if trainable_numels is not None else math.ceil(trainable_elements / world)
        optimizer_elements = gradients
    else:
        policy, reference = total, total if has_reference else 0
        gradients = optimizer_elements = trainable_elements

    adapter_bytes = whole["adapter_bytes"]
    optimizer_bytes = (
        optimizer_elements * ZERO_OPTIMIZER_BYTES if engine.startswith("zero") and engine != "zero0"
        else optimizer_elements * 2 * itemsize
    )
    device = {
        "policy": policy * itemsize,
        "reference": reference * itemsize,
        "adapter": adapter_bytes,
        "gradients": gradients * itemsize,
        "optimizer_state": optimizer_bytes,
    }
    host = {name: 0 for name in device}
    if options.offload_optimizer:
        host["optimizer_state"], device["optimizer_state"] = device["optimizer_state"], 0
    if options.offload_param:
        for name in ("policy", "reference"):
            host[name], device[name] = device[name], 0

    largest_module = max(_module_parameter_elements(model).values())
    if engine == "zero3":
        loading_peak = device["policy"] + device["reference"] + largest_module * itemsize
        readers = "rank 0"
        gather = {
            "policy_live": min(total, ZERO3_MAX_LIVE_PARAMETERS) * itemsize,
            "reference_module": largest_module * itemsize if has_reference else 0,
        }
    else:
        loading_peak = whole["peak_bytes"]
        readers = "every rank"
        gather = {}
        if engine == "fsdp2":
            gather = {"layer": largest_module * itemsize, "reference": total * itemsize if has_reference else 0}
    elements = {
        "policy": policy,
        "reference": reference,
        "gradients": gradients,
        "optimizer_state": optimizer_elements,
    }
    if not has_reference:
        reference_engine = None
    elif engine.startswith("zero"):
        reference_engine = "zero3" if engine == "zero3" else "zero0"  # trl models/utils.py:285-286
    else:
        reference_engine = "fsdp2-root" if engine == "fsdp2" else "whole"
    if engine == "zero3":
        elements["policy_gathered_after_step"] = min(total, ZERO3_MAX_LIVE_PARAMETERS)
    return RankPlan(engine, world, elements, device, host, loading_peak, gather, readers, reference_engine)


def _module_parameter_elements(model) -> dict[str, int]:
    """Each module's own (non-recursive) parameter elements: what ZeRO-3 gathers at once."""
    return {
        name: sum(p.numel() for p in module.parameters(recurse=False))
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    }


def plan_step_per_rank(spec, options, train, config, topology=None) -> dict:
    """One DPO step's peak per rank: the training-step plan (`plan.step.plan_training_step`, one
    process, everything whole) with this module's sharding applied to its model states, its
    activations and transients kept (each rank runs its own micro-batch), and the gathers each engine
    does added where they happen:

    * ZeRO-3: during the policy's forward and backward, up to `stage3_max_live_parameters` of it
      gathered (`gather_bytes["policy_live"]`); in the reference's forward, one module at a time.
      The gradient reduce bucket (`reduce_bucket_size`, transformers fills hidden x hidden) in backward.
    * FSDP2: one decoder layer of the policy gathered (per-layer wrap); the whole reference gathered
      in its forward (TRL wraps it at the root only).
    * ZeRO-1/2 gather nothing; their gradients are bucketed and reduce-scattered in backward
      (the reduce bucket), the partition kept.

    Backward: the single-process transient less the whole gradients, plus this rank's gradients and
    the bucket (gradients leave a rank as they are reduced). Not measured on GPUs yet
    (`tox -e bench-gpu-multi` writes the readings); the model states it rests on are
    (`conformance/test_sharded.py`).
    """
    from ..topology import Topology
    from .bill import bill
    from .loads import plan_dpo_loads
    from .step import plan_training_step

    topology = topology or Topology(None if train.device == "cpu" else train.device)
    plan = plan_dpo_loads(spec, options, topology)
    whole = plan_training_step(spec, options, train, config, load_bill=bill(plan, config))
    rank = plan_per_rank(plan, config)
    c = whole.components
    base_whole = c["policy"] + c["reference"] + c["adapter"] + c["optimizer_state"]
    base = sum(rank.bytes[name] for name in ("policy", "reference", "adapter", "optimizer_state"))
    itemsize = rank.bytes["policy"] // max(rank.elements["policy"], 1) if rank.elements["policy"] else 0
    hidden = getattr(config, "hidden_size", 0)
    bucket = hidden * hidden * itemsize if rank.engine not in ("ddp", "zero0", "fsdp2") else 0
    gather_policy = rank.gather_bytes.get("policy_live", rank.gather_bytes.get("layer", 0))
    gather_reference = rank.gather_bytes.get("reference_module", rank.gather_bytes.get("reference", 0))
    scale = rank.bytes["gradients"] / c["gradients"] if c["gradients"] else 0
    phases = {}
    for phase, value in whole.phases.items():
        if not value:
            phases[phase] = 0
            continue
        transient = value - base_whole
        if phase in ("backward", "optimizer_step"):
            transient += rank.bytes["gradients"] - c["gradients"]
        if phase == "optimizer_step":
            # the optimizer's own transient scales with the trainable elements this rank steps
            transient -= rank.bytes["gradients"]
            transient = rank.bytes["gradients"] + int(transient * scale)
        gather = {"reference_forward": gather_reference, "policy_forward": gather_policy,
                  "backward": gather_policy + bucket, "optimizer_step": 0}[phase]
        phases[phase] = base + transient + gather
    components = {**c, **{name: rank.bytes[name] for name in rank.bytes}}
    return {
        "engine": rank.engine,
        "world_size": rank.world_size,
        "components": components,
        "gather_bytes": dict(rank.gather_bytes, reduce_bucket=bucket),
        "phases": phases,
        "step_peak_bytes": max(phases.values()),
        "loading_peak_bytes": rank.loading_peak_bytes,
        "host_bytes": rank.host_bytes,
        "checkpoint_readers": rank.checkpoint_readers,
        "reference_engine": rank.reference_engine,
    }


#: The engines of docs/distributed.md's per-rank table: (column, DPOOptions fields).
DOC_ENGINES = (
    ("DDP", dict(distributed_type="MULTI_GPU")),
    ("ZeRO-1", dict(distributed_type="DEEPSPEED", deepspeed_zero_stage=1)),
    ("ZeRO-2", dict(distributed_type="DEEPSPEED", deepspeed_zero_stage=2)),
    ("ZeRO-3", dict(distributed_type="DEEPSPEED", deepspeed_zero_stage=3)),
    ("ZeRO-3 + offload opt.", dict(distributed_type="DEEPSPEED", deepspeed_zero_stage=3, offload_optimizer=True)),
    ("FSDP2", dict(distributed_type="FSDP")),
)
DOC_ROWS = (
    ("policy", "policy"),
    ("reference", "reference"),
    ("gradients", "gradients"),
    ("optimizer state", "optimizer_state"),
    ("activations", "activations"),
)


def engines_table(config_folder: str, world_size: int = 8, dtype: str = "bfloat16") -> str:
    """docs/distributed.md's per-rank table (GiB per rank) for a full DPO fine-tune of `config_folder`'s
    model on `world_size` GPUs, each engine a column; the step at DPOConfig's defaults."""
    from transformers import AutoConfig

    from ..spec import LoadSpec
    from ..topology import Topology
    from .options import DPOOptions
    from .step import TrainOptions

    config = AutoConfig.from_pretrained(config_folder)
    spec = LoadSpec(config_folder, dtype=dtype)
    plans = [
        plan_step_per_rank(spec, DPOOptions(world_size=world_size, **fields), TrainOptions(), config, Topology("cuda"))
        for _, fields in DOC_ENGINES
    ]
    gib = 2**30

    def row(label, values):
        return f"| {label} | " + " | ".join(f"{value / gib:.2f}" for value in values) + " |"

    lines = [
        "| GiB per rank | " + " | ".join(name for name, _ in DOC_ENGINES) + " |",
        "|---|" + "---:|" * len(DOC_ENGINES),
        *[row(label, [p["components"][key] for p in plans]) for label, key in DOC_ROWS],
        row("peak while loading", [p["loading_peak_bytes"] for p in plans]),
        *[row(f"step: {phase}", [p["phases"][phase] for p in plans]) for phase in plans[0]["phases"]],
        row("**step peak**", [p["step_peak_bytes"] for p in plans]),
        "| checkpoint read by | " + " | ".join(p["checkpoint_readers"] for p in plans) + " |",
        "| reference held as | " + " | ".join(p["reference_engine"] for p in plans) + " |",
    ]
    return "\n".join(lines) + "\n"
