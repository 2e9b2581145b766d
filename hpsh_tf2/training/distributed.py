"""Training on several machines: ``train.strategy: multi_worker``.

TensorFlow's own distributed runtime does the work:
:class:`tf.distribute.MultiWorkerMirroredStrategy` (synchronous collective all-reduce over gRPC)
with the workers described by the ``TF_CONFIG`` environment variable, the convention of
Kubernetes operators and Vertex AI. Every worker runs
the same command; this module adds what the run folder, the P x K batches and model selection
need on top:

* **Batches.** Every worker draws the same global P x K batch (a pure function of
  ``train.seed`` and the batch number) and reads only its replicas' rows of it: replica ``r`` of
  ``R`` gets rows ``[r * n / R, (r + 1) * n / R)``, whole K-row class blocks because P must
  divide by ``R``. The whole global batch is used once per step, and a resumed run starts at
  the same batch number on every worker. The triplet draws are keyed by the replica's global
  index (``replica_id_in_sync_group`` runs over all workers), so they differ per worker and
  per replica and are the same after a restart.
* **Files.** Only the chief (task ``chief`` 0, else ``worker`` 0) writes to the run folder:
  checkpoints, ``history.csv``, TensorBoard logs, the selected model and ``train_summary.json``.
  The other workers write the same files to a temporary folder they remove at the end (Keras'
  multi-worker convention: every worker takes part in every save).
* **Resume.** The chief restores its last epoch checkpoint (the usual resume logic); then the
  weights, optimizer state and resume point are broadcast from the chief, so the other
  workers need no access to the chief's disk.
* **Model selection.** Validation runs once per epoch, on the chief; its value is broadcast, so
  every worker logs the same ``val_map@k`` and agrees on the best epoch.
* **Failures.** A worker that dies is detected by TensorFlow's coordination-service heartbeats;
  the others stop with an error naming the lost task (no hang). ``train.collective_timeout_seconds``
  additionally bounds every collective operation (it must exceed the chief's validation time).
  Starting every worker again resumes after the last finished epoch.

* **Start.** Before TensorFlow's runtime starts, every worker listens on its own port and waits
  until every other task answers on its port (plain TCP). A worker whose peers do not all answer
  within ``train.cluster_start_timeout_seconds`` stops with one line naming the missing tasks
  (TensorFlow itself would wait for good, holding the interpreter, deaf to SIGTERM).
* **SIGTERM.** TensorFlow's coordination service catches SIGTERM (a preemption notice) and goes
  on; a multi-worker process here stops on SIGTERM instead, at once, with one line and exit
  status 143 (a thread woken by the signal's wakeup file descriptor, so a main thread blocked
  in a collective operation does not delay it).
* **Shared workdir.** The workers of one cluster may share ``output.workdir`` (one volume for
  every pod): :func:`lock_identity` names the cluster for the workdir lock, which lets its
  workers in and keeps plain runs and other clusters out (see :mod:`hpsh_tf2.lock`).

The strategy must exist before TensorFlow runs its first operation in the process
(TensorFlow configures collective ops at start-up): :func:`start_multi_worker` creates it and
the ``train`` and ``run`` steps call it first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from hpsh_tf2.config import Config
from hpsh_tf2.errors import HPSHError
from hpsh_tf2.layout import RunLayout
from hpsh_tf2.registry import STRATEGIES
from hpsh_tf2.training.callbacks import RetrievalValidation
from hpsh_tf2.training.checkpoints import ResumeState

__all__ = [
    "ClusterError",
    "SharedValidation",
    "WorkerRole",
    "adapt_trainer",
    "broadcast_from_chief",
    "chief_result",
    "distributed_training_dataset",
    "is_chief",
    "is_multi_worker",
    "lock_identity",
    "multi_worker_strategy",
    "read_tf_config",
    "start_multi_worker",
    "sync_resume",
    "wait_for_peers",
    "worker_errors",
    "writer_layout",
]

logger = logging.getLogger(__name__)

_STRATEGY: tf.distribute.MultiWorkerMirroredStrategy | None = None
_SIGTERM_WATCH: list = []  # the SIGTERM wakeup socket pair and its thread, once per process
_TASK_TYPES = ("chief", "worker")
_ADDRESS = re.compile(r"^\[?[A-Za-z0-9_.:\-]+\]?:\d{1,5}$")


class ClusterError(HPSHError, ValueError):
    """``TF_CONFIG`` is absent or malformed, or the multi-worker runtime cannot start."""


@dataclass(frozen=True)
class WorkerRole:
    """This process's place in the cluster, from ``TF_CONFIG``.

    Attributes:
        task_type: ``"chief"`` or ``"worker"``.
        task_index: Index of this task in its job.
        num_workers: Training tasks in the cluster (chief + workers).
        worker_index: 0 for the chief, then the workers in order (the input pipeline index).
        addresses: ``host:port`` of every training task, chief first.
    """

    task_type: str
    task_index: int
    num_workers: int
    worker_index: int
    addresses: tuple[str, ...]

    @property
    def is_chief(self) -> bool:
        """Whether this task writes the run folder."""
        return self.worker_index == 0


def read_tf_config(environ: Mapping[str, str] | None = None) -> WorkerRole:
    """Parses and checks ``TF_CONFIG`` (the cluster and this process's task).

    Expected: ``{"cluster": {"worker": ["host:port", ...], "chief": ["host:port"]},
    "task": {"type": "worker", "index": 0}}``; ``chief`` is optional (without it ``worker`` 0
    is the chief).

    Args:
        environ: The environment to read (default ``os.environ``).

    Returns:
        The :class:`WorkerRole`.

    Raises:
        ClusterError: Naming what is missing or malformed.
    """
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG")
    example = (
        'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}\''
    )
    if not text or not text.strip():
        raise ClusterError(
            "train.strategy=multi_worker needs the TF_CONFIG environment variable (the cluster "
            f"and this worker's task); it is not set. Set it on every worker, {example}"
        )
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ClusterError(f"TF_CONFIG is not valid JSON ({err}). Received: {text!r}") from None
    if not isinstance(raw, dict):
        raise ClusterError(f"TF_CONFIG must be a JSON object. Received: {text!r}")
    cluster, task = raw.get("cluster"), raw.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ClusterError(f"TF_CONFIG has no 'cluster' mapping; {example}. Received: {text!r}")
    if not isinstance(task, dict):
        raise ClusterError(f"TF_CONFIG has no 'task' mapping; {example}. Received: {text!r}")
    jobs = {}
    for name in _TASK_TYPES:
        if name not in cluster:
            continue
        addresses = cluster[name]
        if not isinstance(addresses, list) or not addresses:
            raise ClusterError(
                f"TF_CONFIG 'cluster.{name}' must be a non-empty list of 'host:port' strings. "
                f"Received: {addresses!r}"
            )
        bad = [a for a in addresses if not isinstance(a, str) or not _ADDRESS.match(a)]
        if bad:
            raise ClusterError(
                f"TF_CONFIG 'cluster.{name}' holds {bad[0]!r}; expected 'host:port' strings"
            )
        jobs[name] = tuple(addresses)
    if "worker" not in jobs and "chief" not in jobs:
        raise ClusterError(
            "TF_CONFIG 'cluster' has no 'worker' (or 'chief') list of training tasks. "
            f"Received jobs: {sorted(cluster)}"
        )
    if len(jobs.get("chief", ())) > 1:
        raise ClusterError(
            f"TF_CONFIG 'cluster.chief' must hold one task. Received: {jobs['chief']}"
        )
    task_type, task_index = task.get("type"), task.get("index")
    if task_type not in jobs:
        raise ClusterError(
            f"TF_CONFIG 'task.type' must be one of the training jobs {sorted(jobs)}. "
            f"Received: {task_type!r}"
        )
    if isinstance(task_index, bool) or not isinstance(task_index, int):
        raise ClusterError(f"TF_CONFIG 'task.index' must be an integer. Received: {task_index!r}")
    if not 0 <= task_index < len(jobs[task_type]):
        raise ClusterError(
            f"TF_CONFIG 'task.index'={task_index} is out of range: 'cluster.{task_type}' has "
            f"{len(jobs[task_type])} task(s)"
        )
    addresses = jobs.get("chief", ()) + jobs.get("worker", ())
    if len(set(addresses)) != len(addresses):
        raise ClusterError(f"TF_CONFIG lists an address twice: {list(addresses)}")
    offset = 1 if task_type == "worker" and "chief" in jobs else 0
    return WorkerRole(task_type, task_index, len(addresses), offset + task_index, addresses)


def _task_name(role: WorkerRole, index: int) -> str:
    """``chief 0`` / ``worker N`` of the training task at position ``index`` (chief first)."""
    has_chief = role.task_type == "chief" or role.worker_index != role.task_index
    if has_chief:
        return "chief 0" if index == 0 else f"worker {index - 1}"
    return f"worker {index}"


def lock_identity(config: Config, environ: Mapping[str, str] | None = None):
    """``(cluster_id, task)`` for the workdir lock of a multi-worker worker, else ``None``.

    The id is a digest of the cluster's addresses, the same on every worker of one cluster;
    ``None`` unless ``train.strategy`` is ``multi_worker`` and ``TF_CONFIG`` is set.

    Raises:
        ClusterError: ``TF_CONFIG`` is set but malformed.
    """
    environ = os.environ if environ is None else environ
    spans_workers = getattr(STRATEGIES.get(config.train.strategy), "spans_workers", False)
    if not spans_workers or not environ.get("TF_CONFIG", "").strip():
        return None
    role = read_tf_config(environ)
    digest = hashlib.sha256(json.dumps(list(role.addresses)).encode("utf-8")).hexdigest()[:12]
    return digest, _task_name(role, role.worker_index)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _host(address: str) -> str:
    return address.rsplit(":", 1)[0].strip("[]")


def _answers(address: str) -> bool:
    try:
        with socket.create_connection((_host(address), _port(address)), timeout=1.0):
            return True
    except OSError:
        return False


def _listen(port: int) -> socket.socket:
    """A listening socket on this task's port (never accepted: closing it resets the probes,
    so no TIME_WAIT keeps TensorFlow's server from binding the port)."""
    try:
        if socket.has_dualstack_ipv6():
            return socket.create_server(
                ("", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=128
            )
        return socket.create_server(("", port), backlog=128)
    except OSError as err:
        raise ClusterError(
            f"multi_worker: cannot listen on this task's port {port} ({err.strerror or err}); "
            "is another process using it? Check TF_CONFIG's address for this task"
        ) from None


def wait_for_peers(role: WorkerRole, timeout_seconds: float) -> None:
    """Listens on this task's port until every other task answers on its own.

    Args:
        role: This process's place in the cluster.
        timeout_seconds: ``train.cluster_start_timeout_seconds``.

    Raises:
        ClusterError: Some tasks did not answer in time (one line naming them).
    """
    pending = {i: address for i, address in enumerate(role.addresses) if i != role.worker_index}
    if not pending:
        return
    listener = _listen(_port(role.addresses[role.worker_index]))
    deadline = time.monotonic() + timeout_seconds
    try:
        while True:
            pending = {i: a for i, a in pending.items() if not _answers(a)}
            if not pending:
                return
            if time.monotonic() >= deadline:
                missing = ", ".join(f"{_task_name(role, i)} ({a})" for i, a in pending.items())
                raise ClusterError(
                    f"multi_worker: the cluster did not start within {timeout_seconds:g} s "
                    f"(train.cluster_start_timeout_seconds): no answer from {missing}; start "
                    "every worker with the same TF_CONFIG cluster (or raise the timeout)"
                )
            time.sleep(0.2)
    finally:
        listener.close()


_SIGTERM_LINE = (
    "multi_worker: SIGTERM received; this worker ({task}) stops now (exit 143). Start every "
    "worker again with the same command to resume from the last checkpoint\n"
)


def _stop_on_sigterm(task: str) -> None:
    """Makes SIGTERM end this process at once with one line on stderr and exit status 143.

    A daemon thread waits on the signal wakeup file descriptor (written by the C-level signal
    handler as the signal arrives, whatever the main thread is doing) and calls ``os._exit``.
    Must run in the main thread; call it again after TensorFlow installs its own handler.
    """
    line = _SIGTERM_LINE.format(task=task).encode("utf-8")

    def stop(*_):
        os.write(sys.stderr.fileno(), line)
        os._exit(143)

    signal.signal(signal.SIGTERM, stop)
    if _SIGTERM_WATCH:
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def watch():
        while True:
            data = reader.recv(64)
            if not data or signal.SIGTERM in data:
                stop()

    thread = threading.Thread(target=watch, name="hpsh-sigterm", daemon=True)
    thread.start()
    _SIGTERM_WATCH.extend((reader, writer, thread))  # kept for the process's life


def multi_worker_strategy(
    timeout_seconds: float | None = None, start_timeout_seconds: float = 300.0
) -> tf.distribute.MultiWorkerMirroredStrategy:
    """The process's :class:`tf.distribute.MultiWorkerMirroredStrategy` (created once).

    Waits for the other tasks first (:func:`wait_for_peers`) and makes SIGTERM stop the
    process (see the module docstring).

    Args:
        timeout_seconds: Abort any collective operation that takes longer
            (``train.collective_timeout_seconds``); ``None``: no limit.
        start_timeout_seconds: Give up when the other tasks do not all answer within this
            time (``train.cluster_start_timeout_seconds``).

    Raises:
        ClusterError: If ``TF_CONFIG`` is absent or malformed, the other tasks did not start
            in time, or TensorFlow already ran an operation in this process before the
            strategy was created.
    """
    global _STRATEGY
    if _STRATEGY is not None:
        return _STRATEGY
    role = read_tf_config()
    task = _task_name(role, role.worker_index)
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        _stop_on_sigterm(task)
    wait_for_peers(role, start_timeout_seconds)
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=None if timeout_seconds is None else float(timeout_seconds)
    )
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except RuntimeError as err:
        if "program startup" not in str(err):
            raise
        raise ClusterError(
            "train.strategy=multi_worker must start before TensorFlow runs anything in the "
            "process; call hpsh_tf2.training.distributed.start_multi_worker(config) first (the "
            "train and run steps do)"
        ) from None
    if in_main:
        _stop_on_sigterm(task)  # TensorFlow's coordination service caught SIGTERM meanwhile
    logger.info(
        "multi_worker: %s %d of %d workers (%s), %d replicas in sync",
        role.task_type,
        role.task_index,
        role.num_workers,
        "chief" if role.is_chief else "not chief",
        strategy.num_replicas_in_sync,
    )
    _STRATEGY = strategy
    return strategy


def start_multi_worker(config: Config) -> tf.distribute.Strategy | None:
    """Creates the multi-worker strategy if ``train.strategy`` asks for it, else does nothing.

    Call it before anything runs TensorFlow ops in the process (the ``train`` and ``run``
    steps call it first).

    Returns:
        The strategy, or ``None`` for the other strategies.
    """
    entry = STRATEGIES.get(config.train.strategy)
    if not getattr(entry, "spans_workers", False):
        return None
    return entry(
        config.train.collective_timeout_seconds, config.train.cluster_start_timeout_seconds
    )


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` spans more than one worker process."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    jobs = strategy.cluster_resolver.cluster_spec().as_dict()
    return sum(len(jobs.get(name, ())) for name in _TASK_TYPES) > 1


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run folder (always true with one worker)."""
    return bool(strategy.extended.should_checkpoint)


@contextlib.contextmanager
def writer_layout(strategy: tf.distribute.Strategy, layout: RunLayout) -> Iterator[RunLayout]:
    """The run folder this process writes: ``layout`` on the chief, else a temporary folder.

    The temporary folder is removed when the block ends, also on an error.
    """
    if is_chief(strategy):
        yield layout
        return
    resolver = strategy.cluster_resolver
    prefix = f"hpsh-{resolver.task_type}{resolver.task_id}-"
    folder = tempfile.mkdtemp(prefix=prefix)
    try:
        yield RunLayout(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def chief_result(result, layout: RunLayout, validation, k: int):
    """A non-chief's :class:`~hpsh_tf2.training.fit.TrainResult`, naming the chief's files.

    A non-chief keeps no best-epoch model across restarts (its folder is temporary), so its
    selection is taken from the shared validation state, which is the chief's.
    """
    selection = {}
    if validation is not None and validation.best_epoch is not None:
        selection = {
            "selection": f"val_map@{k}",
            "selected_epoch": validation.best_epoch,
            "best_val_map": validation.best,
        }
    return dataclasses.replace(
        result,
        **selection,
        model_dir=layout.model_dir,
        hash_model_path=layout.hash_model,
        image_model_path=None if result.image_model_path is None else layout.image_model,
    )


def broadcast_from_chief(
    strategy: tf.distribute.Strategy, values: Sequence[np.ndarray | tf.Tensor | float]
) -> list[np.ndarray]:
    """The chief's ``values`` on every worker (one all-reduce; the others contribute zeros).

    Every worker must call it at the same point, with values of the same shapes and dtypes.
    """
    arrays = [np.asarray(v) for v in values]

    @tf.function(autograph=False)
    def reduce():
        def step():
            context = tf.distribute.get_replica_context()
            keep = tf.equal(context.replica_id_in_sync_group, 0)  # replica 0 is on the chief
            masked = [tf.where(keep, t, tf.zeros_like(t)) for t in map(tf.constant, arrays)]
            out = list(masked)
            for dtype in {t.dtype for t in masked}:  # all_reduce packs tensors of one dtype
                group = [i for i, t in enumerate(masked) if t.dtype == dtype]
                summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [masked[i] for i in group])
                for i, value in zip(group, summed):
                    out[i] = value
            return out

        return strategy.run(step)

    reduced = reduce()
    return [np.asarray(strategy.experimental_local_results(r)[0]) for r in reduced]


def sync_resume(
    strategy: tf.distribute.Strategy, resume: ResumeState, variables: Sequence
) -> ResumeState:
    """Makes every worker continue from the chief's checkpoint.

    The chief has restored its last epoch checkpoint (or starts afresh); its resume point and
    the values of ``variables`` (model weights and optimizer state) are broadcast and assigned
    on every worker. With one worker nothing happens.

    Args:
        strategy: The strategy.
        resume: This worker's resume point (only the chief's is used).
        variables: The checkpointed variables, in the same order on every worker.

    Returns:
        The chief's resume point.
    """
    if not is_multi_worker(strategy):
        return resume
    state = np.array(
        [
            resume.epoch,
            resume.best is not None,
            math.nan if resume.best is None else resume.best,
            0 if resume.best_epoch is None else resume.best_epoch,
        ],
        np.float64,
    )
    if not is_chief(strategy):
        state = np.zeros_like(state)  # the chief's values are all that count
    values = broadcast_from_chief(strategy, [state, *[v.numpy() for v in variables]])
    for variable, value in zip(variables, values[1:]):
        variable.assign(value)
    epoch, has_best, best, best_epoch = values[0].tolist()
    if not has_best:
        return ResumeState(int(epoch))
    return ResumeState(int(epoch), float(best), int(best_epoch) or None)


class SharedValidation(keras.callbacks.Callback):
    """Model selection once, on the chief; every worker receives its value and agrees.

    Wraps a :class:`~hpsh_tf2.training.callbacks.RetrievalValidation`: the chief measures
    ``val_map@k`` after each epoch, the value is broadcast, and every worker records it (logs,
    best epoch; the model is saved to each worker's own folder, the chief's being the run folder).

    Args:
        validation: The validation callback of this worker.
        strategy: The multi-worker strategy.
    """

    def __init__(self, validation: RetrievalValidation, strategy: tf.distribute.Strategy):
        super().__init__()
        self.validation = validation
        self.strategy = strategy
        self.key = validation.key

    @property
    def best(self) -> float | None:
        """Best ``val_map@k`` so far."""
        return self.validation.best

    @property
    def best_epoch(self) -> int | None:
        """Its 1-based epoch."""
        return self.validation.best_epoch

    @property
    def stopped_epoch(self) -> int | None:
        """The epoch early stopping ended the run at, or ``None``."""
        return self.validation.stopped_epoch

    def set_model(self, model) -> None:
        super().set_model(model)
        self.validation.set_model(model)  # early stopping sets model.stop_training

    def on_epoch_end(self, epoch, logs=None):
        value = self.validation.measure() if is_chief(self.strategy) else 0.0
        (shared,) = broadcast_from_chief(self.strategy, [np.float64(value)])
        self.validation.record(epoch, float(shared), logs)


def distributed_training_dataset(
    strategy: tf.distribute.Strategy,
    build: Callable[[tuple[int, int]], tf.data.Dataset],
    *,
    batch_size: int,
    samples_per_class: int,
) -> tf.distribute.DistributedDataset:
    """The global P x K batches, each worker reading only its replicas' rows.

    Args:
        strategy: The strategy.
        build: ``rows -> dataset``: the training pipeline keeping rows ``[start, stop)`` of
            every global batch (see :func:`hpsh_tf2.data.pipeline.train_dataset_from_arrays`).
        batch_size: The global batch, P x K.
        samples_per_class: K.

    Returns:
        A distributed dataset whose replica ``r`` receives rows
        ``[r * batch_size / R, (r + 1) * batch_size / R)`` of every global batch.

    Raises:
        HPSHError: If the replicas' shares are not whole K-row blocks.
    """
    replicas = strategy.num_replicas_in_sync
    share = batch_size // replicas
    if batch_size % replicas or share % samples_per_class:
        raise HPSHError(
            f"the P x K batch of {batch_size} rows does not split into whole blocks of "
            f"samples_per_class={samples_per_class} over {replicas} replicas"
        )

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = context.num_replicas_in_sync // context.num_input_pipelines
        first = context.input_pipeline_id * local * share
        dataset = build((first, first + local * share))
        if local > 1:  # consecutive elements go to the worker's consecutive replicas
            dataset = dataset.rebatch(share, drop_remainder=True)
        return dataset

    return strategy.distribute_datasets_from_function(dataset_fn)


def adapt_trainer(trainer: keras.Model, element_spec) -> None:
    """Prepares ``trainer`` for Keras 3's ``fit`` under ``MultiWorkerMirroredStrategy``.

    Two steps of Keras 3's TensorFlow trainer fail there (Keras 3.15): building the model
    reduces a first ``(x, y)`` batch across replicas (which fails for a tuple), and the step's
    logs are averaged with ``strategy.reduce("MEAN", log, axis=0)`` (which fails for scalars).
    So the model is built here from zeros of one replica's batch (``element_spec``) and
    ``fit``'s build step is skipped, and the train step returns every log as a ``[1]`` vector,
    which that reduction turns into the mean over all replicas: the same scalar on every
    worker.
    """
    example = tree_zeros(element_spec)
    with trainer.distribute_strategy.scope():
        trainer._symbolic_build(data_batch=example)
    trainer._maybe_symbolic_build = _built
    step = trainer.train_step

    def train_step(data):
        return {name: tf.reshape(value, [1]) for name, value in step(data).items()}

    trainer.train_step = train_step


def _built(iterator=None, data_batch=None) -> None:
    """``fit``'s build step for a trainer that :func:`build_before_fit` built."""


def tree_zeros(element_spec):
    """Zeros of every ``tf.TensorSpec`` in a (nested) element spec."""
    return tf.nest.map_structure(lambda spec: tf.zeros(spec.shape, spec.dtype), element_spec)


@contextlib.contextmanager
def worker_errors(strategy: tf.distribute.Strategy, layout: RunLayout) -> Iterator[None]:
    """Turns a lost worker's TensorFlow error into one clear line (same error class)."""
    if not is_multi_worker(strategy):
        yield
        return
    try:
        yield
    except tf.errors.OpError as err:
        lines = [line.strip() for line in err.message.splitlines() if line.strip()]
        keys = ("aborted by", "unhealthy", "Socket closed", "Deadline", "timed out", "timeout")
        reason = next((line for line in lines if any(k in line for k in keys)), None)
        reason = reason or (lines[0] if lines else type(err).__name__)
        tasks = re.findall(r"/job:\w+/replica:\d+/task:\d+", err.message)
        lost = f"; lost: {', '.join(sorted(set(tasks)))}" if tasks else ""
        message = (
            f"multi_worker training stopped: a worker failed or cannot be reached ({reason}"
            f"{lost}). Start every worker again with the same command to resume from the last "
            f"checkpoint in {layout.checkpoints}"
        )
        raise type(err)(err.node_def, err.op, message) from err
