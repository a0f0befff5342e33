"""The topology a caller passes is the topology the reference uses, never this process's own.

A launcher, a planner or the suite's simulated machines build keywords for a rank they are not
running on. TRL's functions take no topology (they read the process), so there is no TRL value to
compare with here: the expectations are the contract's, written out by hand ({"": rank} on a
CUDA or XPU process, None on a CPU one, for k-bit loads).
"""

import pytest
import transformers

from policyload import LoadSpec, Topology, build_model_kwargs, load_policy

QLORA = LoadSpec("checkpoint", dtype="bfloat16", load_in_4bit=True)
CONTRACT = [(Topology("cuda", 1), {"": 1}), (Topology("xpu", 0), {"": 0}), (Topology(None), None)]


@pytest.mark.parametrize("topology, device_map", CONTRACT, ids=lambda value: getattr(value, "token", ""))
def test_build_model_kwargs_uses_the_topology_it_is_given(topology, device_map):
    assert build_model_kwargs(QLORA, topology)["device_map"] == device_map


@pytest.mark.parametrize("topology, device_map", CONTRACT, ids=lambda value: getattr(value, "token", ""))
def test_load_policy_loads_with_the_topology_it_is_given(topology, device_map, monkeypatch):
    calls = []

    def record(path, **kwargs):
        calls.append((path, kwargs))
        return "model"

    # Public API, not an internal: load_policy's one call, recorded instead of made.
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", record)
    assert load_policy(QLORA, topology) == "model"
    assert [(path, kwargs["device_map"]) for path, kwargs in calls] == [("checkpoint", device_map)]
