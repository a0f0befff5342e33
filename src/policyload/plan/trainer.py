"""TRL's `DPOTrainer`, constructed the way `trl/scripts/dpo.py` constructs it, for a `LoadSpec` and
`DPOOptions`, for the DPO bill benchmark (what it holds once constructed). The conformance test
(`conformance/test_dpo_plan.py`) runs TRL's own recipe instead, on every release, and shares the
tokenizer.

The recipe's path, from `scripts/dpo.py` 1.16: `model_init_kwargs = {revision, trust_remote_code,
attn_implementation, dtype}` on `DPOConfig`, the checkpoint path as `model`, and
`quantization_config=get_quantization_config(model_args)`, `peft_config=get_peft_config(model_args)`
from a `ModelConfig` (so the LoRA settings are TRL's own, not a copy). The data set is a handful of
preference rows and the tokenizer a word-level one over their words: enough for `__init__` to
tokenize, nothing that would need the network.

trl, datasets and tokenizers are imported when a function is called, never by `policyload.plan`.
"""

from __future__ import annotations

from ..spec import LoadSpec
from .options import DPOOptions


def word_tokenizer(rows):
    """A word-level fast tokenizer over the words of `rows` (dicts of text), with pad and eos."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({word for row in rows for text in row.values() for word in text.split()})
    vocab = {token: i for i, token in enumerate(["<unk>", "<pad>", "<eos>", *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")


def model_config(spec: LoadSpec, options: DPOOptions):
    """TRL's `ModelConfig` for `spec` and `options`: what `TrlParser` would have parsed from the command
    line. `LoadSpec`'s fields carry `ModelConfig`'s names; `trust_remote_code` is on the training
    config since TRL 1.7 (`model_init_kwargs` in `build_dpo_trainer`)."""
    import dataclasses

    from trl import ModelConfig

    fields = {name: value for name, value in dataclasses.asdict(spec).items() if name != "trust_remote_code"}
    targets = options.lora_target_modules
    return ModelConfig(
        **fields,
        use_peft=options.use_peft,
        lora_r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        lora_target_modules=list(targets) if isinstance(targets, tuple) else targets,
    )


def build_dpo_trainer(spec: LoadSpec, options: DPOOptions, rows, output_dir, **training_args):
    """`DPOTrainer(model=<path>, args=DPOConfig(...), train_dataset, processing_class, quantization_config,
    peft_config)` as the recipe builds it; `rows` are the preference rows (prompt / chosen / rejected).

    `training_args` are further `DPOConfig` fields, over this function's own (`bf16=False`, batch 2: the
    load bill's construction); the training-step measurement passes its batch, length, checkpointing,
    precision and optimizer (`policyload.measure.train_step`)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, get_peft_config, get_quantization_config

    model_args = model_config(spec, options)
    # scripts/dpo.py: model_init_kwargs = dict(revision, trust_remote_code, attn_implementation, dtype)
    model_init_kwargs = dict(
        revision=spec.model_revision,
        trust_remote_code=spec.trust_remote_code,
        attn_implementation=spec.attn_implementation,
        dtype=spec.dtype,
    )
    args = DPOConfig(
        **{
            "output_dir": str(output_dir),
            "report_to": "none",
            "bf16": False,
            "model_init_kwargs": model_init_kwargs,
            "precompute_ref_log_probs": options.precompute_ref_log_probs,
            "per_device_train_batch_size": 2,
            **training_args,
        }
    )
    return DPOTrainer(
        model=spec.model_name_or_path,
        args=args,
        train_dataset=Dataset.from_list(list(rows)),
        processing_class=word_tokenizer(rows),
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )
