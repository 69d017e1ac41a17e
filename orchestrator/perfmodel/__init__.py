"""A training-performance model: step time of data-parallel SGD and K-FAC on N nodes.

Compute from a single-node profile measured here (``calibrate.py``, from runs in MLflow), plus
an alpha-beta model of the all-reduce for the preset's topology (``collectives.py``), plus
K-FAC's factor all-reduce and inverses spread over the ranks (``model.py``). ``orch predict``
prints its predictions to tens of thousands of nodes beside the points measured here.
"""

from __future__ import annotations

from orchestrator.perfmodel.calibrate import RunPoint, calibrate, load_points, model_preset_of
from orchestrator.perfmodel.collectives import (
    Link,
    allreduce_time,
    broadcast_time,
    halving_doubling_allreduce,
    ring_allreduce,
    torus_allreduce,
    torus_shape,
)
from orchestrator.perfmodel.machine import (
    DEFAULT_PROFILE,
    NETWORKS,
    Network,
    Profile,
    network_for,
)
from orchestrator.perfmodel.model import (
    KfacSchedule,
    StepPrediction,
    efficiency,
    inverse_load,
    predict_step,
)
from orchestrator.perfmodel.workloads import MODELS, LayerShape, ModelSpec, get_model, resnet50

__all__ = [
    "DEFAULT_PROFILE",
    "MODELS",
    "NETWORKS",
    "KfacSchedule",
    "LayerShape",
    "Link",
    "ModelSpec",
    "Network",
    "Profile",
    "RunPoint",
    "StepPrediction",
    "allreduce_time",
    "broadcast_time",
    "calibrate",
    "efficiency",
    "get_model",
    "halving_doubling_allreduce",
    "inverse_load",
    "load_points",
    "model_preset_of",
    "network_for",
    "predict_step",
    "resnet50",
    "ring_allreduce",
    "torus_allreduce",
    "torus_shape",
]
