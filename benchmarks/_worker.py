"""One benchmark task in a fresh process: `python _worker.py '<task json>'`.

Tasks (the `"task"` key):

- `peak`: fp32 and bf16 `tf.matmul` GFLOP/s (`"sizes"`).
- `train`: `"system"` in `ours`, `keras_hub`, `torch`; `"jit"`, `"dtype"`,
  `"loss"`, `"steps"`, `"warmup"`. Step times, tokens/s, peak RSS.
- `decode`: `"system"` as in `_keras_systems.decode_function`, or
  `torch_recompute`; `"jit"`, `"dtype"`, `"repeats"`.
- `e2e`: see `_pipelines.run`.
- `paired`: see `_paired.run`.

Prints one `RESULT_MARKER` JSON line (see `_common.emit`). Each task runs in
its own process so thread pools, XLA caches and the peak RSS are its own.
"""

import json
import os
import sys
import time

import _paired
import _pipelines
from _common import CONFIG
from _common import DECODE
from _common import count_tokens
from _common import emit
from _common import peak_rss_mib
from _common import summarize
from _common import time_calls


def task_peak(task):
    """Best GFLOP/s of four chained n x n `tf.matmul`s, fp32 and bf16."""
    import tensorflow as tf

    @tf.function
    def matmuls(a, b):
        for _ in range(4):  # dependent: nothing for grappler to merge
            a = tf.matmul(a, b)
        return tf.reduce_sum(a[:1, :1])

    results = {}
    for dtype in ("float32", "bfloat16"):
        for n in task.get("sizes", (1024, 2048)):
            a = tf.cast(tf.random.normal((n, n)), dtype)
            b = tf.cast(tf.random.normal((n, n), stddev=n**-0.5), dtype)
            matmuls(a, b).numpy()
            times = time_calls(lambda a=a, b=b: matmuls(a, b).numpy(), 5)
            results[f"{dtype}_{n}"] = 4 * 2 * n**3 / min(times) / 1e9
        results[f"{dtype}_gflops"] = max(
            v for k, v in results.items() if k.startswith(dtype + "_")
        )
    return results


def train_step(task, batch):
    """`(step, params)`: one training step of the task's system on `batch`
    (a function returning the loss as a float) and its weight count."""
    if task["system"] == "torch":
        import _torch_system as ts

        ts.setup()
        model = ts.TorchTransformer()  # in training mode
        step = ts.make_train_step(model)
        tensors = ts.torch_batch(batch)
        return lambda: step(*tensors), sum(p.numel() for p in model.parameters())

    import _keras_systems as ks

    model = ks.build_for_training(task)
    x, y = ks.keras_inputs(batch)
    return lambda: float(model.train_on_batch(x, y)), int(model.count_params())


def task_train(task):
    """Steps on the one fixed training batch: first step, warm-up, timed."""
    from _common import training_batch

    batch = training_batch()
    step, params = train_step(task, batch)
    rss_before = peak_rss_mib()
    start = time.perf_counter()
    first_loss = step()
    first_step_s = time.perf_counter() - start
    for _ in range(task["warmup"]):
        step()
    times = time_calls(step, task["steps"])
    tokens = count_tokens(batch["target_out"])
    stats = summarize(times)
    return {
        "source_shape": list(batch["source"].shape),
        "target_shape": list(batch["target_in"].shape),
        "tokens_per_step": tokens,
        "first_step_s": first_step_s,
        "step": stats,
        "tokens_per_s": tokens / stats["median_s"],
        "rss_before_train_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
        "params": params,
        "first_loss": first_loss,
        "last_loss": step(),
    }


def decode_call(task, source):
    """A function of no arguments running one decoding call of the task."""
    if task["system"] == "torch_recompute":
        import _torch_system as ts
        import torch

        ts.setup()
        model = ts.TorchTransformer().eval()
        src = torch.from_numpy(source).long()
        return lambda: ts.greedy_recompute(model, src, DECODE["new_tokens"]).numpy()

    import _keras_systems as ks
    import keras
    import tensorflow as tf

    keras.config.set_dtype_policy(task.get("dtype", "float32"))
    return ks.decode_function(
        task["system"], tf.constant(source), task.get("jit", True)
    )


def task_decode(task):
    """Decoding calls on the fixed source batch: first call, then timed."""
    import numpy as np
    from _common import decode_source

    batch_size, new_tokens = DECODE["batch_size"], DECODE["new_tokens"]
    run = decode_call(task, decode_source())
    start = time.perf_counter()
    ids = run()
    first_call_s = time.perf_counter() - start
    stats = summarize(time_calls(run, task["repeats"]))
    # `generate()` trims the columns that are padding in every row and stops
    # once every row has produced EOS: 64 output columns prove that it ran
    # all 64 steps. The other systems always run them.
    ran_all = not task["system"].startswith("ours") or ids.shape[-1] == new_tokens
    return {
        "output_shape": [int(v) for v in ids.shape],
        "first_call_s": first_call_s,
        "call": stats,
        "tokens_per_s": batch_size * new_tokens / stats["median_s"],
        "ms_per_step": 1000.0 * stats["median_s"] / new_tokens,
        "ms_per_sentence": 1000.0 * stats["median_s"] / batch_size,
        "ran_all_steps": bool(ran_all),
        "eos_in_output": int(np.count_nonzero(ids == CONFIG["eos_id"])),
        "peak_rss_mib": peak_rss_mib(),
    }


TASKS = {
    "peak": task_peak,
    "train": task_train,
    "decode": task_decode,
    "e2e": _pipelines.run,
    "paired": _paired.run,
}


def main():
    """Runs the task given as JSON in `argv[1]` and emits its result."""
    task = json.loads(sys.argv[1])
    start = time.perf_counter()
    result = dict(TASKS[task["task"]](task))
    result.update(task=task, wall_s=time.perf_counter() - start, pid=os.getpid())
    emit(result)


if __name__ == "__main__":
    main()
