"""Mutation testing of the reference: plant a fault in `policyload`, run the tests that can reach
it, and see them fail.

The mutants are a curated list of semantic faults (`mutants.toml`), each one a mistake a person
could make in the reference: an exact `old` snippet of a file of `src/policyload`, its `new`
replacement, a one-line description, and the named test selection that must kill it. A generic
tool (mutmut, cosmic-ray) would mutate every operator of every module and run far more than the
20 minutes this machine allows with a 1140-test suite; a curated list covers every public function
with faults that mean something, in minutes.

One job per module:

    mutants.py   read and check the list; plant a mutant in a temporary copy of src/
    runner.py    run the baselines and the mutants as child pytest processes, one or two at a time
    report.py    print the list, the score and the survivors; write the JSON record
    cli.py       the command line, `main(argv)`; `__main__.py` only calls it

This module only re-exports what the tests use (`tests/test_mutation.py`).
"""

from .cli import main
from .mutants import SOURCE_ROOT, HarnessError, Mutant, check_snippet, load_mutants, mutated_copy
from .runner import first_failure, imported_from

__all__ = [
    "SOURCE_ROOT",
    "HarnessError",
    "Mutant",
    "check_snippet",
    "first_failure",
    "imported_from",
    "load_mutants",
    "main",
    "mutated_copy",
]
