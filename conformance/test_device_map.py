"""Level 2: `kbit_device_map` against TRL's `get_kbit_device_map` under simulated topologies.

TRL 1.8 removed `get_kbit_device_map`; there the trainer's own decision
(`create_model_from_path`) is observed instead, and its difference listed in divergences.toml.
"""

import pytest

from policyload import Topology, kbit_device_map

from .agreement import Outcome, assert_agrees, observe
from .cases import DEVICE_MAP_LEVEL, DEVICE_MAP_TOPOLOGIES, trainer_case_id
from .trl_oracle import trainer_device_map
from .trl_release import FACTS
from .upstream_patches import simulated_topology


def trl_kbit_device_map(topology: Topology):
    from trl import get_kbit_device_map

    with simulated_topology(topology, get_kbit_device_map):
        return get_kbit_device_map()


@pytest.mark.skipif(
    not FACTS.has_kbit_device_map, reason="requires trl<1.8: get_kbit_device_map was removed in trl 1.8"
)
@pytest.mark.parametrize("topology", DEVICE_MAP_TOPOLOGIES, ids=lambda topology: topology.token)
def test_kbit_device_map_matches_trl(topology):
    reference = Outcome(kbit_device_map(topology))
    assert_agrees(DEVICE_MAP_LEVEL, topology.token, reference, observe(trl_kbit_device_map, topology))


@pytest.mark.skipif(FACTS.has_kbit_device_map, reason="requires trl>=1.8: before it, get_kbit_device_map decides")
@pytest.mark.parametrize("topology", DEVICE_MAP_TOPOLOGIES, ids=lambda topology: topology.token)
def test_kbit_device_map_matches_trainer_decision(topology, tiny_checkpoints):
    observed = observe(trainer_device_map, str(tiny_checkpoints["llama"]), topology)
    assert_agrees(DEVICE_MAP_LEVEL, trainer_case_id(topology), Outcome(kbit_device_map(topology)), observed)
