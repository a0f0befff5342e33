"""What differs between TRL releases in how the DPO recipe loads its policy: one table.

Each row is a release where something changed, read off that release's source
(`pip download --no-deps trl==X`: `trainer/model_config.py`, `trainer/utils.py`, `scripts/dpo.py`).
The installed release takes the last row at or below it. Tests read facts from here and
nowhere else; `test_release_facts.py` checks the row against the installed TRL itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib.metadata import version

from packaging.version import Version


@dataclass(frozen=True)
class ReleaseFacts:
    since: str
    #: `ModelConfig` field holding the load dtype ("torch_dtype" up to 0.22).
    dtype_field: str
    #: `ModelConfig.dtype` default: None, then "float32" from 0.27 (read off 0.26.2 and 0.27.0).
    default_dtype: str | None
    #: Up to 0.25, `get_quantization_config` set `bnb_4bit_quant_storage` to the load dtype.
    quant_storage_follows_dtype: bool
    #: Where `trust_remote_code` lives: `ModelConfig` until 1.6, `DPOConfig` from 1.7.
    trust_remote_code_on: str
    #: `trl.get_kbit_device_map`, removed in 1.8 (the trainer decides `device_map`).
    has_kbit_device_map: bool
    #: How `scripts/dpo.py` reaches `from_pretrained`: "direct" (`AutoModelForCausalLM.from_pretrained`
    #: in the script) or "trainer" (`DPOConfig.model_init_kwargs`, then `create_model_from_path`, 1.5+).
    recipe: str
    #: `main()`'s parameters: "dataset_args" from 0.20 (DatasetMixtureConfig) onwards.
    main_takes_dataset_args: bool = True
    #: Whether TRL's device decider reads accelerate's `PartialState` (`get_kbit_device_map` does;
    #: 1.8-1.9's `create_model_from_path` passes "auto" without asking; 1.10 asks for the device type).
    decider_reads_partial_state: bool = True


_ROWS = [
    ReleaseFacts("0.22", "torch_dtype", None, True, "ModelConfig", True, "direct"),
    ReleaseFacts("0.23", "dtype", None, True, "ModelConfig", True, "direct"),
    ReleaseFacts("0.26", "dtype", None, False, "ModelConfig", True, "direct"),
    ReleaseFacts("0.27", "dtype", "float32", False, "ModelConfig", True, "direct"),
    ReleaseFacts("1.5", "dtype", "float32", False, "ModelConfig", True, "trainer"),
    ReleaseFacts("1.7", "dtype", "float32", False, "DPOConfig", True, "trainer"),
    ReleaseFacts("1.8", "dtype", "float32", False, "DPOConfig", False, "trainer", decider_reads_partial_state=False),
    ReleaseFacts("1.10", "dtype", "float32", False, "DPOConfig", False, "trainer"),
]


def installed_trl() -> Version:
    return Version(version("trl"))


def facts_for(release: Version) -> ReleaseFacts:
    """The facts of `release`: the last row whose `since` is at or below it."""
    rows = [row for row in _ROWS if Version(row.since) <= Version(release.base_version)]
    if not rows:
        raise LookupError(f"trl {release} predates the oldest release described ({_ROWS[0].since})")
    return rows[-1]


def describe(facts: ReleaseFacts) -> str:
    return ", ".join(f"{field.name}={getattr(facts, field.name)}" for field in dataclasses.fields(facts))


TRL = installed_trl()
FACTS = facts_for(TRL)
