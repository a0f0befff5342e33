"""One DPO training step, planned component by component and phase by phase, per process, from
`config.json` alone: what TRL 1.16's `DPOTrainer.training_step` makes the device hold.

Bytes are of tensors on the training device (what torch's caching allocator has handed out:
`torch.cuda.max_memory_allocated`, or the CPU allocator's record), never host-process figures.

## The arguments (TRL 1.16 `trainer/dpo_config.py`, transformers 5.24 `training_args.py`)

`TrainOptions` holds the training arguments that change the step's memory, with the defaults of
that release's `DPOConfig`: `per_device_train_batch_size=8` (TrainingArguments' default),
`max_length=1024` (dpo_config.py:195), `gradient_checkpointing=True` and `bf16=True` unless
`fp16` (dpo_config.py:148-149, "Defaults to True instead of False"), and the Trainer's optimizer,
`optim="adamw_torch_fused"` (training_args.py:806-811: `adamw_torch`, `adamw_torch_fused` from
torch 2.8). `bf16`/`fp16` are autocast over the load dtype (accelerate wraps `model.forward` in
`torch.autocast(device, dtype)`); the weights keep the load dtype.

The attention implementation is the `LoadSpec`'s (`attn_implementation`; None is transformers'
default for a Llama-family model: "sdpa"). PEFT, 4/8-bit and `precompute_ref_log_probs` come from
`DPOOptions` and the `LoadSpec`, as for the load plan (`policyload.plan.bill`).

Sequence length: DPO's collator pads chosen and rejected to the longest sequence of the batch,
truncated to `max_length`, and concatenates them along the batch: 2 x batch rows. The plan takes
`max_length` as that padded length with every position a completion token (the worst case: each
row fills the length, so there is no padding, transformers passes no mask to SDPA and grouped KV
heads go to `enable_gqa` unrepeated; TRL scores every labelled position).

## The step (TRL 1.16 `trainer/dpo_trainer.py`)

`_compute_loss` (dpo_trainer.py:1285) runs, in this order: the policy forward with grad
(`model(**model_kwargs, labels=labels, fused_lm_head=True)`, :1302), then the reference forward
under `torch.no_grad()` (:1326-1338; the PEFT policy with its adapter disabled, or `ref_model`;
skipped with `precompute_ref_log_probs`), then the loss; the Trainer runs backward, clips
gradients and calls `optimizer.step()`, then `zero_grad(set_to_none=True)`.

TRL 1.16 does not build the `[rows, length, vocab]` logits: `add_fused_lm_head`
(trainer/utils.py:1548, patched onto policy and reference in `__init__`, dpo_trainer.py:954-962)
runs the LM head in tiles (`kernels/chunked_logprob.py` `ChunkedLogProbFunction`): a
`[min(N, 4096), 32768]` tile buffer in the compute dtype, a few fp32 per-token vectors, and saved
for backward the last hidden states (the positions scored) and two fp32 vectors; its backward
allocates the fp32 gradient of the hidden states `[N, h]` and, when the head's weight is trainable,
an fp32 `[vocab, h]` weight gradient, cast to the weight's dtype at the end. (TRL releases before
the fused head kept `2 x batch x length x vocab` logits, their log-softmax and its gradient alive:
the trl#3168 failure; `full_logits_bytes` writes that out for comparison.)

The plan is of a step after the first: the optimizer state exists (AdamW creates it in the first
`optimizer.step()`), and gradients are None at the start (set_to_none). A run that fits this
step fits every step of the same shapes; the first step differs only by lacking the state in its
forward and backward phases.

Components (keys of `StepPlan.components`):

* `policy`, `reference`, `adapter`: the load plan's bytes (`bill`).
* `gradients`: one gradient per trainable parameter, in its dtype (the full model, or the adapter).
* `optimizer_state`: AdamW's `exp_avg` and `exp_avg_sq` in the parameter's dtype plus a 4-byte
  `step` tensor per parameter (torch `optim/adamw.py`, fused: fp32 step on the device); 8-bit
  AdamW (bitsandbytes `optim/optimizer.py` `Optimizer2State.init_state`): uint8 `state1`/`state2`
  and fp32 `absmax1`/`absmax2` per 256-element block for tensors of >= 4096 elements, fp32 states
  below that, plus the two 256-entry fp32 quantile maps.
* `activations`: what the policy's forward saves for backward (`_layer_saved`, per decoder layer,
  derived from transformers 5.24's Llama/Qwen2 modeling), all layers, plus the final norm and the
  hidden states the fused head saves; with checkpointing, each layer's input instead (non-reentrant
  `torch.utils.checkpoint`, transformers' default `use_reentrant=False`).
* `logits`: the fused head's largest transient: its backward's tile buffer, fp32 hidden gradient
  and fp32 weight gradient (the forward's is smaller).
* `reference_forward`: the reference's no-grad forward transient: one layer's intermediates plus
  the head's tile buffer (0 without a reference forward).

Phases (keys of `StepPlan.phases`), live bytes at each one's peak, `W` = policy + reference +
adapter + optimizer_state:

    policy_forward    = W + activations + one layer's forward transient (+ with checkpointing, none kept)
    reference_forward = W + activations + reference_forward
    backward          = W + max(activations + logits,            # head backward, first
                                gradients + recompute of one layer under checkpointing)
    optimizer_step    = W + gradients + the optimizer's own transient (foreach: one copy of the
                        trainable bytes; fused and 8-bit: none)

Left out: the CUDA context, allocator rounding and caching (`memory_reserved` above
`memory_allocated`), the data batch (token ids: 8 bytes x rows x length, negligible), the
attention mask of eager attention (built once per forward), the autocast cast copies of weights
(planned as one layer's at a time, their cache is per forward), fragmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import LoadSpec
from .options import DPOOptions, _reject

#: The optimizers planned (transformers 5.24 `OptimizerNames` values).
OPTIMIZERS = ("adamw_torch_fused", "adamw_torch", "adamw_8bit", "adamw_bnb_8bit")
#: Attention implementations planned. None: transformers' default for the model ("sdpa").
ATTENTION = (None, "sdpa", "eager", "flash_attention_2")
#: Devices whose code paths differ in the plan (the fused head's indexing and tile fold).
DEVICES = ("cuda", "cpu")
COMPONENTS = (
    "policy",
    "reference",
    "adapter",
    "gradients",
    "optimizer_state",
    "activations",
    "logits",
    "reference_forward",
)
PHASES = ("reference_forward", "policy_forward", "backward", "optimizer_step")
#: `chunked_logprob.py` tile: TOKEN_CHUNK_SIZE tokens by `_CHUNKED_LOGPROB_CHUNK_SIZE` vocabulary entries.
TOKEN_CHUNK = 4096
VOCAB_CHUNK = 32768
#: bitsandbytes 8-bit optimizers: `min_8bit_size` default, blockwise absmax block size, qmap entries.
MIN_8BIT_SIZE = 4096
BLOCKSIZE_8BIT_OPTIM = 256
QMAP_ENTRIES = 256


@dataclass(frozen=True)
class TrainOptions:
    """The training arguments that change one DPO step's memory, with DPOConfig 1.16's defaults."""

    per_device_train_batch_size: int = 8
    max_length: int = 1024
    gradient_checkpointing: bool = True
    bf16: bool = True
    fp16: bool = False
    optim: str = "adamw_torch_fused"
    #: The training device: the fused head scores only labelled positions on CUDA (Triton), all
    #: positions elsewhere (trainer/utils.py `_use_triton`), and autocast runs on this device type.
    device: str = "cuda"

    def __post_init__(self) -> None:
        for name in ("per_device_train_batch_size", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _reject("TrainOptions", name, value, "an integer >= 1")
        for name in ("gradient_checkpointing", "bf16", "fp16"):
            if not isinstance(getattr(self, name), bool):
                raise _reject("TrainOptions", name, getattr(self, name), "True or False")
        if self.bf16 and self.fp16:
            raise ValueError(
                "TrainOptions.bf16=True and TrainOptions.fp16=True are not accepted together; "
                "accepted: at most one of them True"
            )
        if self.optim not in OPTIMIZERS:
            raise _reject("TrainOptions", "optim", self.optim, OPTIMIZERS)
        if self.device not in DEVICES:
            raise _reject("TrainOptions", "device", self.device, DEVICES)

    @property
    def rows(self) -> int:
        """Chosen and rejected concatenated along the batch (the collator)."""
        return 2 * self.per_device_train_batch_size


@dataclass(frozen=True)
class StepPlan:
    """Bytes of one DPO training step, per process (module docstring)."""

    components: dict
    phases: dict
    peak_bytes: int
    load_peak_bytes: int

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phases.get)

    @property
    def deciding_component(self) -> str:
        """The largest component of the peak phase's live set (by bytes)."""
        live = _PHASE_COMPONENTS[self.peak_phase]
        return max(live, key=lambda name: self.components[name])

    def to_dict(self) -> dict:
        return {
            "components": dict(self.components),
            "phases": dict(self.phases),
            "step_peak_bytes": self.peak_bytes,
            "load_peak_bytes": self.load_peak_bytes,
        }


#: Which components each phase's live set holds (the module docstring's equations, for reports).
_PHASE_COMPONENTS = {
    "policy_forward": ("policy", "reference", "adapter", "optimizer_state", "activations"),
    "reference_forward": ("policy", "reference", "adapter", "optimizer_state", "activations", "reference_forward"),
    "backward": ("policy", "reference", "adapter", "optimizer_state", "activations", "logits", "gradients"),
    "optimizer_step": ("policy", "reference", "adapter", "optimizer_state", "gradients"),
}


@dataclass(frozen=True)
class Shape:
    """What the arithmetic needs from a decoder config (Llama family: RMSNorm, rotary, SwiGLU MLP,
    grouped KV heads, optional q/k/v bias)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool

    @classmethod
    def from_config(cls, config) -> Shape:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        return cls(
            hidden=text.hidden_size,
            layers=text.num_hidden_layers,
            heads=heads,
            kv_heads=getattr(text, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            intermediate=text.intermediate_size,
            vocab=text.vocab_size,
            tied=bool(getattr(config, "tie_word_embeddings", False)),
        )


def _itemsize(name: str) -> int:
    return {"float32": 4, "bfloat16": 2, "float16": 2}[name]


def _dtypes(load: str, train: TrainOptions) -> tuple[int, int]:
    """(compute bytes, residual bytes): autocast's dtype over the load dtype, and the residual
    stream's (an autocast linear's output added to the load-dtype residual promotes to the wider)."""
    param = _itemsize(load)
    compute = 2 if (train.bf16 or train.fp16) else param
    if train.fp16 and load == "bfloat16":
        return compute, 4  # promote(bfloat16, float16) is float32
    return compute, max(param, compute)


def layer_saved_bytes_per_token(shape: Shape, compute: int, residual: int, attention: str) -> int:
    """Bytes one decoder layer saves for backward per token (transformers 5.24 `modeling_llama.py` /
    `modeling_qwen2.py`, dropout 0: DPOConfig `disable_dropout=True`).

    Each norm (`LlamaRMSNorm.forward`: `hidden.to(float32)`, `pow`, `mean`, `rsqrt`, `* rsqrt`,
    `weight * hidden.to(input_dtype)`): the fp32 input (4h), the normalized value in the residual
    dtype (r h; the fp32 product itself when r = 4), one fp32 rsqrt. The projections save their
    input: once when no cast (q/k/v share it, gate/up share it), a cast copy per linear under
    autocast with a wider residual (autocast caches casts of leaf weights only). SDPA saves q, k, v
    in the compute dtype (k, v unrepeated: `enable_gqa`), its output and an fp32 logsumexp per head;
    `o_proj` saves the contiguous transpose of that output. SwiGLU saves the gate (SiLU's input),
    SiLU's output and up (the product's operands), and the product (down's input): 4 c i.
    Eager attention instead saves q, repeated k and v (c q each), the fp32 softmax and its cast to
    the compute dtype (heads x length per token, the s^2 term, added by `attention_scores_bytes`).
    """
    h, i = shape.hidden, shape.intermediate
    q = shape.heads * shape.head_dim
    kv = shape.kv_heads * shape.head_dim
    cast = compute != residual
    norm = 4 * h + residual * h + 4
    if residual == 4:
        norm = 4 * h + 4 * h + 4  # the fp32 input is the layer input itself; the product is saved
    qkv_in = 3 * compute * h if cast else residual * h
    mlp_in = 2 * compute * h if cast else residual * h
    if attention == "eager":
        attn = 3 * compute * q  # q, repeat_kv(k), repeat_kv(v)
    else:
        attn = compute * (q + 2 * kv) + compute * q + 4 * shape.heads  # q, k, v, output, logsumexp
    o_in = compute * q
    mlp = 4 * compute * i
    return 2 * norm + qkv_in + mlp_in + attn + o_in + mlp


def attention_scores_bytes(shape: Shape, rows: int, length: int, compute: int) -> int:
    """Eager attention's saved scores per layer: softmax output in fp32 and its cast (one when c = 4)."""
    per_score = 4 + (compute if compute != 4 else 0)
    return rows * shape.heads * length * length * per_score


def plan_training_step(
    spec: LoadSpec, options: DPOOptions, train: TrainOptions, config, load_bill: dict | None = None
) -> StepPlan:
    """The plan of one DPO training step (module docstring). `load_bill` is `bill(...)`'s result when
    the caller has it already."""
    from ..memory_model import load_dtype
    from ..topology import Topology
    from .bill import bill
    from .loads import plan_dpo_loads

    if load_bill is None:
        topology = Topology(None if train.device == "cpu" else train.device)
        load_bill = bill(plan_dpo_loads(spec, options, topology), config)
    attention = spec.attn_implementation or "sdpa"
    if attention not in ATTENTION:
        raise _reject("LoadSpec", "attn_implementation", spec.attn_implementation, ATTENTION)
    dtype = load_dtype(spec, config)
    load = str(dtype).removeprefix("torch.")
    shape = Shape.from_config(config)
    compute, residual = _dtypes(load, train)
    rows, length = train.rows, train.max_length
    tokens = rows * length
    scored = rows * (length - 1)

    trainable = _trainable(spec, options, config, dtype)
    gradients = sum(numel * size for numel, size in trainable)
    optimizer_state = _optimizer_state(train.optim, trainable)

    per_layer = layer_saved_bytes_per_token(shape, compute, residual, attention) * tokens
    if attention == "eager":
        per_layer += attention_scores_bytes(shape, rows, length, compute)
    layer_input = residual * shape.hidden * tokens
    final_norm = (4 * shape.hidden + (residual if residual != 4 else 4) * shape.hidden + 4) * tokens
    head_saved = residual * shape.hidden * scored + 2 * 4 * scored  # hidden slice copy, log_z, entropy
    if train.gradient_checkpointing:
        activations = shape.layers * layer_input + final_norm + head_saved
    else:
        activations = shape.layers * per_layer + final_norm + head_saved

    tile = min(scored, TOKEN_CHUNK) * min(shape.vocab, VOCAB_CHUNK) * compute
    head_weight_trainable = not options.use_peft
    logits = tile + 4 * shape.hidden * scored + (4 * shape.vocab * shape.hidden if head_weight_trainable else 0)

    has_reference_forward = not options.precompute_ref_log_probs
    reference_forward = (per_layer + tile + residual * shape.hidden * scored) if has_reference_forward else 0

    resident = load_bill["policy_bytes"] + load_bill["reference_bytes"] + load_bill["adapter_bytes"]
    base = resident + optimizer_state
    recompute = per_layer if train.gradient_checkpointing else 0
    optimizer_transient = gradients if train.optim == "adamw_torch" and train.device == "cuda" else 0
    phases = {
        "reference_forward": base + activations + reference_forward if has_reference_forward else 0,
        "policy_forward": base + activations + (per_layer if train.gradient_checkpointing else 0),
        "backward": base + max(activations + logits, gradients + recompute),
        "optimizer_step": base + gradients + optimizer_transient,
    }
    components = {
        "policy": load_bill["policy_bytes"],
        "reference": load_bill["reference_bytes"],
        "adapter": load_bill["adapter_bytes"],
        "gradients": gradients,
        "optimizer_state": optimizer_state,
        "activations": activations,
        "logits": logits,
        "reference_forward": reference_forward,
    }
    return StepPlan(components, phases, max(phases.values()), load_bill["peak_bytes"])


def _trainable(spec: LoadSpec, options: DPOOptions, config, dtype) -> list[tuple[int, int]]:
    """(elements, bytes per element) of each trainable parameter tensor: the adapter's under PEFT
    (lora_A and lora_B per targeted linear), else every parameter of the policy (tied ones once)."""
    import torch

    from ..memory_model import meta_model
    from .adapter import lora_targets, plan_adapter

    model = meta_model(config, dtype)
    if options.use_peft:
        adapter = plan_adapter(spec, options)
        size = (dtype if adapter.dtype is None else getattr(torch, adapter.dtype)).itemsize
        tensors = []
        for fan_in, fan_out in lora_targets(model, adapter.target_modules).values():
            tensors += [(adapter.r * fan_in, size), (adapter.r * fan_out, size)]
        return tensors
    return [(p.numel(), p.element_size()) for p in model.parameters()]


def _optimizer_state(optim: str, trainable: list[tuple[int, int]]) -> int:
    if optim in ("adamw_torch_fused", "adamw_torch"):
        return sum(2 * numel * size + 4 for numel, size in trainable)
    total = 2 * QMAP_ENTRIES * 4
    for numel, _ in trainable:
        if numel < MIN_8BIT_SIZE:
            total += 2 * 4 * numel
        else:
            blocks = -(-numel // BLOCKSIZE_8BIT_OPTIM)
            total += 2 * numel + 2 * 4 * blocks
    return total


def full_logits_bytes(shape: Shape, train: TrainOptions, dtype_bytes: int) -> int:
    """What the pre-fused-head releases kept (trl#3168): logits, log-softmax, their gradient."""
    return 3 * train.rows * train.max_length * shape.vocab * dtype_bytes
