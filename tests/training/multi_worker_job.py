"""One training process of the multi-worker tests (a worker, or the single-process reference).

Usage: ``python -m tests.training.multi_worker_job SPEC_JSON``, where the JSON holds
``overrides`` (config), ``data`` (a .npz of ``x``/``y`` features, or ``paths``/``y``),
``val`` (number of validation rows taken from the end), ``out`` (a .npz written with the
selected model's weights and the history), and optionally:

* ``logical_cpus``: the mirrored reference's replica count;
* ``graph_optimizer``: ``false`` turns TensorFlow's Grappler graph optimizer off (see
  ``test_end_to_end_two_workers``);
* ``stall_after_epoch``: after that epoch this worker writes the time and its process id to
  ``<out>.stalled`` and sleeps, so that the test can kill it mid-run.

``TF_CONFIG`` comes from the environment.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(spec_text: str) -> int:
    spec = json.loads(spec_text)
    import tensorflow as tf

    if spec.get("logical_cpus", 1) > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * spec["logical_cpus"]
        )
    tf.config.threading.set_inter_op_parallelism_threads(2)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    if not spec.get("graph_optimizer", True):
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    import keras
    import numpy as np

    from hpsh_tf2.config import load_config
    from hpsh_tf2.dataset import subset_inputs
    from hpsh_tf2.training import fit as fit_module
    from hpsh_tf2.training.distributed import start_multi_worker

    config = load_config(None, spec["overrides"])
    start_multi_worker(config)  # before TensorFlow runs anything
    data = np.load(spec["data"])
    labels = data["y"]
    if "x" in data:
        rows = {"features": data["x"]}
    else:
        rows = {"paths": [str(p) for p in data["paths"]]}
    n_train = len(labels) - spec["val"]

    def subset(part):
        return subset_inputs(labels[part], **{k: v[part] for k, v in rows.items()})

    train, val = subset(slice(0, n_train)), subset(slice(n_train, None))
    stall = spec.get("stall_after_epoch")
    if stall is not None:
        build = fit_module.build_callbacks

        class Stall(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch + 1 == stall:
                    with open(spec["out"] + ".stalled", "w") as handle:
                        handle.write(f"{time.time()} {os.getpid()}")
                    time.sleep(600)

        fit_module.build_callbacks = lambda *a, **k: [*build(*a, **k), Stall()]
    result = fit_module.fit_hash_model(config, train_inputs=train, val_inputs=val, verbose=0)
    weights = []
    if result.hash_model_path.is_file():  # the chief (the other workers get their own workdir)
        path = result.image_model_path or result.hash_model_path
        weights = keras.saving.load_model(path).get_weights()
    np.savez(
        spec["out"],
        **{f"w{i}": w for i, w in enumerate(weights)},
        history=json.dumps(result.history),
        selected_epoch=result.selected_epoch,
        selection=result.selection,
        best=np.nan if result.best_val_map is None else result.best_val_map,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
