"""The launcher takes the configs the sweeper's batch check composed instead of composing them
again, and only those: nothing kept from other callers, nothing reused across master configs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.orch_launcher._compose_once import ComposedOnce


class CountingLoader:
    """Stands in for Hydra's config loader: each composition is a new config, counted."""

    def __init__(self) -> None:
        self.composed: list[tuple[str, ...]] = []

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> Any:
        self.composed.append(tuple(sweep_overrides))
        return OmegaConf.create({"overrides": list(sweep_overrides), "n": len(self.composed)})


class CheckingSweeper(Sweeper):
    """Hydra's own batch check (``Sweeper.validate_batch_is_legal``), nothing else."""

    def __init__(self, loader: CountingLoader, config: DictConfig) -> None:
        self.hydra_context = HydraContext(config_loader=loader, callbacks=None)  # type: ignore[arg-type]
        self.config = config

    def setup(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    def sweep(self, arguments: list[str]) -> Any:
        raise NotImplementedError


def batch(n: int) -> Sequence[Sequence[str]]:
    return [[f"+x={i}"] for i in range(n)]


def test_the_checked_batch_is_composed_once() -> None:
    loader, master = CountingLoader(), OmegaConf.create({})
    memo = ComposedOnce.install(loader)
    CheckingSweeper(loader, master).validate_batch_is_legal(batch(3))
    assert len(loader.composed) == 3 and len(memo) == 3
    taken = [memo.take(master, ["+x=0"]), memo.take(master, ["+x=1"]), memo.take(master, ["+x=2"])]
    assert [c.overrides for c in taken] == [["+x=0"], ["+x=1"], ["+x=2"]]
    assert len(loader.composed) == 3, "a checked job was composed again"
    assert len(memo) == 0, "a taken config is still held"
    # Taken once: the same job launched again (a retry) gets a fresh composition.
    again = memo.take(master, ["+x=1"])
    assert loader.composed[-1] == ("+x=1",) and len(loader.composed) == 4
    assert again is not taken[1]


def test_other_callers_results_are_not_kept() -> None:
    loader, master = CountingLoader(), OmegaConf.create({})
    memo = ComposedOnce.install(loader)
    mine = loader.load_sweep_config(master, ["+x=0"])  # e.g. a sweeper that edits its result
    assert len(memo) == 0
    assert memo.take(master, ["+x=0"]) is not mine and len(loader.composed) == 2


def test_a_composition_is_reused_only_for_its_master_config() -> None:
    loader = CountingLoader()
    memo = ComposedOnce.install(loader)
    first, second = OmegaConf.create({"a": 1}), OmegaConf.create({"a": 2})
    CheckingSweeper(loader, first).validate_batch_is_legal(batch(1))
    memo.take(second, ["+x=0"])
    assert len(loader.composed) == 2


def test_at_most_limit_compositions_are_held() -> None:
    loader, master = CountingLoader(), OmegaConf.create({})
    memo = ComposedOnce.install(loader, limit=2)
    CheckingSweeper(loader, master).validate_batch_is_legal(batch(5))
    assert len(memo) == 2
    for overrides in batch(5):
        memo.take(master, list(overrides))
    # The first two were kept; the other three composed again.
    assert len(loader.composed) == 5 + 3


def test_installing_twice_keeps_one_memo() -> None:
    loader = CountingLoader()
    assert ComposedOnce.install(loader) is ComposedOnce.install(loader)
    CheckingSweeper(loader, OmegaConf.create({})).validate_batch_is_legal(batch(2))
    assert len(loader.composed) == 2
