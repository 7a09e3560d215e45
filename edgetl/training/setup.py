"""Where training runs: the tf.distribute strategy, the mixed-precision policy, the chief worker.

>>> is_chief.__name__
'is_chief'
"""

from __future__ import annotations

from .._tf import keras, quiet_native_logs, tensorflow


def make_strategy(name: str):
    """Return the tf.distribute strategy for ``name`` (auto: mirrored over >1 GPU, else default)."""
    tf = tensorflow()
    if name == "multi-worker":
        # Collective ops must be configured before TensorFlow starts: no device query before this.
        return tf.distribute.MultiWorkerMirroredStrategy()  # cluster from the TF_CONFIG variable
    with quiet_native_logs():  # the first device query initialises CUDA: "failed call to cuInit" without a GPU
        gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=cpus)
    raise ValueError(f"strategy must be auto, default, mirrored or multi-worker, got {name!r}")


def configure_precision(mode: str) -> str:
    """Set the Keras mixed-precision policy for ``mode`` and return the policy name used."""
    tf = tensorflow()
    policy = "float32"
    if mode == "on":
        policy = "mixed_float16"
    elif mode == "bfloat16":
        # bfloat16 keeps float32's exponent range (no loss scaling); CPUs with AVX512-BF16/AMX and TPUs
        # run it natively. On this project's 2-core Xeon (AMX) it was slower than float32: see BENCHMARKS.md.
        policy = "mixed_bfloat16"
    elif mode == "auto":
        with quiet_native_logs():
            gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            capability = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
            if capability and capability[0] >= 7:
                policy = "mixed_float16"
    elif mode != "off":
        raise ValueError(f"mixed_precision must be auto, on, bfloat16 or off, got {mode!r}")
    keras().mixed_precision.set_global_policy(policy)
    return policy


def is_chief(strategy) -> bool:
    """Return True unless ``strategy`` is multi-worker and this process is not its chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker" and resolver.task_id == 0)
