"""Level 2: the implementation's k-bit device map (the reference's `kbit_device_map` by default)
against TRL's `get_kbit_device_map` under simulated topologies.

TRL 1.8 removed `get_kbit_device_map`. From there the contract is checked against what it did,
recorded from TRL 1.7.1 (`contract_recording.py`; re-verified in the trl-1.7 environment), and
the trainer's own decision (`create_model_from_path`) is observed too, its difference listed
exactly in divergences.toml. An outcome is `{"device_map": value}`, so a difference is named by key.
"""

import pytest

from policyload import Topology

from .agreement import Outcome, assert_agrees, observe, same
from .cases import DEVICE_MAP_LEVEL, DEVICE_MAP_TOPOLOGIES, trainer_case_id
from .contract_recording import RECORDED, RECORDED_TRL, recorded_here, trl_kbit_device_map
from .implementation import selected
from .trl_oracle import trainer_device_map
from .trl_release import FACTS, TRL

TOPOLOGY_IDS = {"ids": lambda topology: topology.token}


def implementation_outcome(topology: Topology) -> Outcome:
    """The implementation under test's device map (skips the test where it has none)."""
    device_map = selected().function(DEVICE_MAP_LEVEL)
    return observe(lambda: {"device_map": device_map(topology)})


#: The recorded-contract checks below hold policyload's own `kbit_device_map` to a recording.
reference_only = pytest.mark.skipif(
    not selected().is_reference, reason="checks the reference's kbit_device_map against TRL 1.7.1's recording"
)


@pytest.mark.skipif(
    not FACTS.has_kbit_device_map, reason="requires trl<1.8: get_kbit_device_map was removed in trl 1.8"
)
@pytest.mark.parametrize("topology", DEVICE_MAP_TOPOLOGIES, **TOPOLOGY_IDS)
def test_kbit_device_map_matches_trl(topology):
    trl = observe(lambda: {"device_map": trl_kbit_device_map(topology)})
    assert_agrees(DEVICE_MAP_LEVEL, topology.token, implementation_outcome(topology), trl)


@pytest.mark.skipif(FACTS.has_kbit_device_map, reason="requires trl>=1.8: before it, get_kbit_device_map decides")
@pytest.mark.parametrize("topology", DEVICE_MAP_TOPOLOGIES, **TOPOLOGY_IDS)
def test_kbit_device_map_matches_trainer_decision(topology, tiny_checkpoints):
    observed = observe(lambda: {"device_map": trainer_device_map(str(tiny_checkpoints["llama"]), topology)})
    assert_agrees(DEVICE_MAP_LEVEL, trainer_case_id(topology), implementation_outcome(topology), observed)


@reference_only
@pytest.mark.parametrize("topology", DEVICE_MAP_TOPOLOGIES, **TOPOLOGY_IDS)
def test_kbit_device_map_matches_recorded_contract(topology):
    """On every release, TRL's newest included: the reference (through its adapter, so that the
    adapter is held to it too) against what `get_kbit_device_map` did."""
    reference = selected().function(DEVICE_MAP_LEVEL)(topology)
    recorded = RECORDED["get_kbit_device_map"][topology.token]
    assert same(reference, recorded), (
        f"device_map: reference {reference!r}, recorded from trl {RECORDED_TRL} {recorded!r} [{topology.token}]"
    )


@pytest.mark.skipif(not recorded_here(), reason=f"re-verified in the recorded release's own, trl {RECORDED_TRL}")
@pytest.mark.parametrize("topology", DEVICE_MAP_TOPOLOGIES, **TOPOLOGY_IDS)
def test_recording_of_get_kbit_device_map_is_current(topology):
    observed, recorded = trl_kbit_device_map(topology), RECORDED["get_kbit_device_map"][topology.token]
    assert same(observed, recorded), (
        f"device_map: trl {TRL} {observed!r}, recorded {recorded!r} [{topology.token}]: the recording is stale; "
        "re-record (python -m conformance.contract_recording --write)"
    )


def test_recording_covers_every_topology():
    assert set(RECORDED["get_kbit_device_map"]) == {topology.token for topology in DEVICE_MAP_TOPOLOGIES}


def test_a_rank_blind_device_map_fails_the_recorded_contract():
    """The fault the recording exists for: `{"": 0}` on every CUDA process."""
    assert not same({"": 0}, RECORDED["get_kbit_device_map"][Topology("cuda", 1).token])
