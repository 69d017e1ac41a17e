"""Generate ``orchestrator/perfmodel/_conf_models.py``: the layer shapes of the ``conf/model``
models on the ``conf/data`` inputs, read from the real torch modules.

    python tests/reports/model_presets_gen.py        # rewrite the table

The performance model imports no torch, so the shapes are recorded here once;
``test_perfmodel.py`` rebuilds them and fails, with this command in its message, when a model
in ``sweeps/models.py`` changes.
"""

from __future__ import annotations

import pprint
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sweeps.config import compose
from sweeps.models import build_model

TARGET = Path(__file__).resolve().parents[2] / "orchestrator" / "perfmodel" / "_conf_models.py"
#: Input shape (C, H, W) and classes of each dataset, as sweeps/data.py delivers them.
INPUTS: dict[str, tuple[tuple[int, int, int], int]] = {
    "digits": ((1, 8, 8), 10),
    "mnist5k": ((1, 28, 28), 10),
    "mnist1d": ((1, 1, 40), 10),
}
PAIRS = [(m, d) for m in ("mlp", "cnn", "resnet", "param") for d in INPUTS]


def layer_table(model_name: str, data: str) -> dict[str, Any]:
    """The Linear/Conv2d shapes of one conf model on one dataset, from a forward pass."""
    shape, classes = INPUTS[data]
    cfg = compose([f"model={model_name}"])
    torch.manual_seed(0)
    model = build_model(cfg["model"], shape, classes)
    rows: list[list[Any]] = []
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear | nn.Conv2d):

            def hook(m: nn.Module, _i: Any, out: torch.Tensor, name: str = name) -> None:
                if isinstance(m, nn.Linear):
                    rows.append([name, m.in_features, m.out_features, 1, m.bias is not None])
                else:
                    assert isinstance(m, nn.Conv2d)
                    kh, kw = m.kernel_size
                    fan_in = m.in_channels // m.groups * kh * kw
                    pos = int(out.shape[-1] * out.shape[-2])
                    rows.append([name, fan_in, m.out_channels, pos, m.bias is not None])

            hooks.append(mod.register_forward_hook(hook))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    total = sum(p.numel() for p in model.parameters())
    in_layers = sum(o * (i + int(b)) for _, i, o, _, b in rows)
    return {
        "layers": rows,
        "extra_params": total - in_layers,
        "description": f"conf/model/{model_name}.yaml on data={data} (input {shape})",
    }


def build_table() -> dict[str, dict[str, Any]]:
    """Every preset, keyed ``<model>-<data>``."""
    return {f"{m}-{d}": layer_table(m, d) for m, d in PAIRS}


def render(table: dict[str, dict[str, Any]]) -> str:
    """The module's source text."""
    body = pprint.pformat(table, width=99, sort_dicts=True)
    return (
        '"""Layer shapes of the conf/model models on the conf/data inputs '
        "(generated: do not edit).\n\n"
        "Regenerate with ``python tests/reports/model_presets_gen.py``; each layer is\n"
        "``[name, fan_in, fan_out, positions, bias]``.\n"
        '"""\n\n'
        f"CONF_MODELS: dict[str, dict[str, object]] = {body}\n"
    )


if __name__ == "__main__":
    TARGET.write_text(render(build_table()))
    print(f"wrote {TARGET}")
