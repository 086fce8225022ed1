"""Connecting to a Ray cluster (or starting a local one) and sizing the actor pool.

Every function here needs the optional ``ray`` extra (``pip install "persam[ray]"``); without it
they raise :class:`~persam.errors.InputError` with the install command.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from persam.errors import InputError

# A local cluster shares its machine with whatever else runs there: a small object store is enough
# for images in flight, and the dashboard would only cost memory and a port.
LOCAL_OBJECT_STORE_BYTES = 300 * 1024**2


def import_ray() -> Any:
    """The ``ray`` module, or a one-line :class:`InputError` naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError('--engine ray needs Ray Data: pip install "persam[ray]"') from None
    return ray


@dataclass(kw_only=True)
class RayOptions:
    """Where and how wide a Ray job runs.

    Attributes:
        address: a running cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); None starts
            a local cluster for this call and stops it at the end.
        actors: model replicas (each builds the model once and segments many images).
        gpus_per_actor: GPU share of each actor (0: CPU only; 0.5 puts two actors on one GPU).
        cpus_per_actor: CPU share of each actor; None leaves a CPU free for reading and writing
            tasks (on a 2-CPU node, two actors get half a CPU each).
        num_cpus: CPUs of a local cluster (None: all of this machine's).
        progress: Ray Data's progress bars.
    """

    address: str | None = None
    actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float | None = None
    num_cpus: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise InputError(f"--actors: expected a positive number, got {self.actors}")
        if self.gpus_per_actor < 0:
            raise InputError(f"--gpus-per-actor: expected a number >= 0, got {self.gpus_per_actor}")
        if self.cpus_per_actor is not None and self.cpus_per_actor <= 0:
            raise InputError(f"cpus_per_actor: expected a positive number, got {self.cpus_per_actor}")


@dataclass(kw_only=True)
class Session:
    """A connected Ray session: the seconds it took to start and the actor resources chosen."""

    startup_seconds: float
    cpus_per_actor: float
    torch_threads: int
    started_here: bool


def actor_cpus(options: RayOptions, cluster_cpus: float) -> float:
    """The CPU share of one actor: as asked, else what leaves one CPU (or a quarter of the cluster,
    if less) to Ray Data's read and write tasks, at most one CPU and at least a tenth."""
    if options.cpus_per_actor is not None:
        return options.cpus_per_actor
    if options.gpus_per_actor > 0:
        return 1.0
    spare = min(1.0, cluster_cpus / 4) if cluster_cpus > 1 else cluster_cpus / 2
    share = (cluster_cpus - spare) / options.actors
    return round(max(0.1, min(1.0, share)), 2)


@contextmanager
def ray_session(options: RayOptions) -> Iterator[Session]:
    """Connects to ``options.address`` or starts a local cluster; always disconnects at the end
    (and stops a cluster it started)."""
    ray = import_ray()
    t0 = time.perf_counter()
    started_here = False
    if not ray.is_initialized():
        if options.address is None:
            kwargs: dict[str, Any] = {
                "num_cpus": options.num_cpus,
                "object_store_memory": LOCAL_OBJECT_STORE_BYTES,
                "include_dashboard": False,
                "_node_ip_address": "127.0.0.1",  # a cluster for this command only: loopback
            }
        else:  # a running cluster has its own resources, which ray.init refuses to be told
            kwargs = {"address": options.address}
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = options.address or "a local cluster"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"--ray-address {where}: cannot connect ({first})") from None
        started_here = True
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = options.progress
    ctx.print_on_execution_start = options.progress
    cpus = actor_cpus(options, float(ray.cluster_resources().get("CPU", 1.0)))
    session = Session(
        startup_seconds=time.perf_counter() - t0,
        cpus_per_actor=cpus,
        torch_threads=max(1, int(cpus)),
        started_here=started_here,
    )
    try:
        yield session
    finally:
        if started_here:
            ray.shutdown()


def actor_pool_args(options: RayOptions, session: Session) -> dict[str, Any]:
    """``map_batches`` arguments of the model actors: a fixed pool and the resources of each.

    A lost actor is replaced and its batch run again by Ray Data's own defaults for actor pools
    (``max_restarts=-1``, ``max_task_retries=-1``); outputs are written atomically, so a batch run
    twice leaves the same files.
    """
    ray = import_ray()
    args: dict[str, Any] = {
        "compute": ray.data.ActorPoolStrategy(size=options.actors),
        "num_cpus": session.cpus_per_actor,
    }
    if options.gpus_per_actor > 0:
        args["num_gpus"] = options.gpus_per_actor
    return args
