"""The training-job tests: one thread per process. Their real MLflow server is the session's
``mlflow_server`` (tests/mlflow_server_session.py)."""

from __future__ import annotations

import torch

# Two shared cores: with two OpenMP threads, a kernel waits at a barrier for a core that another
# process holds (im2col was seen going from 1 s to 96 s). One thread keeps timings sane.
torch.set_num_threads(1)
