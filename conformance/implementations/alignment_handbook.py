"""alignment-handbook 0.3.0: `alignment/model_utils.py`'s `get_quantization_config` and
`get_kbit_device_map`, its copies of TRL's, called unmodified (tox -e impl-alignment-handbook).

Reached without the package's `__init__`, which imports `alignment.decontaminate`, whose module
body downloads `openai_humaneval` from the hub. One import is bridged: model_utils imports
`RepositoryNotFoundError` from `huggingface_hub.utils._errors`, a private module huggingface_hub
no longer has (not in 0.25.2 or later; the class lives on in `huggingface_hub.errors`); the
functions under test never use it (only `is_adapter_model` does), so that name is aliased for the
import. The package pins huggingface-hub<1.0, which transformers 5.24 cannot run with (it asks for
>=1.31): it is installed --no-deps.

The full keyword set and the DPO plan have no function here. The release's package loads no model
(its only `from_pretrained` is the tokenizer's): the DPO load is inline in the repository's
`scripts/run_dpo.py` (tag v0.3.0, lines 141-204), which is not in the distribution and cannot run
against TRL 1.16 either: it reads `DPOConfig.max_prompt_length` (line 199; AttributeError, TRL 1.16's
DPOConfig has no such field) and hands its keywords to `DPOTrainer(model_init_kwargs=...,
ref_model_init_kwargs=..., beta=..., tokenizer=..., ...)`, none of which TRL 1.16's DPOTrainer takes
(seen on 2026-12-05, the script's lines run in this environment). The repository pinned
`trl>=0.9.6,<0.13.0` after the release (huggingface/alignment-handbook#212, "Modern TRL is not
compatible"). `test_alignment_handbook_loads_no_model_and_its_script_cannot_reach_this_trl` fails
when either changes.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from unittest import mock

from ..implementation import Implementation
from ..upstream_patches import cuda_available
from . import import_skipping_package_inits


def model_utils():
    try:
        import huggingface_hub.utils._errors  # noqa: F401  (huggingface_hub < 0.25)
    except ModuleNotFoundError:
        import huggingface_hub.errors

        sys.modules["huggingface_hub.utils._errors"] = huggingface_hub.errors
    return import_skipping_package_inits("alignment.model_utils", "alignment-handbook", "impl-alignment-handbook")


def quantization_config(fields: dict):
    module = model_utils()
    from alignment.configs import ModelArguments

    fields = dict(fields)
    arguments = ModelArguments(model_name_or_path="model", torch_dtype=fields.pop("dtype"), **fields)
    return module.get_quantization_config(arguments)


class _Accelerator:
    def __init__(self, local_process_index: int):
        self.local_process_index = local_process_index


def device_map(topology):
    """`get_kbit_device_map()` on `topology`: torch.cuda.is_available() and `Accelerator()`'s local
    rank (imported into model_utils by that name) are what it reads."""
    function = model_utils().get_kbit_device_map
    with contextlib.ExitStack() as stack:
        stack.enter_context(cuda_available(topology.accelerator == "cuda"))
        replacement = {"Accelerator": lambda: _Accelerator(topology.local_process_index)}
        stack.enter_context(mock.patch.dict(function.__globals__, replacement))
        return function()


_NO_RECIPE = (
    "the package loads no model: scripts/run_dpo.py builds the keywords inline, is not in the distribution "
    "and cannot run against TRL 1.16 "
    "(DPOTrainer(model_init_kwargs=..., beta=...) and DPOConfig.max_prompt_length are gone)"
)
IMPLEMENTATION = Implementation(
    name="alignment-handbook",
    divergences=Path(__file__).with_name("alignment-handbook.toml"),
    quantization_config=quantization_config,
    device_map=device_map,
    missing={"recipe": _NO_RECIPE, "dpo-plan": "no DPO load plan: " + _NO_RECIPE},
    description="alignment-handbook 0.3.0, alignment/model_utils.py",
    requires=("alignment-handbook", "impl-alignment-handbook"),
)
