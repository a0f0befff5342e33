"""`python -m policyload.plan`: the bytes TRL's DPO recipe loads, from a config.json, before training.

Offline (`HF_HUB_OFFLINE=1` unless set) and on the meta device: no weights are read, so a planner
can ask about an 8B checkpoint holding only its config. Exit codes: 0 the bill is printed (a table,
or JSON with `--json`); 2 unusable input (argparse's usage line and one `error:` line on stderr,
never a traceback), whether the command line, the options, the spec or the config refused it.
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
    parser.add_argument("--device-memory", default=None, help="e.g. 80GiB, 80GB, 85899345920")
    parser.add_argument("--json", action="store_true", help="print the bill as JSON")
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
        spec = LoadSpec(
            str(config_file.parent),
            dtype=args.dtype,
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
        # The bill is for a training process on an accelerator, whatever machine asks.
        plan = plan_dpo_loads(spec, options, Topology("cuda"))
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(str(config_file))
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{config_file}: not a readable config.json ({type(error).__name__}: {error})") from error
        result = bill(plan, config)
    except ValueError as error:
        parser.error(str(error))
    result["fits"] = None if device_memory is None else result["peak_bytes"] <= device_memory
    if device_memory is not None:
        result["device_memory_bytes"] = device_memory
        result["margin_bytes"] = device_memory - result["peak_bytes"]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_table(plan, result))
    return 0


def _table(plan: DPOPlan, result: dict) -> str:
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
    lines = [f"{'':<40} {'GiB':>9}"] + [f"{name:<40} {value / gib:>9.2f}" for name, value in rows]
    if result["fits"] is not None:
        verdict = "fits" if result["fits"] else "does NOT fit"
        lines.append(
            f"{verdict} in {result['device_memory_bytes'] / gib:.2f} GiB, margin {result['margin_bytes'] / gib:.2f} GiB"
        )
    return "\n".join(lines)
