"""Level 2: `kbit_device_map` against TRL's `get_kbit_device_map` under simulated topologies.

TRL 1.8 removed `get_kbit_device_map`; there the trainer's own decision
(`create_model_from_path`) is observed instead, and its difference listed in divergences.toml.
"""

import pytest

from policyload import Topology, kbit_device_map

from .agreement import Outcome, assert_agrees, observe
from .trl_oracle import simulated_topology, trainer_device_map
from .trl_release import FACTS

LEVEL = "device-map"
TOPOLOGIES = [Topology(None, 0)] + [Topology("cuda", index) for index in range(4)] + [Topology("xpu", 0), Topology("xpu", 1)]


def trl_kbit_device_map(topology: Topology):
    from trl import get_kbit_device_map

    with simulated_topology(topology, get_kbit_device_map):
        return get_kbit_device_map()


@pytest.mark.skipif(not FACTS.has_kbit_device_map, reason="requires trl<1.8: get_kbit_device_map was removed in trl 1.8")
@pytest.mark.parametrize("topology", TOPOLOGIES, ids=lambda topology: topology.token)
def test_kbit_device_map_matches_trl(topology):
    assert_agrees(LEVEL, topology.token, Outcome(kbit_device_map(topology)), observe(trl_kbit_device_map, topology))


@pytest.mark.skipif(FACTS.has_kbit_device_map, reason="requires trl>=1.8: before it, get_kbit_device_map decides")
@pytest.mark.parametrize("topology", TOPOLOGIES, ids=lambda topology: topology.token)
def test_kbit_device_map_matches_trainer_decision(topology, tiny_checkpoints):
    observed = observe(trainer_device_map, str(tiny_checkpoints["llama"]), topology)
    assert_agrees(LEVEL, f"trainer-{topology.token}", Outcome(kbit_device_map(topology)), observed)
