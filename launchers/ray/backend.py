"""The Ray backend: a job's block becomes a placement group, its tasks Ray actors.

The pool is a Ray cluster's raylets, each named as one node of ours by a custom resource
``orch_node:<name>`` it was started with (see :mod:`launchers.ray.cluster`). A job on nodes
``[a, b]`` gets a placement group with one bundle per node, ``{"orch_node:a": 1}``,
``{"orch_node:b": 1}``, strategy ``STRICT_SPREAD``: each bundle can only land on the raylet our
allocator chose. A job that shares its nodes with others (``exclusive`` false, on a cluster whose
preset says ``shared: true``) asks only ``0.001`` of each (``NODE_SHARE``), so many such jobs run
on one raylet at once while its CPUs, GPUs and memory keep them from overcommitting it; a job
with whole nodes asks all of it, so nothing else of ours starts beside it. Each task is one
:class:`~launchers.ray.actor.TaskActor` in its node's bundle, which runs the command as a
subprocess with the same rank variables as the local backend, ``MASTER_ADDR`` and
``MASTER_PORT`` taken on rank 0's node so ``torch.distributed`` meets there.

Resources: a node's bundle also asks for what its tasks take, ``CPU`` (``cpus_per_task`` each),
``GPU`` and ``memory`` (``mem_per_node_mb``, in bytes, split evenly over the node's tasks), and
each task's actor takes its own share (``num_cpus``, ``num_gpus``, ``memory``; see
:func:`launchers.ray.cluster.task_shares`). GPUs asked per task go to each task; GPUs asked per
node (``gpus_per_node`` without ``gpus_per_task``) are split evenly among the node's tasks when
their number divides, else all go to local rank 0. Ray chooses which GPUs an actor gets and sets
its ``CUDA_VISIBLE_DEVICES``; the task sees them as Ray set them, and their ids in ``ORCH_GPUS``
(``ray.get_gpu_ids()``; both empty for a task without GPUs). Our allocator's GPU and core indices
(``node_gpus``, ``node_cpus``) are not used: on Ray, Ray chooses. A job asking more than a
raylet offers in all is refused at once (:class:`~orchestrator.exceptions.BackendError` naming
the raylet and what it lacks); one whose resources are held by others waits ``start_timeout``
for them, then fails the same way.

Ownership and re-attach: the placement group and the actors are *detached* and named after the
daemon's state folder, the job and the attempt, so they outlive the daemon's Ray driver; a
restarted daemon finds them again by the names in the handle, and an actor keeps its task's
exit status until the daemon has read it (:meth:`RayBackend.forget` then frees them).

Output: each task writes ``attempt-N/task-R.out`` and ``.err``, and labelled lines (``R: ...``,
as ``srun --label``) to the job's ``stdout`` and ``stderr``: the actors write these files
themselves, so the state folder must be on a file system every Ray node shares (as with Slurm).

Node death: an actor that died with its node, its task without an exit status, ends the
attempt as :attr:`~orchestrator.backends.Liveness.REQUEUE` (the daemon queues the job again at
once); the dead raylet is reported by :meth:`RayBackend.unavailable_nodes` until it comes back.

Busy nodes: :meth:`RayBackend.unavailable_nodes` also reports a raylet whose ``orch_node:``
resource someone else holds (another daemon's job, or anyone's actor asking for it), even a
share of it: what our allocator may give there it cannot know. It tells that use from our own by
amounts: Ray shows how much of the resource is held in all, and the backend knows how much its
own live jobs hold there (the handles it started or was polled with, and those released in the
last few seconds, whose resource Ray frees a moment later); whatever is held beyond that is
someone else's. A node that runs only jobs of ours stays ours to give (the daemon's allocator
knows what of it is free), as on Slurm.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayError
from ray.util.placement_group import (
    PlacementGroup,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from launchers.ray.actor import TaskActor
from launchers.ray.cluster import (
    MEMORY_RESOURCE,
    RESOURCE_PREFIX,
    RESOURCE_UNIT,
    PoolNode,
    node_bundle,
    node_claim,
    node_resource,
    pool_nodes,
    shortfall,
    task_shares,
)
from orchestrator.backends.contract import Handle, LaunchSpec, Liveness, PollResult, usage_of
from orchestrator.backends.jobfolder import JobFolderBackend, PreparedJob
from orchestrator.backends.options import option, parse_options
from orchestrator.exceptions import BackendError, InvalidRequestError
from orchestrator.nodeside import record
from orchestrator.nodeside.files import atomic_write
from orchestrator.nodeside.rank_env import rank_environment

if TYPE_CHECKING:
    from orchestrator.resources.cluster import Cluster

__all__ = ["RayBackend"]

RemoteTaskActor = ray.remote(TaskActor)


@dataclass(frozen=True)
class RayOptions:
    """``--backend ray`` options (``--backend-opt KEY=VALUE``)."""

    address: str = option(
        "auto", "the Ray cluster to connect to (auto: RAY_ADDRESS or the local one)", "HEAD:6379"
    )
    namespace: str = option("orch", "the Ray namespace of our actors and placement groups", "orch")
    start_timeout: float = option(
        60.0, "seconds a job's placement group and actors may take to start", "60", above=0
    )
    poll_timeout: float = option(
        0.5, "seconds one poll waits for the actors' answers", "0.5", above=0
    )
    inherit_env: bool = option(
        True, "tasks start from the daemon's environment, as sbatch --export=ALL (0: not)", "0"
    )


NAMES_FILE = "ray-names.json"
"""In the attempt's folder: the placement group's and actors' names, written before either
exists, so :meth:`RayBackend.abort_start` knows what to destroy."""
_RELEASE_S = 10.0
"""How long what a job of ours held on its nodes still counts as ours once released, although Ray
may still show it held (a start there waits for the release in ``pg.ready()``)."""
_FOREIGN = RESOURCE_UNIT / 2
"""Held beyond our own claims by more than this (Ray counts in whole units): someone else's."""
_NODES_TTL_S = 0.5
"""How long one read of the node table serves (poll and the scheduling pass of one tick)."""


def _describe(bundle: Mapping[str, float]) -> str:
    """A bundle as text, without the ``orch_node:`` resource that differs between nodes."""
    parts = [
        f"{value / 2**20:g} MB of memory" if key == MEMORY_RESOURCE else f"{value:g} {key}"
        for key, value in bundle.items()
        if not key.startswith(RESOURCE_PREFIX)
    ]
    return ", ".join(parts) or "no CPU, GPU or memory"


def _connect(address: str, namespace: str) -> bool:
    """Join the Ray cluster as a driver, or check the connection this process already has;
    True when this call made the connection."""
    if ray.is_initialized():
        current = ray.get_runtime_context().namespace
        if current != namespace:
            raise InvalidRequestError(
                "backend-opt",
                f"namespace={namespace}",
                f"this process is already connected to Ray in namespace {current!r}",
                f"namespace={current}",
            )
        return False
    try:
        # Never start a Ray instance of our own: the pool is an existing cluster.
        ray.init(
            address=address,
            namespace=namespace,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise InvalidRequestError(
            "backend-opt",
            f"address={address}",
            f"cannot connect to a Ray cluster there ({e})",
            "address=HEAD:6379",
        ) from e
    return True


class RayBackend(JobFolderBackend):
    """Runs jobs as placement groups of Ray actors on a running Ray cluster.

    Args:
        root: The daemon's state folder (jobs' files under ``root/jobs/``; it also names our
            actors, so two daemons can share one Ray cluster).
        cluster: The daemon's cluster: its node names are raylets' ``orch_node:`` names.
        namespace: The Ray namespace this process is connected in.
        start_timeout_s: How long a job's placement group and actors may take to start.
        poll_timeout_s: How long one poll waits for the actors' answers (an actor on a node
            that just died answers only once Ray has noticed the death).
        inherit_env: Start each task from the daemon's environment (else from ``PATH`` only).
    """

    name = "ray"

    def __init__(
        self,
        root: Path,
        cluster: Cluster,
        *,
        namespace: str = "orch",
        start_timeout_s: float = 60.0,
        poll_timeout_s: float = 0.5,
        inherit_env: bool = True,
    ) -> None:
        self.root = Path(root)
        self.cluster = cluster
        self.namespace = namespace
        self.start_timeout_s = start_timeout_s
        self.poll_timeout_s = poll_timeout_s
        self.inherit_env = inherit_env
        self.pool = frozenset(cluster.topology.node_name(i) for i in range(cluster.size))
        # Names carry the state folder: jobs of two daemons on one Ray cluster never collide.
        self.key = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:10]
        self._actors: dict[str, Any] = {}
        self._pending: dict[str, ray.ObjectRef[Any]] = {}
        self._codes: dict[str, int] = {}
        self._nodes: dict[str, PoolNode] = {}
        self._nodes_at = -1.0
        # What our live jobs hold of their nodes' orch_node resource: by placement group name,
        # the nodes and the amount on each (from start(), and from the handles poll() is given,
        # so a restarted daemon knows its re-attached jobs' claims too).
        self._claims: dict[str, tuple[tuple[str, ...], float]] = {}
        # The same for jobs released lately (with the time): Ray reports their resource free
        # only after a moment, and it must not look busy to the scheduling pass that follows.
        self._released: dict[str, tuple[float, tuple[str, ...], float]] = {}
        self.owns_connection = False
        """This backend made the process's Ray connection (and ends it on :meth:`close`)."""

    @classmethod
    def create(cls, root: Path, cluster: Cluster, options: Mapping[str, str]) -> RayBackend:
        """``--backend ray``: connect to the cluster at ``address`` and check that every node
        of the daemon's cluster is a raylet there (see :class:`RayOptions`)."""
        opts = parse_options(RayOptions, options, cls.name)  # all checked before connecting
        connected = _connect(opts.address, opts.namespace)
        backend = cls(
            root,
            cluster,
            namespace=opts.namespace,
            start_timeout_s=opts.start_timeout,
            poll_timeout_s=opts.poll_timeout,
            inherit_env=opts.inherit_env,
        )
        backend.owns_connection = connected
        try:
            backend.check_pool()
        except InvalidRequestError:
            backend.close()
            raise
        return backend

    # -- the pool -----------------------------------------------------------------------------

    def nodes(self, max_age_s: float = _NODES_TTL_S) -> dict[str, PoolNode]:
        """Our raylets by name (one GCS call, reused for ``max_age_s``)."""
        now = time.monotonic()
        if now - self._nodes_at > max_age_s:
            self._nodes = pool_nodes(ray.nodes())  # type: ignore[no-untyped-call]
            self._nodes_at = now
        return self._nodes

    def check_pool(self) -> None:
        """Refuse a daemon cluster naming a node no raylet (live or dead) answers to.

        Raises:
            InvalidRequestError: the cluster names unknown nodes.
        """
        known = self.nodes(0.0)
        missing = sorted(self.pool - set(known))
        if missing:
            raise InvalidRequestError(
                "cluster",
                self.cluster.name,
                f"no raylet of the Ray cluster offers {node_resource(missing[0])} "
                f"({len(missing)} of its nodes are unknown there; raylets: {sorted(known)})",
                "a preset from: python -m launchers.ray.cluster --address HEAD:6379",
            )

    def unavailable_nodes(self) -> frozenset[str]:
        """Pool nodes whose raylet is dead or gone, or whose ``orch_node:`` resource someone
        else holds, even in part (another daemon's job, anyone's actor asking for it).

        What our own jobs hold there (running, or released in the last ``_RELEASE_S``) is not
        counted: a node that runs only jobs of ours, whole or shared, stays ours to give, and
        the daemon's allocator knows what of it is free. A claim of ours this backend has not
        seen (a re-attached job before its first poll, a leftover of a reset state folder)
        counts as someone else's: the node is kept out, the safe side.
        """
        nodes = self.nodes()
        free = ray.available_resources()  # type: ignore[no-untyped-call]
        now = time.monotonic()
        self._released = {
            pg: entry for pg, entry in self._released.items() if now - entry[0] < _RELEASE_S
        }
        ours: dict[str, float] = {}
        claims = [*self._claims.values(), *((n, c) for _, n, c in self._released.values())]
        for held_nodes, claim in claims:
            for name in held_nodes:
                ours[name] = ours.get(name, 0.0) + claim

        def foreign(name: str) -> bool:
            # The resource is 1 in all (Ray leaves out of its table what is all held).
            held = 1.0 - float(free.get(node_resource(name), 0.0))
            return held - ours.get(name, 0.0) > _FOREIGN

        return frozenset(
            name
            for name in self.pool
            if name not in nodes or not nodes[name].alive or foreign(name)
        )

    # -- names --------------------------------------------------------------------------------

    def _pg_name(self, job_id: int, attempt: int) -> str:
        return f"orch-{self.key}-{job_id}-{attempt}"

    def _actor_name(self, job_id: int, attempt: int, rank: int) -> str:
        return f"{self._pg_name(job_id, attempt)}-task{rank}"

    def _actor(self, name: str) -> Any | None:
        """The actor called ``name`` (cached), or None when it no longer exists."""
        actor = self._actors.get(name)
        if actor is None:
            try:
                actor = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                return None
            self._actors[name] = actor
        return actor

    # -- start --------------------------------------------------------------------------------

    def _base_env(self, spec: LaunchSpec) -> dict[str, str]:
        env = dict(os.environ) if self.inherit_env else {"PATH": os.defpath}
        env.update(self.job_environment(spec))
        return env

    def _launch(self, job: PreparedJob) -> Handle:
        spec, paths, attempt_dir, argv = job.spec, job.paths, job.attempt_dir, job.argv
        unknown = [n for n in spec.nodes if n not in self.pool]
        if unknown:
            raise BackendError(f"job {spec.job_id}: nodes {unknown} are not raylets of ours")
        bundles = [node_bundle(n, spec) for n in spec.nodes]
        known = self.nodes()
        for name, bundle in zip(spec.nodes, bundles, strict=True):
            # Never placeable: refused now rather than after start_timeout.
            why = shortfall(known[name], bundle) if name in known else None
            if why is not None:
                raise BackendError(f"job {spec.job_id}: {why}")
        shares = task_shares(spec)
        pg_name = self._pg_name(spec.job_id, spec.attempt)
        tpn = spec.tasks_per_node
        world = len(spec.nodes) * tpn
        actor_names = [self._actor_name(spec.job_id, spec.attempt, r) for r in range(world)]
        # A leftover of the same name can only come from a state folder that was reset.
        self._destroy(pg_name, actor_names, None)
        # Before anything exists: a daemon killed during start() finds what to destroy here.
        atomic_write(attempt_dir / NAMES_FILE, json.dumps({"pg": pg_name, "actors": actor_names}))
        pg = placement_group(
            bundles,
            strategy="STRICT_SPREAD",
            name=pg_name,
            lifetime="detached",
        )
        actors: list[Any] = []
        try:
            try:
                ray.get(pg.ready(), timeout=self.start_timeout_s)
            except GetTimeoutError:
                raise BackendError(
                    f"job {spec.job_id}: Ray did not place its bundles on {list(spec.nodes)} "
                    f"within {self.start_timeout_s:g}s (each asks {_describe(bundles[0])}: a "
                    "raylet is gone, or its orch_node resource or those CPUs, GPUs or memory "
                    "are held by someone else)"
                ) from None
            bundle_nodes = placement_group_table(pg)["bundles_to_node_id"]
            node_ids = [str(bundle_nodes[i]) for i in range(len(spec.nodes))]
            for rank, name in enumerate(actor_names):
                share = shares[rank % tpn]
                actor = RemoteTaskActor.options(
                    name=name,
                    namespace=self.namespace,
                    lifetime="detached",
                    # Its task's share of the bundle: Ray sets CUDA_VISIBLE_DEVICES for its GPUs.
                    num_cpus=share.cpus,
                    num_gpus=share.gpus,
                    memory=share.memory_bytes or None,
                    max_restarts=0,
                    scheduling_strategy=PlacementGroupSchedulingStrategy(
                        pg, placement_group_bundle_index=rank // tpn
                    ),
                ).remote(str(attempt_dir), str(paths.stdout), str(paths.stderr), rank, world > 1)
                actors.append(actor)
                self._actors[name] = actor
            master_addr, master_port = ray.get(
                actors[0].endpoint.remote(), timeout=self.start_timeout_s
            )
            base = self._base_env(spec)
            base.update({"MASTER_ADDR": str(master_addr), "MASTER_PORT": str(master_port)})
            cwd = job.cwd
            starts = []
            for rank, actor in enumerate(actors):
                node_rank, local_rank = divmod(rank, tpn)
                env = dict(base)
                env.update(rank_environment(spec.nodes, tpn, node_rank, local_rank))
                starts.append(actor.start.remote(argv, env, cwd))
            ray.get(starts, timeout=self.start_timeout_s)
        except (RayError, BackendError) as e:
            self._destroy(pg_name, actor_names, pg)
            if isinstance(e, BackendError):
                raise
            raise BackendError(f"job {spec.job_id}: Ray could not start its tasks: {e}") from e
        claim = node_claim(spec)
        self._claims[pg_name] = (tuple(spec.nodes), claim)
        return {
            "attempt": spec.attempt,
            "dir": str(attempt_dir),
            "pg": pg.id.hex(),
            "pg_name": pg_name,
            "actors": actor_names,
            "nodes": list(spec.nodes),
            "node_ids": node_ids,
            "claim": claim,
        }

    @staticmethod
    def _claim_of(handle: Handle) -> tuple[tuple[str, ...], float]:
        """The nodes a job's handle holds and how much of each (1 for a handle written before
        jobs could share nodes: they all asked the whole node)."""
        return tuple(handle["nodes"]), float(handle.get("claim", 1.0))

    # -- poll ---------------------------------------------------------------------------------

    def poll(self, handles: Mapping[int, Handle]) -> dict[int, PollResult]:
        # One status call per task not known to have ended, all awaited together; a call that
        # does not answer in time is asked again at the next tick (not sent twice).
        gone: set[str] = set()
        for handle in handles.values():
            # A job of ours holds its nodes until forget(), however it runs.
            self._claims.setdefault(handle["pg_name"], self._claim_of(handle))
            for name in handle["actors"]:
                if name in self._codes or name in self._pending:
                    continue
                actor = self._actor(name)
                if actor is None:
                    gone.add(name)
                else:
                    self._pending[name] = actor.status.remote()
        waiting = {ref: name for name, ref in self._pending.items()}
        if waiting:
            ready, _ = ray.wait(
                list(waiting), num_returns=len(waiting), timeout=self.poll_timeout_s
            )
            for ref in ready:
                name = waiting[ref]
                del self._pending[name]
                try:
                    code = ray.get(ref, timeout=0)
                except ActorUnavailableError:
                    continue  # unreachable for now (Ray retries it): ask again next tick
                except RayActorError:
                    self._actors.pop(name, None)
                    gone.add(name)
                    continue
                if code is not None:
                    self._codes[name] = int(code)
        return {job_id: self._result(handle, gone) for job_id, handle in handles.items()}

    def _result(self, handle: Handle, gone: set[str]) -> PollResult:
        attempt_dir = Path(handle["dir"])
        codes: list[int | None] = []
        alive = vanished = 0
        for rank, name in enumerate(handle["actors"]):
            code = self._codes.get(name)
            if code is None and name in gone:
                # The actor is gone: its status file may still tell how the task ended.
                end = record.read_task_end(attempt_dir, rank)
                code = end.code if end is not None else None
                if code is None:
                    vanished += 1
                else:
                    self._codes[name] = code
            elif code is None:
                alive += 1
            codes.append(code)
        if not vanished and alive:
            return PollResult(Liveness.RUNNING, tuple(codes), alive)
        # Ended: what each task used is in its record (the actors answer with the status only).
        usage = usage_of(self.task_ends(attempt_dir, len(codes)))
        if vanished:
            # A node that died under the job is no fault of the job: run it again elsewhere.
            nodes = self.nodes(0.0)
            live_ids = {n.node_id for n in nodes.values() if n.alive}
            node_died = any(i not in live_ids for i in handle["node_ids"])
            liveness = Liveness.REQUEUE if node_died else Liveness.LOST
            return PollResult(liveness, tuple(codes), alive, usage)
        return PollResult(Liveness.EXITED, tuple(codes), 0, usage)

    # -- signal, forget, abort ----------------------------------------------------------------

    def signal(self, handle: Handle, signum: int) -> None:
        for name in handle["actors"]:
            if name in self._codes:
                continue
            actor = self._actor(name)
            if actor is not None:
                # Fire and forget: the next poll tells whether the task ended.
                actor.signal.remote(signum)

    def forget(self, handle: Handle) -> None:
        pg = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(handle["pg"])))
        self._destroy(handle["pg_name"], handle["actors"], pg)
        nodes, claim = self._claim_of(handle)
        self._released[handle["pg_name"]] = (time.monotonic(), nodes, claim)

    def _abort_launch(self, job_id: int, attempt: int, attempt_dir: Path) -> None:
        try:
            names = json.loads((attempt_dir / NAMES_FILE).read_text())
        except (OSError, ValueError):
            return  # start() wrote nothing: it created nothing either
        self._destroy(names["pg"], names["actors"], None)

    def _destroy(self, pg_name: str, actor_names: Sequence[str], pg: PlacementGroup | None) -> None:
        """Kill the tasks (their whole sessions), the actors and the placement group."""
        self._claims.pop(pg_name, None)
        actors = [(name, self._actor(name)) for name in actor_names]
        kills = [
            a.signal.remote(signal.SIGKILL)
            for name, a in actors
            if a is not None and name not in self._codes
        ]
        if kills:
            # The sessions first: killing an actor takes only its direct child with it.
            with contextlib.suppress(RayError):
                ray.wait(kills, num_returns=len(kills), timeout=2.0)
        for name, actor in actors:
            if actor is not None:
                with contextlib.suppress(RayError, ValueError):
                    ray.kill(actor, no_restart=True)
            self._actors.pop(name, None)
            self._pending.pop(name, None)
            self._codes.pop(name, None)
        if pg is None:
            try:
                pg = get_placement_group(pg_name)
            except ValueError:
                return
        with contextlib.suppress(RayError, ValueError):
            remove_placement_group(pg)

    def close(self) -> None:
        """Running jobs keep running (their actors and placement groups are detached); the
        driver's connection ends if this backend made it."""
        self._actors.clear()
        self._pending.clear()
        if self.owns_connection and ray.is_initialized():
            ray.shutdown()
        self.owns_connection = False
