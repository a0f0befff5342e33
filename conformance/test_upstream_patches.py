"""The private upstream names the suite's patches rely on still exist (`upstream_patches.private_names`).

A patch of a name that is gone either fails obscurely or, for a patched module global, silently
stands in for nothing; this fails first, saying what the patch stood in for.
"""

import pytest

from .upstream_patches import private_names


def dotted(owner) -> str:
    """`transformers.modeling_utils.PreTrainedModel` for a class, the module's name for a module."""
    return f"{owner.__module__}.{owner.__qualname__}" if isinstance(owner, type) else owner.__name__


@pytest.mark.parametrize(
    "owner, name, sentence", [pytest.param(*entry, id=f"{dotted(entry[0])}.{entry[1]}") for entry in private_names()]
)
def test_patched_private_name_exists_upstream(owner, name, sentence):
    if not hasattr(owner, name):
        pytest.fail(f"{dotted(owner)}.{name} is gone upstream. {sentence}", pytrace=False)
