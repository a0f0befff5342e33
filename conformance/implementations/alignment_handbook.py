"""alignment-handbook 0.3.0: `alignment/model_utils.py`'s `get_quantization_config` and
`get_kbit_device_map`, its copies of TRL's, called unmodified (tox -e impl-alignment-handbook).

Reached without the package's `__init__`, which imports `alignment.decontaminate`, whose module
body downloads `openai_humaneval` from the hub. One import is bridged: model_utils imports
`RepositoryNotFoundError` from `huggingface_hub.utils._errors`, a private module huggingface_hub
no longer has (not in 0.25.2 or later; the class lives on in `huggingface_hub.errors`); the
functions under test never use it (only `is_adapter_model` does), so that name is aliased for the
import. The package pins huggingface-hub<1.0, which transformers 5.24 cannot run with (it asks for
>=1.31): it is installed --no-deps.

The full keyword set and the DPO plan have no function here: `scripts/run_dpo.py` builds its
`from_pretrained` keywords inline and is not part of the distribution.
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


_NO_RECIPE = "scripts/run_dpo.py builds the keywords inline and is not in the distribution"
IMPLEMENTATION = Implementation(
    name="alignment-handbook",
    divergences=Path(__file__).with_name("alignment-handbook.toml"),
    quantization_config=quantization_config,
    device_map=device_map,
    missing={"recipe": _NO_RECIPE, "dpo-plan": "no DPO load plan: " + _NO_RECIPE},
    description="alignment-handbook 0.3.0, alignment/model_utils.py",
    requires=("alignment-handbook", "impl-alignment-handbook"),
)
