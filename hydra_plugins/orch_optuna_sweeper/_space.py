"""Search spaces written in Hydra's override grammar, as Optuna distributions.

``choice(a,b,c)`` or ``a,b,c``: categorical; ``range(lo,hi[,step])``: integers (hi excluded,
as Hydra's range) or a categorical of floats; ``interval(lo,hi)``: uniform, integer when both
ends are integers; ``tag(log, interval(lo,hi))``: log-uniform. Anything else is a fixed override
passed to every trial unchanged.

Categorical choices that Optuna cannot store (lists, dicts) are kept as their override text.
The ``grid`` sampler enumerates ``choice`` and ``range`` parameters (:meth:`SearchSpace.grid`);
an ``interval`` has no grid points and is refused there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from orchestrator.trial import SweepConfigError

__all__ = ["SearchSpace", "parse_space"]

_PRIMITIVE = (str, int, float, bool, type(None))


@dataclass
class SearchSpace:
    """What the sampler chooses (``distributions``, keyed by the override's key) and what is
    fixed (``fixed``: override strings)."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    """Per parameter, the key element as written (``+model.depth`` keeps its ``+``)."""
    intervals: dict[str, str] = field(default_factory=dict)
    """The parameters written as ``interval(...)``, with their text (no grid points)."""

    def grid(self) -> dict[str, list[Any]]:
        """Every parameter's values, for Optuna's grid sampler.

        Raises:
            SweepConfigError: an ``interval`` parameter (names it).
        """
        out: dict[str, list[Any]] = {}
        for name, dist in self.distributions.items():
            if name in self.intervals or not isinstance(
                dist, CategoricalDistribution | IntDistribution
            ):
                raise SweepConfigError(
                    f"hydra.sweeper.params.{name}",
                    self.intervals.get(name, str(dist)),
                    "the grid sampler enumerates choice(...) and range(...) only: an interval "
                    "has no grid points (list them, or use sampler.name=tpe or random)",
                    "choice(1e-3, 1e-2, 1e-1)",
                )
            if isinstance(dist, CategoricalDistribution):
                out[name] = list(dist.choices)
            else:
                out[name] = list(range(dist.low, dist.high + 1, dist.step))
        return out

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The overrides of one trial: the fixed ones, then each sampled parameter."""
        out = list(self.fixed)
        for name, value in params.items():
            out.append(f"{self.keys.get(name, name)}={_format(value)}")
        return out


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _distribution(override: Override) -> BaseDistribution:
    value = override.value()
    key = override.get_key_element()
    if isinstance(value, ChoiceSweep):
        choices: list[Any] = list(value.list)
        if not all(isinstance(c, _PRIMITIVE) for c in choices):
            choices = list(override.sweep_string_iterator())
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        assert value.start is not None and value.stop is not None
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            last = list(value.range())[-1]
            return IntDistribution(int(value.start), int(last), step=int(value.step))
        floats: list[Any] = list(override.sweep_iterator())
        return CategoricalDistribution(floats)
    if isinstance(value, IntervalSweep):
        assert value.start is not None and value.end is not None
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(int(value.start), int(value.end), log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise SweepConfigError(
        f"hydra.sweeper.params.{key}",
        override.get_value_element_as_str(),
        "expected choice(...), range(...), interval(...) or tag(log, interval(...))",
        "tag(log, interval(1e-3, 1.0))",
    )


def parse_space(params: Mapping[str, str], arguments: Iterable[str] = ()) -> SearchSpace:
    """The search space of ``hydra.sweeper.params`` plus the command line's overrides.

    A command-line sweep (``optimizer=sgd,kfac``) joins the space; a command-line value of a
    key that ``params`` searches replaces that dimension by the fixed value.

    Raises:
        SweepConfigError: a sweep form Optuna cannot sample (names the parameter).
    """
    parser = OverridesParser.create()
    lines = [f"{k}={v}" for k, v in params.items()]
    overrides = parser.parse_overrides(lines) + parser.parse_overrides(list(arguments))
    space = SearchSpace()
    by_key: dict[str, Override] = {}
    for o in overrides:
        by_key[o.get_key_element().lstrip("+~")] = o  # later (the command line) wins
    for name, o in by_key.items():
        if o.is_sweep_override():
            space.distributions[name] = _distribution(o)
            space.keys[name] = o.get_key_element()
            if isinstance(o.value(), IntervalSweep):
                space.intervals[name] = str(o.input_line).partition("=")[2]
        else:
            assert o.input_line is not None
            space.fixed.append(o.input_line)
    return space
