"""Adapters: one module per implementation (an `IMPLEMENTATION` each), its divergence file beside it.

`import_skipping_package_inits` is how third-party loading modules are reached: their packages'
`__init__` files import far more than loading needs (alignment-handbook's downloads a dataset
from the hub at import time), so only the loading module and what it imports itself are run,
from the installed files, unmodified.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def import_skipping_package_inits(module: str, distribution: str, tox_env: str):
    """Import `module` (a.b.c) with every parent package registered bare (its `__path__` only, its
    `__init__` not run); the module's own imports run as usual. Module-global for the process."""
    if module in sys.modules:
        return sys.modules[module]
    parts = module.split(".")
    if parts[0] in sys.modules:
        path = list(sys.modules[parts[0]].__path__)
    else:
        top = importlib.util.find_spec(parts[0])  # finds the package without running its __init__
        if top is None or not top.submodule_search_locations:
            raise ImportError(
                f"{module} needs the {distribution} distribution installed (it is in tox -e {tox_env}), "
                f"and package {parts[0]!r} was not found"
            )
        path = list(top.submodule_search_locations)
    for depth in range(1, len(parts)):
        name = ".".join(parts[:depth])
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = path
            package.__package__ = name
            sys.modules[name] = package
        path = [f"{path[0]}/{parts[depth]}"]
    return importlib.import_module(module)
