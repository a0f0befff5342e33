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
the trl#3168 failure; docs/training-step.md writes that arithmetic out beside this plan.)

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

    policy_forward    = W + activations + max(one layer's working set under checkpointing,
                                              backbone output + the head's forward working set)
                        (+ under checkpointing with autocast over wider weights, a full fine-tune's
                        cached weight casts of every layer; + eager's additive causal mask)
    reference_forward = W + activations + reference_forward
    backward          = W + max(activations + logits,                 # the head, first
                                first layer: saved (+ recompute) + head gradient + working set,
                                last layer: saved + other layers' gradients + working set,
                                all gradients + the embedding's own gradient)
    optimizer_step    = W + gradients + the optimizer's transient (adamw_torch: foreach's copy
                        of the second moments on CUDA, one parameter's denominator on CPU;
                        fused and 8-bit: none)

The live set of the backward is linear in the layers done, so its largest is at the first or the
last layer. A layer's working set (`layer_working_bytes`) is approximated by its MLP's tensors.

Left out: the CUDA context, allocator rounding and caching (`memory_reserved` above
`memory_allocated`), the data batch (token ids: 8 bytes x rows x length), bitsandbytes'
dequantized weight of one linear at a time (4/8-bit forward), fragmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import LoadSpec
from .options import DPOOptions, _reject

#: The optimizers planned (transformers 5.24 `OptimizerNames` values).
OPTIMIZERS = ("adamw_torch_fused", "adamw_torch", "adamw_8bit", "adamw_bnb_8bit")
#: Attention implementations planned. None: transformers' default for the model ("sdpa").
ATTENTION = (None, "sdpa", "eager", "flash_attention_2")
#: Decoder layers derived here (transformers 5.24 `modeling_llama.py`, `modeling_qwen2.py`,
#: `modeling_mistral.py`: RMSNorm, rotary, SwiGLU, grouped KV heads), or a checkpoint's own
#: subclass of one of them.
PLANNED_LAYERS = ("LlamaDecoderLayer", "Qwen2DecoderLayer", "MistralDecoderLayer")
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


def layer_saved_bytes_per_token(
    shape: Shape, compute: int, residual: int, attention: str, frozen_base: bool = False
) -> int:
    """Bytes one decoder layer saves for backward per token (transformers 5.24 `modeling_llama.py` /
    `modeling_qwen2.py`, dropout 0: DPOConfig `disable_dropout=True`).

    Each norm (`LlamaRMSNorm.forward`: `hidden.to(float32)`, `pow`, `mean`, `rsqrt`, `* rsqrt`,
    `weight * hidden.to(input_dtype)`): the fp32 input (4h), the normalized value in the residual
    dtype (r h; the fp32 product itself when r = 4), one fp32 rsqrt. The projections save their
    input: once when no cast (q/k/v share it, gate/up share it), a cast copy per linear under
    autocast with a wider residual (autocast caches casts of leaf weights only). SDPA saves q, k, v
    in the compute dtype (k, v unrepeated: `enable_gqa`), its output and an fp32 logsumexp per head
    (`o_proj`'s input is that output's storage: the kernels lay it out [rows, length, heads, dim]).
    SwiGLU saves the gate (SiLU's input), SiLU's output and up (the product's operands), and the
    product (down's input): 4 c i.
    Eager attention instead saves q, repeated k and v (c q each), `o_proj`'s contiguous input (c q),
    the fp32 softmax and its cast to the compute dtype (heads x length per token, the s^2 term,
    added by `attention_scores_bytes`).
    With a frozen base (PEFT) no linear saves its input and no norm its normalized value (their
    weights need no gradient); what the adapter saves is `lora_saved_bytes_per_token`'s.
    """
    h, i = shape.hidden, shape.intermediate
    q = shape.heads * shape.head_dim
    kv = shape.kv_heads * shape.head_dim
    cast = compute != residual
    # fp32 input (the layer input itself when r = 4), rsqrt, the normalized value (the fp32 product when r = 4)
    norm = 4 * h + 4 + (0 if frozen_base else residual * h)
    qkv_in = 3 * compute * h if cast else residual * h
    mlp_in = 2 * compute * h if cast else residual * h
    down_in = compute * i
    if frozen_base:
        qkv_in = mlp_in = down_in = 0
    if attention == "eager":
        # q, repeat_kv(k), repeat_kv(v), and o_proj's input: the contiguous copy of the transposed output
        attn = 3 * compute * q + (0 if frozen_base else compute * q)
    else:
        # q, k, v, output, fp32 logsumexp; the output is laid out [rows, length, heads, dim], so the
        # transpose(1, 2).contiguous() o_proj saves is the same storage
        attn = compute * (q + 2 * kv) + compute * q + 4 * shape.heads
    mlp = 3 * compute * i + down_in  # gate (SiLU's input), SiLU's output, up; the product (down's input)
    return 2 * norm + qkv_in + mlp_in + attn + mlp


def lora_saved_bytes_per_token(
    targets: dict, r: int, adapter_bytes: int, compute: int, autocast: bool, residual: int
) -> int:
    """What one decoder layer's LoRA adapters save per token (peft 0.21.2 `tuners/lora/layer.py:1100-1102`
    `Linear.forward`: `lora_B(lora_A(dropout(x))) * scaling`, x first cast to the adapter's dtype):
    lora_A's input and lora_B's input (r values). lora_A's input is a copy per linear where x is cast
    (to the adapter's dtype, then to the compute dtype under autocast), else x itself, one storage
    for q/k/v (and for gate/up) as they read the same normalized input (`residual`: x's bytes).
    No dropout mask: DPOTrainer sets every `nn.Dropout`'s p to 0 (`disable_dropout=True`, TRL 1.16
    dpo_trainer.py:932-933, trainer/utils.py:194-197 `disable_dropout_in_model`), PEFT's
    `lora_dropout` modules included (an `nn.Dropout` for lora_dropout > 0, layer.py:256), and ATen's
    `dropout` with p == 0 returns its input (`native/Dropout.cpp` `_dropout_impl`; the fused CUDA
    kernel needs p > 0), so nothing is saved. (The plan held an fp32 noise tensor per LoRA input before:
    +11-17% on the activations of LoRA without checkpointing on the Qwen2-0.5B shape, measured.)
    Uncast, an o_proj or down_proj adapter's input is counted though SDPA's output or the MLP product
    may be the same storage (no such target was measured).
    `targets` are one layer's {name: (in, out)}. Per layer, not per token: under autocast over a
    wider adapter, lora_A and lora_B save compute-dtype copies of their weights
    (`lora_weight_casts_bytes`)."""
    lora_in = compute if autocast else adapter_bytes
    cast = adapter_bytes != residual or lora_in != adapter_bytes
    inputs = {}
    for name, (fan_in, _) in targets.items():
        # uncast, lora_A saves x itself: one storage for the linears reading the same normalized input
        source = _SHARED_INPUT.get(name.rsplit(".", 1)[-1], name) if not cast else name
        inputs[source] = fan_in * lora_in
    return sum(inputs.values()) + sum(r * lora_in for _ in targets)


#: Linears of a decoder layer that read the same tensor (the input norm's, the post-attention norm's).
_SHARED_INPUT = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up", "up_proj": "gate_up"}


def lora_weight_casts_bytes(targets: dict, r: int, adapter_bytes: int, compute: int, autocast: bool) -> int:
    """One layer's LoRA weights in the compute dtype, saved (and cached) under autocast."""
    if not autocast or compute >= adapter_bytes:
        return 0
    return sum(compute * r * (fan_in + fan_out) for fan_in, fan_out in targets.values())


def weight_casts_bytes(shape: Shape, compute: int) -> int:
    """One layer's linear weights in the compute dtype: q, k, v, o, gate, up, down."""
    q = shape.heads * shape.head_dim
    kv = shape.kv_heads * shape.head_dim
    h = shape.hidden
    return compute * (2 * h * q + 2 * h * kv + 3 * h * shape.intermediate)


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
    # the meta model first: it refuses a model whose layers are not planned here
    trainable, layer_parameters, lora_layer_targets = _trainable(spec, options, config, dtype)
    shape = Shape.from_config(config)
    compute, residual = _dtypes(load, train)
    rows, length = train.rows, train.max_length
    tokens = rows * length
    scored = rows * (length - 1)

    gradients = sum(numel * size for numel, size, _ in trainable)
    optimizer_state = _optimizer_state(train.optim, trainable)
    full_finetune = not options.use_peft
    h = shape.hidden

    # Autocast over wider weights: each linear saves a compute-dtype copy of its weight; the copies of
    # weights that require grad are also held in autocast's cache until the forward returns.
    casts = weight_casts_bytes(shape, compute) if compute < dtype.itemsize and spec.quantization == "none" else 0
    per_layer = layer_saved_bytes_per_token(shape, compute, residual, attention, options.use_peft) * tokens + casts
    if attention == "eager":
        per_layer += attention_scores_bytes(shape, rows, length, compute)
    if options.use_peft:
        adapter_bytes = trainable[0][1]
        per_layer += tokens * lora_saved_bytes_per_token(
            lora_layer_targets, options.lora_r, adapter_bytes, compute, train.bf16 or train.fp16, residual
        )
        per_layer += lora_weight_casts_bytes(
            lora_layer_targets, options.lora_r, adapter_bytes, compute, train.bf16 or train.fp16
        )
    layer_input = residual * h * tokens
    # cos and sin of the rotary embedding, computed once per forward in the load dtype, saved by every layer
    rotary = 2 * length * shape.head_dim * dtype.itemsize
    final_norm = (4 * h + residual * h + 4) * tokens
    head_hidden = residual * h * scored  # `last_hidden_state[:, :-1]` flattened (a copy), saved by the head
    head_saved = head_hidden + 2 * 4 * scored  # and its fp32 log_z and entropy
    saved_by_layers = shape.layers * (layer_input if train.gradient_checkpointing else per_layer)
    activations = saved_by_layers + rotary + final_norm + head_saved

    weight_bytes = dtype.itemsize
    head_forward, head_backward = fused_head_bytes(
        shape, scored, compute, residual, weight_bytes, train.device, weight_trainable=full_finetune
    )
    reference_head_forward, _ = fused_head_bytes(
        shape, scored, compute, residual, weight_bytes, train.device, weight_trainable=False,
        metrics=options.use_peft,  # the PEFT reference is the policy, patched with every output
    )
    layer_working = layer_working_bytes(shape, tokens, compute, residual)
    last_hidden = residual * h * tokens  # the backbone's output, alive until the patched forward returns

    has_reference_forward = not options.precompute_ref_log_probs
    reference_forward = 0
    if has_reference_forward:
        # A separate reference's weights require grad too, so its layers' casts all sit in autocast's
        # cache until its forward returns; the PEFT reference's frozen weights are cast one op at a time
        # under no_grad (autocast caches casts of leaves that require grad only), each freed at once.
        cached = shape.layers * casts if load_bill["reference_bytes"] else 0
        reference_forward = cached + max(layer_working, last_hidden + head_hidden + reference_head_forward)

    # Policy forward: with checkpointing one layer's working set at a time, and a full fine-tune's
    # weight casts all in autocast's cache until the forward returns; then the head.
    forward_transient = max(layer_working if train.gradient_checkpointing else 0, last_hidden + head_forward)
    if train.gradient_checkpointing and full_finetune:
        forward_transient += shape.layers * casts
    if attention == "eager":
        forward_transient += rows * length * length * dtype.itemsize  # the additive causal mask

    # Backward: the head first (all activations live), then the layers top down, each freeing its
    # saved set (recomputed first under checkpointing) while its parameters' gradients appear; the
    # live set is linear in the layers done, so its largest is at the first or the last layer.
    head_gradient = shape.vocab * h * weight_bytes if full_finetune else 0
    layer_gradient = layer_parameters * weight_bytes if full_finetune else 0
    remaining = saved_by_layers + rotary
    if train.gradient_checkpointing:
        first = remaining + per_layer
        last = layer_input + rotary + per_layer
    else:
        first = remaining
        last = per_layer + rotary
    backward = max(
        activations + head_backward,
        first + head_gradient + layer_working,
        last + head_gradient + (shape.layers - 1) * layer_gradient + layer_working,
        gradients + (shape.vocab * h * weight_bytes if full_finetune else 0),  # the embedding's own gradient
    )

    resident = load_bill["policy_bytes"] + load_bill["reference_bytes"] + load_bill["adapter_bytes"]
    base = resident + optimizer_state
    phases = {
        "reference_forward": base + activations + reference_forward if has_reference_forward else 0,
        "policy_forward": base + activations + forward_transient,
        "backward": base + backward,
        "optimizer_step": base + gradients + _optimizer_transient(train, trainable),
    }
    components = {
        "policy": load_bill["policy_bytes"],
        "reference": load_bill["reference_bytes"],
        "adapter": load_bill["adapter_bytes"],
        "gradients": gradients,
        "optimizer_state": optimizer_state,
        "activations": activations,
        "logits": head_backward,
        "reference_forward": reference_forward,
    }
    return StepPlan(components, phases, max(phases.values()), load_bill["peak_bytes"])


def fused_head_bytes(
    shape: Shape,
    scored: int,
    compute: int,
    residual: int,
    weight_bytes: int,
    device: str,
    weight_trainable: bool,
    metrics: bool = True,
) -> tuple[int, int]:
    """(forward, backward) working bytes of TRL 1.16's fused LM head over `scored` positions
    (`kernels/chunked_logprob.py` `ChunkedLogProbFunction`).

    Both passes allocate the tile buffer `[min(N, 4096), 32768]` in the compute dtype (32768 columns
    whatever the vocabulary), cast the hidden chunk and each weight chunk to the compute dtype where
    they differ. The forward keeps seven fp32 per-token accumulators. The backward allocates the fp32
    gradient of the hidden states and, for a trainable head, the fp32 `[vocab, h]` weight gradient.
    On CUDA the tiles are folded in place by Triton; elsewhere `_forward_tile` holds three fp32
    tile-sized temporaries at once (z, z - max, exp) plus the `before_target` mask when `is_top1` is
    computed (the policy's metrics), and `_backward_tile` seven (y, z, log_p, p, grad, the target
    indicator's difference and product) plus the boolean target indicator.
    """
    rows = min(scored, TOKEN_CHUNK)
    columns = min(shape.vocab, VOCAB_CHUNK)
    buffer = rows * VOCAB_CHUNK * compute
    hidden_cast = rows * shape.hidden * compute if residual != compute else 0
    weight_cast = columns * shape.hidden * compute if weight_bytes != compute else 0
    casts = hidden_cast + weight_cast
    fp32_tile, bool_tile = rows * columns * 4, rows * columns
    forward = buffer + casts + 7 * 4 * scored
    backward = buffer + casts + 4 * scored * shape.hidden
    if weight_trainable:
        backward += 4 * shape.vocab * shape.hidden
    if device != "cuda":
        # The weight chunk's cast is a temporary of `torch.mm(..., out=tile)`, freed before the fold
        # runs (chunked_logprob.py:357-360): the forward holds the larger of the two, not both.
        fold = 3 * fp32_tile + (bool_tile if metrics else 0)
        forward = buffer + hidden_cast + 7 * 4 * scored + max(weight_cast, fold)
        backward += 7 * fp32_tile + bool_tile
    return forward, backward


def layer_working_bytes(shape: Shape, tokens: int, compute: int, residual: int) -> int:
    """One decoder layer's working set beyond what it saves, approximated by its MLP's: the residual
    and the normalized input (r h each), gate's activation, up and their product (3 c i), per token.
    Used for a no-grad or checkpointed layer and for a layer's backward (the gradients of the same
    tensors)."""
    return tokens * (2 * residual * shape.hidden + 3 * compute * shape.intermediate)


def _optimizer_transient(train: TrainOptions, trainable: list) -> int:
    """Fused AdamW and bitsandbytes' 8-bit kernels update in place. `adamw_torch` on CUDA takes the
    foreach path (`_multi_tensor_adamw`: `torch._foreach_sqrt(exp_avg_sqs)`, one copy of the state's
    second moment), on CPU the single-tensor path (one denominator the size of a parameter)."""
    if train.optim != "adamw_torch":
        return 0
    if train.device == "cuda":
        return sum(numel * size for numel, size, _ in trainable)
    return max(numel * size for numel, size, _ in trainable)


def _trainable(spec: LoadSpec, options: DPOOptions, config, dtype):
    """(elements, bytes per element, is an embedding's) of each trainable parameter tensor: the
    adapter's under PEFT (lora_A and lora_B per targeted linear), else every parameter of the policy
    (tied ones once);
    the parameters of one decoder layer; the LoRA targets of one decoder layer ({} without PEFT)."""
    import torch

    from ..memory_model import meta_model
    from .adapter import lora_targets, plan_adapter

    model = meta_model(config, dtype, spec.trust_remote_code)
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    first = decoder if layers is None else layers[0]
    if not {cls.__name__ for cls in type(first).__mro__} & set(PLANNED_LAYERS):
        raise ValueError(
            f"config.model_type={config.model_type!r} ({type(first).__name__}) is not accepted for a "
            f"training-step plan; accepted: models whose decoder layers are {PLANNED_LAYERS} or subclass one"
        )
    layer_parameters = sum(p.numel() for p in layers[0].parameters())
    if not options.use_peft:
        embeddings = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
        tensors = [(p.numel(), p.element_size(), id(p) in embeddings) for p in model.parameters()]
        return tensors, layer_parameters, {}
    adapter = plan_adapter(spec, options)
    size = (dtype if adapter.dtype is None else getattr(torch, adapter.dtype)).itemsize
    targets = lora_targets(model, adapter.target_modules)
    tensors = []
    for fan_in, fan_out in targets.values():
        tensors += [(adapter.r * fan_in, size, False), (adapter.r * fan_out, size, False)]
    prefix = next(name for name, module in model.named_modules() if module is layers[0]) + "."
    first_layer = {name: shape for name, shape in targets.items() if name.startswith(prefix)}
    return tensors, layer_parameters, first_layer


def _optimizer_state(optim: str, trainable: list) -> int:
    """AdamW: two moments in the parameter's dtype and a 4-byte step per tensor. 8-bit AdamW
    (bitsandbytes `Optimizer2State.init_state`): uint8 moments with fp32 absmax per 256-element block,
    fp32 moments below `min_8bit_size` elements and for embeddings (transformers 5.24 trainer.py:1328-1338
    registers every `nn.Embedding` weight with `optim_bits=32`), and the two shared 256-entry quantile
    maps."""
    if optim in ("adamw_torch_fused", "adamw_torch"):
        return sum(2 * numel * size + 4 for numel, size, _ in trainable)
    total = 2 * QMAP_ENTRIES * 4
    for numel, _, embedding in trainable:
        if numel < MIN_8BIT_SIZE or embedding:
            total += 2 * 4 * numel
        else:
            blocks = -(-numel // BLOCKSIZE_8BIT_OPTIM)
            total += 2 * numel + 2 * 4 * blocks
    return total
