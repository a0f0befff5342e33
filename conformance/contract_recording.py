"""The contract's `device_map`, recorded from the last TRL release that had `get_kbit_device_map`.

TRL 1.8 removed `get_kbit_device_map`, the function that defined the recipe contract's device map
(`{"": local_process_index}` for a k-bit load on CUDA/XPU, None otherwise). From 1.8 TRL's own
code cannot say what the contract is, so the suite checks the reference against observations of
that function, and of the recipe that called it, recorded from TRL 1.7.1 and committed as data
with the environment they were recorded in (the pattern of TRL's own `tests/invariant`):
`recorded/kbit-device-map.json`, with

- `get_kbit_device_map`: `trl.get_kbit_device_map()` on each simulated topology of the
  device-map level (`cases.DEVICE_MAP_TOPOLOGIES`, by token: `cpu`, `cuda0`, ..., `xpu1`);
- `recipe_device_map`: the `device_map` TRL's recipe passed to `from_pretrained` in every k-bit
  recipe case (unquantized loads never called `get_kbit_device_map`), by case id, as compared
  (`trl_oracle.comparable_kwargs`: `device_map=None` is the keyword left out, `"<absent>"`).

Every release's suite compares `kbit_device_map` and `build_model_kwargs` with it
(`test_device_map.py`, `test_recipe.py`); the recorded release's own environment (`tox -e
trl-1.7`) re-observes every entry and fails where it differs, so the recording cannot go stale.
To record again, in that environment (`HF_HUB_OFFLINE=1`):

    .tox/trl-1.7/bin/python -m conformance.contract_recording --write
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
from importlib.metadata import version
from pathlib import Path

from packaging.version import Version

from policyload import Topology

from .agreement import ABSENT
from .cases import DEVICE_MAP_TOPOLOGIES, recipe_case_id, recipe_cases
from .trl_release import TRL

RECORDING = Path(__file__).with_name("recorded") / "kbit-device-map.json"
PACKAGES = ("trl", "transformers", "torch", "accelerate", "bitsandbytes")


def to_json(device_map):
    return "<absent>" if device_map is ABSENT else device_map


def from_json(device_map):
    return ABSENT if device_map == "<absent>" else device_map


def load(path: Path = RECORDING) -> dict:
    data = json.loads(path.read_text())
    for section in ("get_kbit_device_map", "recipe_device_map"):
        data[section] = {key: from_json(value) for key, value in data[section].items()}
    return data


#: Only `--write` runs without a recording (the first time).
_NOTHING = {"environment": {"trl": "0"}, "get_kbit_device_map": {}, "recipe_device_map": {}}
RECORDED = load() if RECORDING.exists() else _NOTHING
RECORDED_TRL = Version(RECORDED["environment"]["trl"])


def recorded_here() -> bool:
    """Whether the installed TRL is the release the recording comes from (so it is re-verified)."""
    return TRL == RECORDED_TRL


def kbit_recipe_cases():
    """The recipe cases whose device_map came from `get_kbit_device_map`: k-bit loads TRL accepts."""
    return [param for param in recipe_cases() if param.values[0].quantization != "none" and param.values[0].valid]


def trl_kbit_device_map(topology: Topology):
    """`trl.get_kbit_device_map()` as it runs on `topology` (TRL < 1.8 only)."""
    from trl import get_kbit_device_map

    from .upstream_patches import simulated_topology

    with simulated_topology(topology, get_kbit_device_map):
        return get_kbit_device_map()


def recipe_device_map(comparable_kwargs: dict):
    return comparable_kwargs.get("device_map", ABSENT)


def observe_now() -> dict:
    """What the installed TRL does, in the recording's shape (runs TRL's recipe for every k-bit case)."""
    from fixtures.checkpoints import tiny_checkpoint
    from fixtures.preference_data import preference_dataset

    from .trl_oracle import recipe_kwargs

    path, dataset = str(tiny_checkpoint("llama")), preference_dataset()
    recipe = {}
    for param in kbit_recipe_cases():
        case, topology = param.values
        with tempfile.TemporaryDirectory() as output_dir:
            kwargs = recipe_kwargs(path, case.model_config_fields(), dataset, output_dir, topology)
        recipe[recipe_case_id(case, topology)] = recipe_device_map(kwargs)
    return {
        "environment": {
            **{package: version(package) for package in PACKAGES},
            "recorded_on": datetime.date.today().isoformat(),
            "by": "python -m conformance.contract_recording --write",
        },
        "get_kbit_device_map": {t.token: trl_kbit_device_map(t) for t in DEVICE_MAP_TOPOLOGIES},
        "recipe_device_map": recipe,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {RECORDING.name} (else only compare)")
    args = parser.parse_args(argv)
    observed = observe_now()
    if args.write:
        sections = ("get_kbit_device_map", "recipe_device_map")
        data = {**observed, **{s: {k: to_json(v) for k, v in observed[s].items()} for s in sections}}
        RECORDING.parent.mkdir(exist_ok=True)
        RECORDING.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(f"wrote {RECORDING}")
        return 0
    same = all(observed[s] == RECORDED[s] for s in ("get_kbit_device_map", "recipe_device_map"))
    print("the recording matches this environment" if same else "the recording differs from this environment")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
