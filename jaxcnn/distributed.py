"""Data parallelism on JAX's own SPMD machinery: a 1-D device mesh, sharded batches, replicated state.

The model is data-parallel over a :class:`jax.sharding.Mesh` with one axis, ``"data"``
(:data:`DATA_AXIS`). Every batch is a *global* ``jax.Array`` split along its leading axis into equal
contiguous blocks, one per device (``NamedSharding(mesh, P("data"))``); parameters, batch-norm
statistics and optimizer state are replicated on every device (``NamedSharding(mesh, P())``). A step
jitted with those shardings (``jaxcnn.train.make_train_step(..., mesh=mesh)``) computes the gradient of
the mean loss over the global batch; XLA's SPMD partitioner inserts the all-reduce of the gradient, and
reductions over the batch axis (the loss's mean, batch-norm's mean and variance) become all-reduces
too, so batch norm normalises with the statistics of the *global* batch and the updated parameters are
the ones a single device would compute on the whole batch (up to float rounding of the reduction order).

Several processes (one per host; :func:`initialize` wraps ``jax.distributed.initialize``) form one
mesh over all their devices, ordered by process, so process ``p`` owns a contiguous block of every
global batch (:func:`process_batch_slice`). Each process passes only its own rows to :func:`shard_batch`,
which assembles the global array with ``jax.make_array_from_process_local_data``; nothing is gathered
to one host.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .errors import ConfigError, ConfigTypeError
from .ops._validate import as_int, as_positive_int, is_int

__all__ = [
    "DATA_AXIS",
    "initialize",
    "make_mesh",
    "check_mesh",
    "data_sharding",
    "replicated_sharding",
    "process_batch_slice",
    "shard_batch",
    "replicate",
    "local_copy",
    "sync",
]

DATA_AXIS = "data"


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> None:
    """Join a multi-process JAX run: ``jax.distributed.initialize(coordinator, num_processes, process_id)``.

    Must run before any JAX computation in the process. ``coordinator`` is ``"HOST:PORT"`` of process
    0 (every process passes the same one); ``num_processes`` the number of processes (one per host, as
    a rule); ``process_id`` this process's index in ``[0, num_processes)``. With all three ``None``,
    JAX detects them from the cluster environment (TPU pods, GKE, SLURM, Open MPI).

    The CPU backend's cross-process collectives are switched to Gloo
    (``jax_cpu_collectives_implementation="gloo"``) first: without it a multi-process run on CPUs has no
    all-reduce. The setting only concerns the CPU backend; GPUs and TPUs use their own (NCCL, ICI).
    """
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ConfigError(
            "coordinator, num_processes and process_id go together (or all None to auto-detect), got "
            f"coordinator={coordinator!r}, num_processes={num_processes!r}, process_id={process_id!r}"
        )
    if coordinator is not None:
        host, sep, port = coordinator.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"coordinator must be HOST:PORT, got {coordinator!r}")
        num_processes = as_positive_int(num_processes, "num_processes")
        if as_int(process_id, "process_id") not in range(num_processes):
            raise ConfigError(f"process_id must be in [0, {num_processes}), got {process_id!r}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)


def make_mesh(devices: int | Sequence[jax.Device] | None = None, *, arg: str = "devices") -> Mesh:
    """A 1-D mesh with axis ``"data"``.

    ``devices``: ``None`` for every device of every process (``jax.devices()``); an int ``n`` for the
    first ``n`` local devices of each process (in a single process: ``jax.local_devices()[:n]``); or an
    explicit sequence of devices. Devices are ordered by (process index, device id), so each process
    owns one contiguous block of the mesh, and with it of every batch. ``arg``: the name errors give
    ``devices`` (the CLI's ``--devices``).
    """
    if devices is None:
        chosen = list(jax.devices())
    elif isinstance(devices, Sequence) and not isinstance(devices, str):
        chosen = list(devices)
        if not chosen or not all(isinstance(d, jax.Device) for d in chosen):
            raise ConfigError(
                f"devices must be None, a positive int or a non-empty sequence of devices, got {devices!r}"
            )
        if len(set(chosen)) != len(chosen):
            raise ConfigError(f"devices must not repeat a device, got {devices!r}")
    else:
        if not is_int(devices):
            raise ConfigTypeError(f"devices must be None, a positive int or a sequence of devices, got {devices!r}")
        n, local = operator.index(devices), jax.local_device_count()
        if n < 1:
            raise ConfigError(f"{arg} must be a positive int, got {n}")
        if n > local:
            raise ConfigError(f"{arg} must be at most {local} (the local devices of this process), got {n}")
        per_process: dict[int, list[jax.Device]] = {}
        for d in sorted(jax.devices(), key=lambda d: (d.process_index, d.id)):
            per_process.setdefault(d.process_index, []).append(d)
        chosen = [d for p in sorted(per_process) for d in per_process[p][:n]]
    chosen.sort(key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(chosen, dtype=object), (DATA_AXIS,))


def check_mesh(mesh: Mesh, batch_size: int) -> Mesh:
    """``mesh`` if it is a 1-D mesh with axis ``"data"`` whose devices split ``batch_size`` evenly, with this
    process's devices contiguous in it (:func:`process_batch_slice`); else a ``ConfigError`` naming both."""
    if not isinstance(mesh, Mesh) or mesh.axis_names != (DATA_AXIS,):
        raise ConfigError(f"mesh must be 1-D with axis {DATA_AXIS!r}, got axes {getattr(mesh, 'axis_names', mesh)}")
    process_batch_slice(batch_size, mesh)
    return mesh


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh's ``"data"`` axis, the rest whole: ``NamedSharding(mesh, P("data"))``."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh: ``NamedSharding(mesh, P())``."""
    return NamedSharding(mesh, P())


def _local_positions(mesh: Mesh) -> list[int]:
    me = jax.process_index()
    return [i for i, d in enumerate(mesh.devices.flat) if d.process_index == me]


def _check_divisible(batch_size: int, mesh: Mesh) -> None:
    if batch_size % mesh.size:
        raise ConfigError(
            f"batch size {batch_size} is not divisible by the number of devices {mesh.size}; "
            f"use a multiple of {mesh.size} or fewer devices"
        )


def process_batch_slice(global_batch_size: int, mesh: Mesh) -> slice:
    """The rows of a global batch that this process feeds: one contiguous block.

    With ``k`` devices and a global batch of ``B`` rows, mesh position ``i`` holds rows
    ``[i B/k, (i+1) B/k)``; this process's devices occupy consecutive positions (see :func:`make_mesh`),
    so its rows are the union of their blocks. ``B`` must be divisible by ``k``.
    """
    _check_divisible(global_batch_size, mesh)
    positions = _local_positions(mesh)
    if not positions:
        raise ConfigError(f"process {jax.process_index()} has no device in the mesh {mesh.devices.tolist()}")
    if positions != list(range(positions[0], positions[-1] + 1)):
        raise ConfigError(
            f"process {jax.process_index()}'s devices are not contiguous in the mesh: positions {positions}"
        )
    per_device = global_batch_size // mesh.size
    return slice(positions[0] * per_device, (positions[-1] + 1) * per_device)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """A pytree of process-local host arrays as global arrays split along the leading axis over ``mesh``.

    In a single process ``batch`` is the whole batch and this is ``jax.device_put(batch,
    data_sharding(mesh))``. With several processes each passes its own rows
    (:func:`process_batch_slice` of the global batch) and gets the same global arrays, built with
    ``jax.make_array_from_process_local_data``. The global batch size must be divisible by the number
    of devices in the mesh (``ValueError`` naming both otherwise); all leaves must have the same leading
    dimension.
    """
    leaves, treedef = jax.tree_util.tree_flatten(batch)
    if not leaves:
        raise ConfigError("shard_batch: batch has no arrays")
    sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) else None for leaf in leaves}
    if None in sizes or len(sizes) != 1:
        raise ConfigError(
            f"shard_batch: every array needs the same leading (batch) dimension, got {sorted(sizes, key=str)}"
        )
    local_rows = sizes.pop()
    sharding = data_sharding(mesh)
    if jax.process_count() == 1:
        _check_divisible(local_rows, mesh)
        return jax.device_put(batch, sharding)
    local_devices = len(_local_positions(mesh))
    global_rows, rem = divmod(local_rows * mesh.size, max(local_devices, 1))
    if not local_devices or rem:
        raise ConfigError(
            f"shard_batch: {local_rows} local rows cannot be this process's share of a batch over {mesh.size} "
            f"devices ({local_devices} of them local)"
        )
    _check_divisible(global_rows, mesh)
    out = [
        jax.make_array_from_process_local_data(sharding, np.asarray(leaf), (global_rows, *np.shape(leaf)[1:]))
        for leaf in leaves
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """A pytree with a full copy of every array on every device of ``mesh``.

    Every process must pass the same values (e.g. parameters initialised from the same seed, or read
    from the same checkpoint); with several processes each builds its local copies from its own host
    values (``jax.make_array_from_callback``), no data is sent between hosts.
    """
    sharding = replicated_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def leaf(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(x)
            return jax.random.wrap_key_data(leaf(jax.random.key_data(x)), impl=impl)
        host = np.asarray(local_copy(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(leaf, tree)


def local_copy(tree: Any) -> Any:
    """Each replicated array as its copy on one local device (for evaluation, checkpoints, plots).

    Arrays that live on this process's devices only, and non-JAX leaves, are returned as they are. An
    array split across processes has no complete local copy: ``ValueError``.
    """

    def leaf(x):
        if not isinstance(x, jax.Array):
            return x
        if len(x.sharding.device_set) == 1:
            return x
        if x.is_fully_replicated:
            return x.addressable_data(0)
        if x.is_fully_addressable:
            return jax.device_put(x, jax.local_devices()[0])
        raise ConfigError(
            f"local_copy: an array of shape {x.shape} is split across processes ({x.sharding}); gather it first"
        )

    return jax.tree_util.tree_map(leaf, tree)


def sync(name: str) -> None:
    """A barrier across all processes (``multihost_utils.sync_global_devices``); nothing in one process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
