"""Root conftest: its presence puts the repository root on sys.path, so `import fixtures` works
from conformance/, benchmarks/ and tests/ alike. Offline is set here too, so a bare `pytest`
outside tox never waits on the network."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
