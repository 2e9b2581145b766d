"""Benchmark one HPSH train step: vectorised sampler vs a seed-style per-anchor Python loop.

Both variants run the same maths (hpsh sampling probabilities, margin + push + balance +
fixed quantisation loss, Adam(1e-4, 0.5, 0.9) update of the hash head
2048 -> 1024 -> 512 -> bits) inside ``tf.function``:

* ``vectorised``: ``hpsh_tf2.losses.hpsh_loss`` (one categorical draw for the batch, index
  gathers).
* ``seed-style loop``: the graph is built with Python loops like the original TF1 code
  (docs/method.md section 11.8): one categorical op per anchor, each sampling all n rows
  (only row i is used), scalar strided slices and a concat per gathered row, growing the
  triplet tensors.

With ``--loss-only`` a second table times sampler + loss alone (forward and gradient with
respect to the scores, no head). The first call (tracing + first run) is timed
separately; it and one warm-up call are excluded from the per-step median.
Usage: python bench/bench_train_step.py [--bits 32 --classes 30 --samples-per-class 5
--steps 50 --loop-steps 5 --loss-only --out bench/results/train_step.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf

from hpsh_tf2.losses import hpsh_loss, margin_loss
from hpsh_tf2.ops.distances import l2_normalize_embeddings
from hpsh_tf2.ops.sampling import hpsh_negative_probabilities
from hpsh_tf2.samplers import TripletSampler

FEATURES = 2048
GOAL = 50.0  # issue 3: full train step >= 50x the seed-style loop
FLOOR_NAME = "floor: head + Adam only, no sampler (loss = mean score)"
LOSS_FLOOR_NAME = "floor: call overhead (loss = mean score)"
XLA = ", jit_compile=True"


def build_head(bits: int) -> keras.Model:
    """Hash head 2048 -> 1024 -> 512 -> bits, LeakyReLU(0.2), sigmoid output."""
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(1024),
            keras.layers.LeakyReLU(negative_slope=0.2),
            keras.layers.Dense(512),
            keras.layers.LeakyReLU(negative_slope=0.2),
            keras.layers.Dense(bits, activation="sigmoid"),
        ]
    )


def _adam() -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(learning_rate=1e-4, beta_1=0.5, beta_2=0.9)


def _regularisers(s: tf.Tensor) -> tf.Tensor:
    """push + balance + fixed quantisation with the default weights (as in hpsh_loss)."""
    bits = tf.cast(tf.shape(s)[1], s.dtype)
    push = -(0.001 / bits) * tf.reduce_mean(tf.reduce_sum(tf.square(s - 0.5), axis=1))
    balance = tf.reduce_mean(tf.square(tf.reduce_mean(s, axis=1) - 0.5))
    b = (tf.sign(s - 0.5) + 1.0) / 2.0
    quant = 0.01 * tf.reduce_mean(tf.math.log(tf.math.cosh(tf.abs(s - b))))
    return push + balance + quant


def make_vectorised_step(model: keras.Model, k: int, jit: bool = False):
    """tf.function train step using the package's vectorised loss."""
    optimizer = _adam()
    sampler = TripletSampler(samples_per_class=k)

    @tf.function(jit_compile=jit)
    def step(x: tf.Tensor, y: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = hpsh_loss(y, model(x, training=True), sampler=sampler, seed=seed)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def make_floor_step(model: keras.Model, jit: bool = False):
    """The same head forward/backward and Adam update with a trivial loss (no sampler).

    No sampler or loss implementation can make a train step faster than this, so
    ``loop / floor`` bounds the full-step speed-up on the device at hand.
    """
    optimizer = _adam()

    @tf.function(jit_compile=jit)
    def step(x: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def make_vectorised_loss_only(k: int, jit: bool = False):
    """Sampler + loss, forward and backward with respect to the scores (no head)."""
    sampler = TripletSampler(samples_per_class=k)

    @tf.function(jit_compile=jit)
    def step(s: tf.Tensor, y: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(s)
            loss = hpsh_loss(y, s, sampler=sampler, seed=seed)
        return loss + 0.0 * tf.reduce_sum(tape.gradient(loss, s))

    return step


def make_floor_loss_only(jit: bool = False):
    """A trivial loss and its gradient: the cost of calling any ``tf.function`` at all."""

    @tf.function(jit_compile=jit)
    def step(s: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(s)
            loss = tf.reduce_mean(s)
        return loss + 0.0 * tf.reduce_sum(tape.gradient(loss, s))

    return step


def make_loop_loss_only(n: int, k: int):
    """Seed-style loop sampler + loss, forward and backward with respect to the scores."""

    @tf.function
    def step(s: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(s)
            loss = _loop_loss(s, y, n, k)
        return loss + 0.0 * tf.reduce_sum(tape.gradient(loss, s))

    return step


def _loop_triplets(e: tf.Tensor, logits: tf.Tensor, n: int, k: int):
    """Per-anchor Python loop as in the original graph: n categorical ops, scalar slices."""
    anchors = positives = negatives = None
    for i in range(n):
        draws = tf.random.categorical(logits, k - 1)  # samples all n rows; row i is used
        mates = [j for j in range(i // k * k, i // k * k + k) if j != i]
        for t, j in enumerate(mates):
            rows = (e[i][None, :], e[j][None, :], e[draws[i, t]][None, :])
            if anchors is None:
                anchors, positives, negatives = rows
            else:
                anchors = tf.concat([anchors, rows[0]], axis=0)
                positives = tf.concat([positives, rows[1]], axis=0)
                negatives = tf.concat([negatives, rows[2]], axis=0)
    return anchors, positives, negatives


def _loop_loss(s: tf.Tensor, y: tf.Tensor, n: int, k: int) -> tf.Tensor:
    e = l2_normalize_embeddings(s)
    probs = hpsh_negative_probabilities(e, y, samples_per_class=k)
    rows = _loop_triplets(e, tf.math.log(probs), n, k)
    return margin_loss(*rows) + _regularisers(s)


def make_loop_step(model: keras.Model, n: int, k: int):
    """tf.function train step whose triplet assembly is unrolled Python loops."""
    optimizer = _adam()

    @tf.function
    def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = _loop_loss(model(x, training=True), y, n, k)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def _first_call(call) -> tuple[float, float]:
    """(seconds of the first call, its loss); then one untimed warm-up call."""
    start = time.perf_counter()
    loss = float(call(0))
    first = time.perf_counter() - start
    float(call(1))  # warm-up (allocator and kernel caches)
    return first, loss


def _measure(calls: list[tuple[str, object, int]], rounds: int) -> list[tuple]:
    """Times ``(name, call, count)`` variants interleaved in ``rounds`` rounds.

    Each round runs ``count // rounds`` calls of every variant in turn, so that all variants
    see the same background load on a shared machine. Returns rows
    ``(name, (first-call s, median s per call, first loss), timed calls)``.
    """
    firsts = [_first_call(call) for _, call, _ in calls]
    times: list[list[float]] = [[] for _ in calls]
    index = 2
    for _ in range(rounds):
        for v, (_, call, count) in enumerate(calls):
            for _ in range(max(1, count // rounds)):
                start = time.perf_counter()
                float(call(index))  # float() waits for the step to finish
                times[v].append(time.perf_counter() - start)
                index += 1
    return [
        (name, (first, float(np.median(t)), loss), len(t))
        for (name, _, _), (first, loss), t in zip(calls, firsts, times)
    ]


def _device_name() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)}"
    return f"CPU: {platform.processor() or platform.machine()} ({os.cpu_count()} cores visible)"


def _table(title: str, rows: list[tuple], ops: dict[str, int]) -> list[str]:
    loop_mean = rows[-1][1][1]  # the seed-style loop is the last row
    lines = [
        f"### {title}",
        "",
        "| variant | graph ops | first call (s) | timed steps | ms / step | steps / s "
        "| speed-up vs loop | loss @ step 0 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (first, mean, loss), count in rows:
        op_count = f"{ops[name]:,}" if name in ops else "fused (XLA)"
        lines.append(
            f"| {name} | {op_count} | {first:.2f} | {count} | {1e3 * mean:.2f} | {1 / mean:.1f} "
            f"| {loop_mean / mean:.1f}x | {loss:.4f} |"
        )
    return [*lines, ""]


def _graph_ops(function, *args) -> int:
    """Ops of a traced step (forward, gradient and update), before Grappler's rewrites.

    Constants, placeholders, identities and no-ops are not counted. Without XLA each op runs
    as a kernel (Grappler folds some of the shape arithmetic first), on a GPU a launch each, so
    the ratio of these counts indicates the speed-up where per-op overhead dominates, as it
    does for the small tensors here. It is an indicator, not a measurement.
    """
    graph = function.get_concrete_function(*args).graph
    skip = {"Const", "NoOp", "Identity", "Placeholder"}
    return sum(op.type not in skip for op in graph.get_operations())


def _ceiling_lines(rows: list[tuple], floor_name: str, what: str, common: str) -> list[str]:
    """What the floor row implies for the speed-up on this device (Amdahl's law)."""
    step_s = {name: mean for name, (_, mean, _), _ in rows}
    loop = step_s["seed-style loop"]
    floor = min(step_s[floor_name], step_s[floor_name + XLA])  # the faster of the two floors
    budget = loop / GOAL
    verdict = (
        f"the floor alone is {floor / budget:.1f}x that, so {GOAL:.0f}x is out of reach here"
        if floor > budget
        else f"{budget / floor:.1f}x the floor, so {GOAL:.0f}x is reachable in principle"
    )
    return [
        f"Ceiling on this device ({what}): no implementation can beat loop / (faster floor) = "
        f"{loop / floor:.1f}x, because {common} ({1e3 * floor:.2f} ms) is common to both "
        f"variants. {GOAL:.0f}x needs {1e3 * budget:.2f} ms per call; {verdict}.",
        "",
    ]


def _time_variants(args, steps: tuple, data: tf.Tensor, y: tf.Tensor, floor_name: str):
    """Times ``steps = (fast, fast_xla, floor, floor_xla, loop)``; returns (rows, op counts).

    ``data`` is the features (full step) or the scores (sampler + loss only).
    """
    fast, fast_xla, floor, floor_xla, loop = steps
    calls = [
        ("vectorised", lambda i: fast(data, y, tf.constant([7, i])), args.steps),
        ("vectorised" + XLA, lambda i: fast_xla(data, y, tf.constant([7, i])), args.steps),
        (floor_name, lambda i: floor(data), args.steps),
        (floor_name + XLA, lambda i: floor_xla(data), args.steps),
        ("seed-style loop", lambda i: loop(data, y), args.loop_steps),
    ]
    rows = _measure(calls, args.loop_steps)  # first: its first call includes the tracing
    ops = {
        "vectorised": _graph_ops(fast, data, y, tf.constant([7, 0])),
        floor_name: _graph_ops(floor, data),
        "seed-style loop": _graph_ops(loop, data, y),
    }
    return rows, ops


def _train_step_rows(args, x, y) -> tuple[list[tuple], dict[str, int]]:
    k, n = args.samples_per_class, args.classes * args.samples_per_class
    keras.utils.set_random_seed(123)
    models = [build_head(args.bits) for _ in range(5)]
    for other in models[1:]:
        other.set_weights(models[0].get_weights())
    steps = (
        make_vectorised_step(models[0], k),
        make_vectorised_step(models[1], k, jit=True),
        make_floor_step(models[2]),
        make_floor_step(models[3], jit=True),
        make_loop_step(models[4], n, k),
    )
    return _time_variants(args, steps, x, y, FLOOR_NAME)


def _loss_only_rows(args, y) -> tuple[list[tuple], dict[str, int]]:
    k, n = args.samples_per_class, args.classes * args.samples_per_class
    rng = np.random.default_rng(1)
    s = tf.constant(rng.uniform(0.05, 0.95, size=(n, args.bits)).astype(np.float32))
    steps = (
        make_vectorised_loss_only(k),
        make_vectorised_loss_only(k, jit=True),
        make_floor_loss_only(),
        make_floor_loss_only(jit=True),
        make_loop_loss_only(n, k),
    )
    return _time_variants(args, steps, s, y, LOSS_FLOOR_NAME)


def run(args: argparse.Namespace) -> str:
    """Runs the variants and returns the Markdown report."""
    k, n = args.samples_per_class, args.classes * args.samples_per_class
    rng = np.random.default_rng(0)
    x = tf.constant(np.maximum(rng.normal(size=(n, FEATURES)), 0.0).astype(np.float32))
    y = tf.constant(np.repeat(np.arange(args.classes), k))
    lines = [
        "# Train-step benchmark: vectorised sampler vs seed-style loop",
        "",
        f"- command: `{args.command}`",
        f"- device: {_device_name()}; TensorFlow {tf.__version__}, Keras {keras.__version__}",
        f"- batch n = {n} ({args.classes} classes x {k}), bits = {args.bits}, "
        f"T = {n * (k - 1)} triplets; head {FEATURES}-1024-512-{args.bits}; Adam(1e-4, 0.5, 0.9)",
        f"- loop graph: {n} categorical ops ({n} x {n} x {k - 1} draws each), "
        f"{3 * n * (k - 1)} scalar slices, {3 * (n * (k - 1) - 1)} growing concats",
        "- graph ops = ops of the traced step (forward, gradient, update) before Grappler's "
        "rewrites, constants, identities and no-ops excluded: without XLA each runs as a "
        "kernel, on a GPU a launch each",
        "- first call = tracing (+ XLA compilation) + first run; it and one warm-up call are "
        "excluded; ms / step is the median of the timed steps, run interleaved across variants "
        "(robust to a shared CPU)",
        "",
    ]
    rows, ops = _train_step_rows(args, x, y)
    lines += _table("Full train step (head forward/backward + sampler + loss + Adam)", rows, ops)
    lines += _ceiling_lines(
        rows, FLOOR_NAME, "full step", "the head's forward/backward plus the Adam update"
    )
    if args.loss_only:
        rows, ops = _loss_only_rows(args, y)
        lines += _table("Sampler + loss only (forward + gradient w.r.t. the scores)", rows, ops)
        lines += _ceiling_lines(rows, LOSS_FLOOR_NAME, "sampler + loss", "calling a tf.function")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--classes", type=int, default=30)
    parser.add_argument("--samples-per-class", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50, help="timed vectorised steps")
    parser.add_argument("--loop-steps", type=int, default=5, help="timed loop steps")
    parser.add_argument(
        "--loss-only",
        action="store_true",
        help="also time sampler + loss alone (a second loop trace: ~1 more minute on 2 CPU cores)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "train_step.md",
        help="Markdown output file",
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command = " ".join(["python bench/bench_train_step.py", *argv])
    for name in ("bits", "classes", "steps", "loop_steps"):
        if getattr(args, name) < 1:
            parser.error(
                f"Received: --{name.replace('_', '-')}={getattr(args, name)}; expected >= 1"
            )
    if args.samples_per_class < 2:
        parser.error(f"Received: --samples-per-class={args.samples_per_class}; expected >= 2")
    if args.classes < 2:
        parser.error(f"Received: --classes={args.classes}; expected >= 2")
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point: prints the table and writes it to ``--out``."""
    args = parse_args(argv)
    report = run(args)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


if __name__ == "__main__":
    main()
