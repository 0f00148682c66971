"""One benchmark task in a fresh process: `python _worker.py '<task json>'`.

Tasks (the `"task"` key):

- `peak`: fp32 and bf16 `tf.matmul` GFLOP/s.
- `train`: `"system"` in `ours`, `keras_hub`, `torch`; `"jit"`, `"dtype"`;
  `"steps"`, `"warmup"`. Reports step times, tokens/s and peak RSS.
- `decode`: `"system"` in `ours_greedy`, `ours_beam`, `keras_hub_cached`,
  `keras_hub_recompute`, `torch_recompute`; `"repeats"`.
- `e2e`: `"system"` in `ours_data`, `ours_padded`, `keras_hub`, `torch`;
  `"batches"`, `"epochs"`, `"jit"`.

Prints one `RESULT_MARKER` JSON line (see `_common.emit`). Each task runs in
its own process so thread pools, XLA caches and the peak RSS are its own.
"""

import json
import os
import sys
import time

from _common import CONFIG
from _common import DECODE
from _common import count_tokens
from _common import emit
from _common import peak_rss_mib
from _common import summarize
from _common import time_calls

# ---------------------------------------------------------------------------
# Peak matmul throughput.


def task_peak(task):
    import tensorflow as tf

    results = {}
    for dtype in ("float32", "bfloat16"):
        best = 0.0
        for n in task.get("sizes", (1024, 2048)):
            a = tf.random.normal((n, n), dtype=tf.float32)
            b = tf.random.normal((n, n), stddev=n**-0.5, dtype=tf.float32)
            a, b = tf.cast(a, dtype), tf.cast(b, dtype)
            chain = 4

            # A chain of dependent matmuls: nothing for grappler to merge.
            @tf.function
            def matmuls(a, b, chain=chain):
                for _ in range(chain):
                    a = tf.matmul(a, b)
                return tf.reduce_sum(a[:1, :1])

            matmuls(a, b).numpy()
            times = time_calls(lambda a=a, b=b, f=matmuls: f(a, b).numpy(), 5)
            gflops = chain * 2 * n**3 / min(times) / 1e9
            results[f"{dtype}_{n}"] = gflops
            best = max(best, gflops)
        results[f"{dtype}_gflops"] = best
    return results


# ---------------------------------------------------------------------------
# Training throughput on one fixed batch.


def _training_result(batch, times, rss_before, compile_s, extra=None):
    tokens = count_tokens(batch["target_out"])
    stats = summarize(times)
    result = {
        "source_shape": list(batch["source"].shape),
        "target_shape": list(batch["target_in"].shape),
        "tokens_per_step": tokens,
        "first_step_s": compile_s,
        "step": stats,
        "tokens_per_s": tokens / stats["median_s"],
        "tokens_per_s_mean": tokens * stats["n"] / sum(times),
        "rss_before_train_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
    }
    result.update(extra or {})
    return result


def task_train(task):
    from _common import training_batch

    batch = training_batch()
    system = task["system"]
    steps, warmup = task["steps"], task["warmup"]
    if system == "torch":
        import _torch_system as ts

        ts.setup(threads=task.get("threads", 2))
        model = ts.TorchTransformer()
        model.train()
        step = ts.make_train_step(model)
        tensors = ts.torch_batch(batch)
        rss_before = peak_rss_mib()
        start = time.perf_counter()
        loss = step(*tensors)
        compile_s = time.perf_counter() - start
        for _ in range(warmup):
            step(*tensors)
        times = time_calls(lambda: step(*tensors), steps)
        params = sum(p.numel() for p in model.parameters())
        return _training_result(
            batch,
            times,
            rss_before,
            compile_s,
            {"params": params, "first_loss": loss, "last_loss": step(*tensors)},
        )

    import _keras_systems as ks

    ks.set_policy(task.get("dtype", "float32"))
    if system == "ours":
        model = ks.build_ours()
    elif system == "keras_hub":
        model = ks.build_keras_hub()
    else:
        raise ValueError(system)
    ks.compile_for_training(model, task["jit"], loss=task.get("loss", "keras"))
    x, y = ks.keras_inputs(batch)
    rss_before = peak_rss_mib()
    start = time.perf_counter()
    loss = float(model.train_on_batch(x, y))
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        model.train_on_batch(x, y)
    times = time_calls(lambda: model.train_on_batch(x, y), steps)
    return _training_result(
        batch,
        times,
        rss_before,
        compile_s,
        {
            "params": int(model.count_params()),
            "first_loss": loss,
            "last_loss": float(model.train_on_batch(x, y)),
        },
    )


# ---------------------------------------------------------------------------
# Decoding.


def _decode_result(times, compile_s, ids, batch_size, new_tokens, extra=None):
    stats = summarize(times)
    result = {
        "batch_size": batch_size,
        "new_tokens": new_tokens,
        "output_shape": [int(v) for v in ids.shape],
        "first_call_s": compile_s,
        "call": stats,
        "tokens_per_s": batch_size * new_tokens / stats["median_s"],
        "ms_per_step": 1000.0 * stats["median_s"] / new_tokens,
        "ms_per_sentence": 1000.0 * stats["median_s"] / batch_size,
        "peak_rss_mib": peak_rss_mib(),
    }
    result.update(extra or {})
    return result


def task_decode(task):
    from _common import decode_source

    system = task["system"]
    repeats = task["repeats"]
    source = decode_source()
    batch_size, new_tokens = DECODE["batch_size"], DECODE["new_tokens"]
    eos = CONFIG["eos_id"]

    if system == "torch_recompute":
        import _torch_system as ts
        import torch

        ts.setup(threads=task.get("threads", 2))
        model = ts.TorchTransformer().eval()
        src = torch.from_numpy(source).long()

        def run():
            return ts.greedy_recompute(model, src, new_tokens)

        start = time.perf_counter()
        ids = run()
        compile_s = time.perf_counter() - start
        times = time_calls(run, repeats)
        return _decode_result(times, compile_s, ids, batch_size, new_tokens)

    import _keras_systems as ks
    import numpy as np
    import tensorflow as tf

    ks.set_policy(task.get("dtype", "float32"))
    src = tf.constant(source)
    extra = {}
    if system in ("floor_greedy", "floor_beam"):
        beam = DECODE["beam_size"] if system == "floor_beam" else 1
        run = ks.matmul_floor(ks.build_ours(), batch_size * beam, new_tokens)
        start = time.perf_counter()
        ids = run()  # not ids: one float per row, for the shape check only
        compile_s = time.perf_counter() - start
        extra = {"rows": batch_size * beam, "ran_all_steps": True}
    elif system in ("ours_greedy", "ours_beam"):
        model = ks.build_ours()
        beam = DECODE["beam_size"] if system == "ours_beam" else 1
        jit = task.get("jit", True)

        def run():
            return model.generate(
                src, max_length=new_tokens, beam_size=beam, jit_compile=jit
            ).numpy()

        start = time.perf_counter()
        ids = run()
        compile_s = time.perf_counter() - start
        # generate() trims columns that are padding in every row and stops
        # when every row has produced EOS: 64 output columns means the loop
        # ran all 64 steps (for beam search, the best hypothesis is 64 long).
        extra = {
            "beam_size": beam,
            "jit": jit,
            "ran_all_steps": int(ids.shape[-1]) == new_tokens,
            "eos_in_output": int(np.count_nonzero(ids == eos)),
        }
    else:
        model = ks.build_keras_hub()
        if system == "keras_hub_cached":
            fn = tf.function(
                lambda s: ks.keras_hub_greedy_cached(model, s, new_tokens),
                jit_compile=task.get("jit", True),
                autograph=False,
            )
        elif system == "keras_hub_recompute":
            fn = tf.function(
                lambda s: ks.keras_hub_greedy_recompute(model, s, new_tokens),
                jit_compile=False,
                autograph=False,
            )
        else:
            raise ValueError(system)

        def run():
            return fn(src).numpy()

        start = time.perf_counter()
        ids = run()
        compile_s = time.perf_counter() - start
        extra = {"ran_all_steps": True, "eos_in_output": int(np.sum(ids == eos))}
    times = time_calls(run, repeats)
    return _decode_result(times, compile_s, ids, batch_size, new_tokens, extra)


# ---------------------------------------------------------------------------
# End-to-end training with each system's own input pipeline.


def task_e2e(task):
    import _pipelines

    return _pipelines.run(task)


TASKS = {
    "peak": task_peak,
    "train": task_train,
    "decode": task_decode,
    "e2e": task_e2e,
}


def main():
    task = json.loads(sys.argv[1])
    start = time.perf_counter()
    result = TASKS[task["task"]](task)
    result = dict(result)
    result["task"] = task
    result["wall_s"] = time.perf_counter() - start
    result["pid"] = os.getpid()
    emit(result)


if __name__ == "__main__":
    main()
