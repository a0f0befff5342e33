"""`benchmarks/per_rank_vram.py` under torchrun with 2 gloo processes on the CPU: every rank loads,
rank 0 writes every rank's record, and the VRAM part is skipped with its reason (the nightly's
multi-GPU job runs the same script with one rank per GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_two_gloo_ranks_load_and_skip_vram_with_the_reason(tmp_path):
    output = tmp_path / "per-rank-vram.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}

    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "benchmarks.per_rank_vram", "--json", str(output), "--markdown", str(tmp_path / "per-rank-vram.md")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    document = json.loads(output.read_text())
    assert {
        "backend": document["backend"],
        "world_size": document["world_size"],
        "ranks": [(rank["rank"], rank["local_rank"]) for rank in document["ranks"]],
        "cases": [
            (case["checkpoint"], case["expected_device"], case["parameter_devices"], case["vram_skipped"])
            for rank in document["ranks"] for case in rank["cases"]
        ],
        "misplaced": document["misplaced"],
    } == {
        "backend": "gloo",
        "world_size": 2,
        "ranks": [(0, 0), (1, 1)],
        "cases": [
            (
                "tiny-llama", "cpu", ["cpu"],
                "VRAM skipped: requires CUDA (torch.cuda.is_available() is False); placement recorded only",
            )
        ] * 2,
        "misplaced": [],
    }
    assert "VRAM skipped: requires CUDA" in result.stdout
    assert "| 1 | tiny-llama | cpu | cpu | n/a | n/a |" in (tmp_path / "per-rank-vram.md").read_text()


def test_outside_torchrun_it_says_how_to_run_it(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}

    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.per_rank_vram", "--json", str(tmp_path / "x.json")],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )

    assert result.returncode == 2
    assert result.stderr.startswith("error: run under torchrun (LOCAL_RANK is not set): torchrun --standalone")
