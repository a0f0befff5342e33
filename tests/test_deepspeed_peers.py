"""DeepSpeed's model-states estimates, the training-step peer that exists only where DeepSpeed installs
(`tox -e dist-cpu`; the bench and unit environments do not install it, so their tables say n/a).

The expected figures are written out from the Qwen2-0.5B shape (hidden 896, 24 layers, MLP 4864,
2 KV heads of 64, vocabulary 151936, tied head, biases on q, k, v) and DeepSpeed 0.19.8's formulas for
one GPU without offload, not taken from the code under test; docs/training-step-measured.md's table of
them is held equal to the report of the committed real-size run here.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="requires deepspeed (tox -e dist-cpu)"
)

ROOT = Path(__file__).resolve().parents[1]
H, LAYERS, MLP, KV, VOCAB = 896, 24, 4864, 2 * 64, 151936
PER_LAYER = (H * H + H) + 2 * (H * KV + KV) + H * H + 3 * H * MLP + 2 * H  # q; k, v; o; gate, up, down; norms
PARAMETERS = VOCAB * H + LAYERS * PER_LAYER + H  # tied embedding and head once, final norm
LARGEST_LAYER = VOCAB * H  # the embedding
PEERS = ("deepspeed zero2 model states", "deepspeed zero3 model states")


def test_deepspeed_model_states_are_its_formulas_on_the_qwen2_shape():
    """DeepSpeed's per-GPU model states on one GPU without offload, as its estimators write them: ZeRO-2
    `4 * params + 16 * params / gpus` (runtime/zero/stage_1_and_2.py), ZeRO-3
    `4 * largest_layer + 18 * params / gpus` (runtime/zero/stage3.py)."""
    from fixtures.realsize import realsize_config
    from policyload import LoadSpec
    from policyload.estimators import training_estimates
    from policyload.plan.step import TrainOptions

    assert PARAMETERS == 494_032_768  # Qwen2-0.5B's published count
    spec = LoadSpec("qwen2-0.5b", dtype="bfloat16")
    estimates = training_estimates(spec, TrainOptions(), realsize_config("qwen2-0.5b"))
    assert estimates["deepspeed zero2 model states"] == 4 * PARAMETERS + 16 * PARAMETERS
    assert estimates["deepspeed zero3 model states"] == 4 * LARGEST_LAYER + 18 * PARAMETERS
    assert estimates["reasons"] == {}


def test_docs_table_is_the_report_of_the_recorded_run_where_deepspeed_installs():
    from benchmarks.check_train_step import replan
    from conformance import front_door
    from policyload.report import load_run
    from policyload.report.train import peer_table

    run = load_run(front_door.RESULTS / "qwen2-0.5b-train-cpu.json.gz")
    replan(run)
    page = (ROOT / "docs" / "training-step-measured.md").read_text()
    match = re.search(r"<!-- deepspeed-peers:begin -->\n(.*?)<!-- deepspeed-peers:end -->", page, re.S)
    assert match, "docs/training-step-measured.md has no deepspeed-peers block"
    assert match.group(1) == peer_table(run, PEERS)
