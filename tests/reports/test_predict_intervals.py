"""`orch predict`'s K-FAC intervals: the defaults are `conf/optimizer/kfac.yaml`'s (no published
interval was read from Osawa et al.'s text, docs/reports.md), and the options override them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import yaml
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.cli.report import predict
from orchestrator.perfmodel import KfacSchedule

ROOT = Path(__file__).resolve().parents[2]


def _option_default(name: str) -> Any:
    (param,) = [p for p in predict.params if isinstance(p, click.Option) and p.name == name]
    return param.default


def test_defaults_are_the_training_config() -> None:
    kfac = yaml.safe_load((ROOT / "conf/optimizer/kfac.yaml").read_text())["kfac"]
    schedule = KfacSchedule()
    for name in ("factor_interval", "inverse_interval"):
        assert _option_default(name) == kfac[name] == getattr(schedule, name), name


def _kfac_rows(*extra: str) -> list[dict[str, Any]]:
    args = ["predict", "--model", "resnet50", "--cluster", "fugaku", "--batch-per-node", "32"]
    args += ["--nodes", "1,1024", "--optimizer", "kfac", "--no-calibrate", "--format", "json"]
    result = CliRunner().invoke(main, [*args, *extra])
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.output)["rows"]
    return rows


def test_options_override_the_defaults() -> None:
    default = _kfac_rows()
    explicit = _kfac_rows("--factor-interval", "1", "--inverse-interval", "10")
    sparse = _kfac_rows("--factor-interval", "10", "--inverse-interval", "100")
    assert [r["step_ms"] for r in default] == [r["step_ms"] for r in explicit]
    for d, s in zip(default, sparse, strict=True):
        assert s["kfac_ms"] < d["kfac_ms"]
        assert s["step_ms"] < d["step_ms"]
