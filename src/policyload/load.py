"""`load_policy`: the one call the DPO recipe makes, with errors that say what went wrong."""

from __future__ import annotations

import gc

from huggingface_hub.errors import HFValidationError
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, PreTrainedModel

from .kwargs import build_model_kwargs
from .spec import LoadSpec
from .topology import Topology


class CheckpointError(OSError):
    """The checkpoint could not be read: missing, not in the offline cache, or corrupt."""


def load_policy(spec: LoadSpec, topology: Topology | None = None) -> PreTrainedModel:
    """`AutoModelForCausalLM.from_pretrained(spec.model_name_or_path, **build_model_kwargs(...))`.

    A checkpoint that cannot be read raises `CheckpointError` naming the path and revision; the
    half-built model is released first, so a failed load leaves no memory (host or GPU) behind.
    """
    kwargs = build_model_kwargs(spec, topology)
    try:
        return AutoModelForCausalLM.from_pretrained(spec.model_name_or_path, **kwargs)
    # HFValidationError: a path that is neither a folder nor a valid repo id (transformers 4.x).
    except (OSError, SafetensorError, HFValidationError) as error:
        failure = CheckpointError(
            f"cannot load policy checkpoint {spec.model_name_or_path!r} at revision {spec.model_revision!r}: "
            f"{type(error).__name__}: {error}"
        )
    # Outside the except block, so the traceback (and the frames holding the half-built model) is gone.
    release_memory()
    raise failure from None


def release_memory() -> None:
    """Collect garbage and give cached accelerator memory back, so the next measurement starts clean."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
