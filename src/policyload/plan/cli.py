"""`python -m policyload.plan`: the bytes TRL's DPO recipe loads, and what its first training steps
hold, from a config.json.

Offline (`HF_HUB_OFFLINE=1` unless set) and on the meta device: no weights are read, so a planner
can ask about an 8B checkpoint holding only its config. The load bill (`bill`) and one training
step (`step.plan_training_step`, with DPOConfig 1.16's defaults unless told otherwise) are printed
by component and by phase; "fits" is judged on the larger of the load peak and the step peak.
Exit codes: 0 the plan is printed (a table, or JSON with `--json`); 2 unusable input (argparse's
usage line and one `error:` line on stderr, never a traceback), whether the command line, the
options, the spec or the config refused it. A config naming its own code (`auto_map`) is read only
with `--trust-remote-code`: the checkpoint's code then runs, to build the meta-device model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from ..spec import DTYPES, LoadSpec
from ..topology import Topology
from .bill import bill
from .loads import DPOPlan, plan_dpo_loads
from .options import DISTRIBUTED_TYPES, TRL_RELEASE, DPOOptions
from .step import ATTENTION, COMPONENTS, OPTIMIZERS, PHASES, TrainOptions, plan_training_step

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_bytes(text: str) -> int:
    """'80GiB', '80GB', '85899345920', '1.5 TiB' -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(
            f"--device-memory={text!r} is not accepted; accepted: a byte count like 80GiB, 80GB or 85899345920"
        )
    value = float(match.group(1)) * _UNITS[match.group(2).upper()]
    if value <= 0:
        raise ValueError(f"--device-memory={text!r} is not accepted; accepted: a positive size")
    return int(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m policyload.plan",
        description=f"Bytes TRL {TRL_RELEASE}'s DPO recipe loads, from config.json alone (meta device, offline).",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT_OR_CONFIG", help="a folder with config.json, or the file")
    parser.add_argument("--dtype", default="float32", help=f"one of {[d for d in DTYPES if d]} (TRL default float32)")
    parser.add_argument("--load-in-4bit", action="store_true")
    parser.add_argument("--load-in-8bit", action="store_true")
    parser.add_argument("--bnb-4bit-quant-type", default="nf4")
    parser.add_argument("--use-bnb-nested-quant", action="store_true")
    parser.add_argument("--use-peft", action="store_true")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lora-target-modules", nargs="+", default=None, help="module names, or all-linear")
    parser.add_argument("--precompute-ref-log-probs", action="store_true")
    parser.add_argument("--distributed-type", default="NO", help=f"one of {DISTRIBUTED_TYPES}")
    parser.add_argument("--attn", default=None, help=f"attention implementation: {ATTENTION[1:]} (default: sdpa)")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="read a config that names its own code (auto_map): the checkpoint's code runs to build the meta model",
    )
    train = parser.add_argument_group(f"training step (defaults: TRL {TRL_RELEASE} DPOConfig)")
    defaults = TrainOptions()
    train.add_argument("--batch-size", type=int, default=defaults.per_device_train_batch_size,
                       help="per_device_train_batch_size (default %(default)s)")
    train.add_argument("--max-length", type=int, default=defaults.max_length,
                       help="max_length, planned as the padded length (default %(default)s)")
    train.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction,
                       default=defaults.gradient_checkpointing, help="(default: on)")
    train.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=defaults.bf16,
                       help="bf16 autocast over the load dtype (default: on unless --fp16)")
    train.add_argument("--fp16", action="store_true", help="fp16 autocast (turns --bf16 off)")
    train.add_argument("--optim", default=defaults.optim, help=f"one of {OPTIMIZERS} (default %(default)s)")
    train.add_argument("--device", default=defaults.device, help="the training device, cuda or cpu (default cuda)")
    parser.add_argument("--device-memory", default=None, help="e.g. 80GiB, 80GB, 85899345920")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    return parser


def _config_path(text: str) -> Path:
    path = Path(text)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ValueError(f"{text}: no config.json there; accepted: a folder holding config.json, or a config.json file")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        config_file = _config_path(args.checkpoint)
        device_memory = None if args.device_memory is None else parse_bytes(args.device_memory)
        targets = args.lora_target_modules
        if targets == ["all-linear"]:
            targets = "all-linear"
        if args.attn is not None and args.attn not in ATTENTION:
            raise ValueError(f"--attn={args.attn!r} is not accepted; accepted: {ATTENTION[1:]}")
        train = TrainOptions(
            per_device_train_batch_size=args.batch_size,
            max_length=args.max_length,
            gradient_checkpointing=args.gradient_checkpointing,
            bf16=args.bf16 and not args.fp16,
            fp16=args.fp16,
            optim=args.optim,
            device=args.device,
        )
        spec = LoadSpec(
            str(config_file.parent),
            dtype=args.dtype,
            attn_implementation=args.attn,
            trust_remote_code=args.trust_remote_code,
            load_in_4bit=args.load_in_4bit,
            load_in_8bit=args.load_in_8bit,
            bnb_4bit_quant_type=args.bnb_4bit_quant_type,
            use_bnb_nested_quant=args.use_bnb_nested_quant,
        )
        options = DPOOptions(
            use_peft=args.use_peft,
            precompute_ref_log_probs=args.precompute_ref_log_probs,
            distributed_type=args.distributed_type,
            lora_r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_target_modules=targets,
        )
        # The bill is for a training process on the training device (an accelerator unless told cpu).
        plan = plan_dpo_loads(spec, options, Topology(None if train.device == "cpu" else train.device))
        config = _read_config(config_file, args.trust_remote_code)
        result = bill(plan, config)
        step = plan_training_step(spec, options, train, config, load_bill=result)
    except ValueError as error:
        parser.error(str(error))
    result.update(step.to_dict())
    decisive = max(result["peak_bytes"], result["step_peak_bytes"])
    result["fits"] = None if device_memory is None else decisive <= device_memory
    if device_memory is not None:
        result["device_memory_bytes"] = device_memory
        result["margin_bytes"] = device_memory - decisive
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_table(plan, result, step))
    return 0


def _read_config(config_file: Path, trust_remote_code: bool):
    """The config, refusing one that names its own code unless trusted: transformers' own message
    ("does not recognize this architecture") does not say that remote code is what is missing."""
    from transformers import AutoConfig

    auto_map = json.loads(config_file.read_text()).get("auto_map")
    if auto_map and not trust_remote_code:
        raise ValueError(
            f"{config_file}: its architecture needs the checkpoint's own code (auto_map: {sorted(auto_map)}); "
            "accepted: --trust-remote-code (that code then runs, to build the meta-device model)"
        )
    try:
        return AutoConfig.from_pretrained(str(config_file.parent), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{config_file}: not a readable config.json ({type(error).__name__}: {error})") from error


def _table(plan: DPOPlan, result: dict, step) -> str:
    gib = 2**30
    reference = plan.reference
    rows = [
        ("policy", result["policy_bytes"]),
        (
            "reference"
            + (" (freed after precompute)" if reference and reference.freed_after_precompute else "")
            + ("" if reference else " (none)"),
            result["reference_bytes"],
        ),
        ("adapter" + ("" if plan.adapter else " (none)"), result["adapter_bytes"]),
        ("total", result["total_bytes"]),
        ("peak while loading", result["peak_bytes"]),
    ]
    lines = [f"{'loading':<40} {'GiB':>9}"] + [f"{name:<40} {value / gib:>9.2f}" for name, value in rows]
    lines.append(f"{'training step, by component':<40} {'GiB':>9}")
    lines += [f"  {name:<38} {result['components'][name] / gib:>9.2f}" for name in COMPONENTS]
    lines.append(f"{'training step, live at each phase':<40} {'GiB':>9}")
    lines += [f"  {name:<38} {result['phases'][name] / gib:>9.2f}" for name in PHASES]
    lines.append(f"{'peak of the step':<40} {result['step_peak_bytes'] / gib:>9.2f}")
    lines.append(f"  (phase {step.peak_phase}; largest component there: {step.deciding_component})")
    if result["fits"] is not None:
        verdict = "fits" if result["fits"] else "does NOT fit"
        lines.append(
            f"{verdict} in {result['device_memory_bytes'] / gib:.2f} GiB, margin {result['margin_bytes'] / gib:.2f} GiB"
            " (the larger of the load peak and the step peak)"
        )
    return "\n".join(lines)
