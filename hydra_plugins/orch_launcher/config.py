"""Config of ``hydra/launcher=orch``, registered in Hydra's ConfigStore.

Hydra imports every module under ``hydra_plugins`` when any Hydra app starts, so this module
imports nothing heavier than Hydra's ConfigStore.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class SchedulerConf:
    """Where the scheduler runs.

    Attributes:
        mode: ``embedded`` (an in-process daemon with the local backend; needs no daemon) or
            ``daemon`` (a running ``orch daemon``, reached at ``url`` or through ``state_dir``).
        url: The daemon's URL (``http://127.0.0.1:PORT``); None: read ``state_dir``/daemon.json.
        token: The daemon's token; None: read ``state_dir``/token.
        state_dir: The daemon's state folder (None: ``$ORCH_STATE_DIR`` or ``~/.orch``); in
            embedded mode, where the in-process daemon keeps its store and job folders (None: a
            folder ``.orch`` inside the sweep directory).
    """

    mode: str = "embedded"
    url: str | None = None
    token: str | None = None
    state_dir: str | None = None


@dataclass
class OrchLauncherConf:
    """Resources of each job and how the sweep waits for them.

    Attributes:
        cluster: Cluster preset (``conf/cluster/``) or YAML path of the embedded scheduler
            (ignored with a daemon: the daemon schedules its own cluster).
        nodes: Nodes per job (or give ``shape``); may follow a key swept per job
            (``+nodes=1,2 'hydra.launcher.nodes=${nodes}'``), as may any field.
        shape: PJM-style shape on a torus cluster (``2x2x2:torus``).
        tasks_per_node: Processes per node (data-parallel ranks).
        cpus_per_task: CPUs per task.
        gpus_per_task: GPUs per task; on a cluster that shares nodes (``local-gpu``, ``abci3``)
            trials are packed onto nodes and each task sees only its GPUs.
        gpus_per_node: GPUs per node, shared by the node's tasks.
        mem: Memory per node: MB, or with a unit (``4G``); None: a share of the node in
            proportion to the cores asked.
        partition: Node group (partition) of the cluster; None: its default.
        exclusive: Whole nodes for each trial on a cluster that shares nodes.
        time: Walltime limit, seconds or ``[d-]h:m:s``; None: no limit.
        priority: Priority under multifactor ordering.
        retries: Requeues of a failed attempt.
        name: Job name in the scheduler.
        detach: With a daemon: return right after submission (follow with ``orch sweep``).
        poll_s: How often the sweep asks whether jobs ended.
        env: Extra environment variables of every job.
        fork_server: Start each trial forked from a per-sweep server that has imported Hydra
            and the app once (about 0.2 s of CPU less per trial); the scheduler still starts,
            signals and tracks every trial as its own job. A trial that cannot reach the server
            (another host) runs in a fresh interpreter. Not used with ``detach``.
        scheduler: Where the scheduler runs.
    """

    # Checks (and lets follow a swept key) the fields before Hydra builds the launcher.
    defaults: list[Any] = field(
        default_factory=lambda: [
            {"/hydra/callbacks@_global_.hydra.callbacks.orch_launcher": "orch_launcher"},
            "_self_",
        ]
    )
    _target_: str = "hydra_plugins.orch_launcher.orch_launcher.OrchLauncher"
    cluster: str | None = "local"
    nodes: int | None = 1
    shape: str | None = None
    tasks_per_node: int = 1
    cpus_per_task: int = 1
    gpus_per_task: int = 0
    gpus_per_node: int = 0
    mem: Any = None
    partition: str | None = None
    exclusive: bool = False
    time: Any = None
    priority: int = 0
    retries: int = 0
    name: str = "${hydra.job.name}"
    detach: bool = False
    poll_s: float = 0.05
    env: dict[str, str] = field(default_factory=dict)
    fork_server: bool = True
    scheduler: SchedulerConf = field(default_factory=SchedulerConf)


@dataclass
class LauncherFieldsCheckConf:
    """The callback that resolves ``hydra.launcher`` before Hydra builds the launcher."""

    _target_: str = "hydra_plugins.orch_launcher.orch_launcher.LauncherFieldsCheck"


ConfigStore.instance().store(
    group="hydra/launcher", name="orch", node=OrchLauncherConf, provider="orch_launcher"
)
ConfigStore.instance().store(
    group="hydra/callbacks",
    name="orch_launcher",
    node=LauncherFieldsCheckConf,
    provider="orch_launcher",
)
