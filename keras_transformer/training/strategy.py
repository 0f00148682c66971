"""Picking a `tf.distribute` strategy: TPU, mirrored GPUs, multi-worker, default.

Every failure is fast and explicit: asking for a TPU on a machine without one
raises a `RuntimeError` at once instead of waiting on a cloud
metadata server or a gRPC connection.
"""

import glob
import json
import os
import socket
import warnings

STRATEGY_NAMES = ("auto", "tpu", "mirrored", "multiworker", "default")

# Environment variables set on Cloud TPU VMs, TPU pods and Colab/Kaggle TPUs.
TPU_ENVIRONMENT_VARIABLES = (
    "TPU_NAME",
    "TPU_ACCELERATOR_TYPE",
    "TPU_WORKER_ID",
    "TPU_WORKER_HOSTNAMES",
    "COLAB_TPU_ADDR",
    "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS",
    "TPU_CONFIG",
)

# Seconds allowed to reach a remote TPU worker or the GCE metadata server.
CONNECT_TIMEOUT = 10.0


def local_tpu_evidence():
    """Why this machine looks like it has a TPU, or `None`.

    Checks, without touching TensorFlow or the network: TPU device files
    (`/dev/accel*` on TPU v2-v4 VMs, numbered `/dev/vfio/*` groups on v5e and
    later) and the environment variables of `TPU_ENVIRONMENT_VARIABLES`.

    Returns:
        A short string naming the evidence found, or `None`.
    """
    accel = sorted(glob.glob("/dev/accel*"))
    if accel:
        return f"device files {accel}"
    vfio = sorted(p for p in glob.glob("/dev/vfio/*") if os.path.basename(p).isdigit())
    if vfio:
        return f"device files {vfio}"
    found = [name for name in TPU_ENVIRONMENT_VARIABLES if os.environ.get(name)]
    if found:
        return f"environment variables {found}"
    return None


class _SocketTimeout:
    """Bounds blocking socket calls (e.g. `urlopen` without a timeout)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        self._previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(self.seconds)

    def __exit__(self, *exc_info):
        socket.setdefaulttimeout(self._previous)


def _check_reachable(address):
    """Raises `RuntimeError` unless `grpc://host:port` accepts a TCP connection."""
    host_port = address[len("grpc://") :].split(",")[0]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            "A TPU gRPC address must look like `grpc://host:port`. "
            f"Received: tpu={address!r}"
        )
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as error:
        raise RuntimeError(
            f"Cannot reach the TPU worker at {address} within {CONNECT_TIMEOUT:g} s "
            f"({error})."
        ) from error


def _tpu_strategy(tpu):
    import tensorflow as tf

    target = tpu or "local"
    if target == "local":
        evidence = local_tpu_evidence()
        if evidence is None:
            raise RuntimeError(
                "No TPU found on this machine: no /dev/accel* or /dev/vfio/<n> "
                "device files and none of the environment variables "
                f"{list(TPU_ENVIRONMENT_VARIABLES)} are set. Run on a Cloud TPU "
                "VM, pass `tpu=` the name or `grpc://` address of a remote TPU, "
                "or use `get_strategy('auto')` to fall back to GPUs or the CPU."
            )
    elif target.startswith("grpc://"):
        _check_reachable(target)
    try:
        # A TPU *name* is resolved through the GCE metadata server and the
        # Cloud TPU API (in the resolver and in `cluster_spec()`, called by
        # `connect`) with Python HTTP calls that have no timeout of their own.
        with _SocketTimeout(CONNECT_TIMEOUT):
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=target)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
    except (OSError, ValueError, RuntimeError, tf.errors.OpError) as error:
        raise RuntimeError(
            f"Could not initialize the TPU system for tpu={target!r}: "
            f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]} "
            "(on a TPU VM, TensorFlow needs the TPU build: `pip install "
            "tensorflow-tpu` with the matching libtpu)."
        ) from error
    return tf.distribute.TPUStrategy(resolver)


def _device_key(name):
    import tensorflow as tf

    spec = tf.DeviceSpec.from_string(name)
    return (spec.device_type or "").upper(), spec.device_index


def _mirrored_strategy(devices):
    import tensorflow as tf

    if devices is not None:
        if isinstance(devices, str) or not devices:
            raise ValueError(
                "`devices` must be a non-empty list of device names such as "
                f'["/gpu:0", "/gpu:1"]. Received: devices={devices!r}'
            )
        available = {
            _device_key(device.name): device.name
            for device in tf.config.list_logical_devices()
        }
        missing = [name for name in devices if _device_key(name) not in available]
        if missing:
            raise ValueError(
                f"Unknown devices {missing}. Available logical devices: "
                f"{sorted(available.values())}. (Several logical CPUs must be "
                "configured with `tf.config.set_logical_device_configuration` "
                "before TensorFlow initializes.)"
            )
        return tf.distribute.MirroredStrategy(devices=list(devices))
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy(devices=[gpu.name for gpu in gpus])
    # No GPU: one replica on the CPU.
    return tf.distribute.MirroredStrategy()


def _multiworker_strategy():
    import tensorflow as tf

    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError(
            "`get_strategy('multiworker')` needs the `TF_CONFIG` environment "
            "variable, set before the strategy is created, e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}. Received: TF_CONFIG unset.'
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"`TF_CONFIG` is not valid JSON ({error}). Received: TF_CONFIG={raw!r}"
        ) from error
    if (
        not isinstance(config, dict)
        or not isinstance(config.get("cluster"), dict)
        or not isinstance(config.get("task"), dict)
    ):
        raise ValueError(
            '`TF_CONFIG` must be a JSON object with a "cluster" object and a '
            f'"task" object. Received: TF_CONFIG={raw!r}'
        )
    workers = sum(len(v) for k, v in config["cluster"].items() if k != "evaluator")
    if workers > 1:
        warnings.warn(
            "`model.fit` under a MultiWorkerMirroredStrategy with more than one "
            "worker fails in Keras 3 with TensorFlow 2.21 "
            "(https://github.com/keras-team/keras/issues/20585); train with "
            "`keras_transformer.training.fit_custom_loop` instead (the same "
            "compiled model, loss, schedule and metrics, in a `strategy.run` "
            "loop with resumable checkpoints).",
            stacklevel=3,
        )
    return tf.distribute.MultiWorkerMirroredStrategy()


def get_strategy(name="auto", tpu=None, devices=None):
    """Returns a `tf.distribute.Strategy` by name.

    - `"tpu"`: connects to a TPU with
      `tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "local")`,
      `tf.config.experimental_connect_to_cluster` and
      `tf.tpu.experimental.initialize_tpu_system`, and returns a
      `tf.distribute.TPUStrategy`. For a local TPU (`tpu=None` or `"local"`) it
      first looks for TPU device files or TPU environment variables (see
      `local_tpu_evidence`) and, without any, raises `RuntimeError` at once,
      before TensorFlow or the network is touched. A `grpc://host:port`
      address must accept a TCP connection within `CONNECT_TIMEOUT` seconds
      (otherwise TensorFlow would retry for minutes). A TPU name is resolved
      through the GCE metadata server, with the same socket timeout. Any
      initialization failure is re-raised as `RuntimeError`.
    - `"mirrored"`: `tf.distribute.MirroredStrategy` over `devices` (checked
      against the logical devices) or, by default, all local GPUs (one CPU
      replica without a GPU).
    - `"multiworker"`: `tf.distribute.MultiWorkerMirroredStrategy` from the
      `TF_CONFIG` environment variable; `ValueError` if it is missing or
      malformed. Create it at program start, before other TensorFlow ops.
      Note: Keras 3 `model.fit` does not work under a multi-worker cluster with
      TensorFlow 2.21 (keras-team/keras#20585); a warning says so. Train with
      `keras_transformer.training.fit_custom_loop` there.
    - `"default"`: `tf.distribute.get_strategy()`, the no-op default strategy.
    - `"auto"`: a TPU when `local_tpu_evidence()` finds one (or `tpu` is
      given) and it initializes (otherwise a warning and the next choice),
      else `MirroredStrategy` when there is more than one GPU, else the
      default strategy.

    Args:
        name: str, one of `"auto"`, `"tpu"`, `"mirrored"`, `"multiworker"`,
            `"default"` (case-insensitive). Defaults to `"auto"`.
        tpu: str or `None`, the TPU name, `grpc://` address or `"local"`, for
            `"tpu"` and `"auto"`. Defaults to `None` (a local TPU).
        devices: list of device names for `"mirrored"`, e.g.
            `["/gpu:0", "/gpu:1"]` or `["/cpu:0", "/cpu:1"]`. Defaults to
            `None` (all GPUs).

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: for an unknown `name`, bad `devices` or a missing or
            malformed `TF_CONFIG`.
        RuntimeError: when `"tpu"` finds no TPU or cannot initialize it.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_transformer.training import get_strategy

    strategy = get_strategy("auto")  # a TPU, GPUs, or the default strategy
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
    model.fit(np.random.rand(64, 4), np.random.rand(64, 1), verbose=0)
    print(strategy.num_replicas_in_sync)
    ```
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in STRATEGY_NAMES:
        raise ValueError(
            f"Unknown strategy name. Expected one of {list(STRATEGY_NAMES)}. "
            f"Received: name={name!r}"
        )
    if devices is not None and key != "mirrored":
        raise ValueError(
            "`devices` only applies to the 'mirrored' strategy. "
            f"Received: name={name!r}, devices={devices!r}"
        )
    if key == "tpu":
        return _tpu_strategy(tpu)
    if key == "mirrored":
        return _mirrored_strategy(devices)
    if key == "multiworker":
        return _multiworker_strategy()

    import tensorflow as tf

    if key == "auto":
        if tpu is not None or local_tpu_evidence() is not None:
            try:
                return _tpu_strategy(tpu)
            except RuntimeError as error:
                warnings.warn(f"Not using a TPU: {error}", RuntimeWarning, stacklevel=2)
        if len(tf.config.list_logical_devices("GPU")) > 1:
            return _mirrored_strategy(None)
    return tf.distribute.get_strategy()
