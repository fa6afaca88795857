"""The thread governor: it times both settings and keeps the faster, follows neighbours
coming and going, and says why it changed anything."""

from __future__ import annotations

import pytest
import torch

from factordiff.config import load_config
from factordiff.errors import ConfigError
from factordiff.training.threads import ThreadGovernor


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


class Machine:
    """Step times by thread count: alone 2 threads are faster, shared 1 thread is."""

    def __init__(self) -> None:
        self.shared = False

    def step(self) -> float:
        one, two = (0.3, 2.0) if self.shared else (0.15, 0.1)
        return one if torch.get_num_threads() == 1 else two


def run(governor: ThreadGovernor, machine: Machine, steps: int) -> list[str]:
    notes = (governor.observe(machine.step()) for _ in range(steps))
    return [n for n in notes if n]


def test_alone_the_full_count_is_kept(two_threads) -> None:
    gov, machine = ThreadGovernor(window=5, probe_every=50), Machine()
    assert run(gov, machine, 200) == []
    assert gov.kept == 2 and gov.threads == 2


def test_started_beside_a_busy_process_it_keeps_one_thread(two_threads) -> None:
    """The collapse is there from the first step: only trying both settings can see it."""
    gov, machine = ThreadGovernor(window=5, probe_every=50), Machine()
    machine.shared = True
    notes = run(gov, machine, 15)  # warm-up, one window at 2, one at 1
    assert gov.kept == 1 and gov.threads == 1
    assert notes == [
        "threads 2 -> 1: 1 thread runs 6.7x faster than 2: another process shares the "
        "cores, and threads that wait for each other collapse; 1 thread costs only the fair "
        "share (train.threads=N fixes the count)"
    ]
    assert run(gov, machine, 200) == [] and gov.kept == 1  # probes find 2 still slower


def test_a_neighbour_arriving_and_leaving_is_followed(two_threads) -> None:
    gov, machine = ThreadGovernor(window=5, probe_every=50), Machine()
    run(gov, machine, 30)
    machine.shared = True
    notes = run(gov, machine, 5)  # the next window at 2 threads is 20x slower: at once
    assert gov.threads == 1 and notes[0].startswith("threads 2 -> 1: steps became 20x slower")
    machine.shared = False
    notes = run(gov, machine, 60)  # the next probe finds 2 threads faster again
    assert gov.kept == 2 and gov.threads == 2
    assert notes == ["threads 1 -> 2: 2 threads run 1.5x faster again: the cores are free"]


def test_a_fixed_count_never_changes(two_threads) -> None:
    machine = Machine()
    machine.shared = True
    gov = ThreadGovernor(3)
    assert gov.threads == 3
    assert run(gov, machine, 100) == [] and gov.threads == 3
    gov.restore()  # the run ends: the process gets its own count back
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    one = ThreadGovernor(0)  # PyTorch's count is 1 (OMP_NUM_THREADS=1): nothing to adapt
    assert run(one, machine, 100) == [] and one.threads == 1
    with pytest.raises(ValueError, match="train.threads must be >= 0"):
        ThreadGovernor(-1)
    with pytest.raises(ConfigError, match="train.threads must be >= 0"):
        load_config("quickstart", ["train.threads=-2"])
