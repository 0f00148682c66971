"""The issue's ratios measured paired: the systems interleaved in one process.

`compare.py` runs each system in its own process, minutes apart, and a
shared VM's speed drifts by 20-40% over minutes. Here the systems of one
ratio are built in one process and warmed up, then called once each per
round, the order rotated every round. Each ratio is `time of a / time of b`
for its pair `(a, b)` (above 1: `b` is faster), both as the ratio of the
median times (`by_medians`) and as the median of the per-round ratios
(`per_round`), which cancels most of the drift. `run(task)` is the `paired`
task of `_worker.py`; `task["kind"]` is `decode`, `train` or `e2e`.
"""

import statistics
import time

from _common import DECODE
from _common import corpus
from _common import count_tokens

DECODE_RATIOS = {
    "greedy: keras-hub cached / ours": ("keras_hub_cached", "ours_greedy"),
    "beam 4 / greedy per sentence": ("ours_beam", "ours_greedy"),
    "keras-hub cached / floor 16 rows": ("keras_hub_cached", "floor_greedy"),
    "floor 64 rows / floor 16 rows": ("floor_beam", "floor_greedy"),
    "ours greedy / floor 16 rows": ("ours_greedy", "floor_greedy"),
    "ours beam 4 / floor 64 rows": ("ours_beam", "floor_beam"),
}
TRAIN_RATIOS = {"training, keras-hub XLA / ours XLA": ("keras_hub", "ours")}
E2E_RATIOS = {
    "end to end, keras-hub / ours buckets": ("keras_hub_padded", "ours_data"),
    "end to end, keras-hub / ours buckets + our loss": (
        "keras_hub_padded",
        "ours_data_our_loss",
    ),
}


def interleave(functions, rounds):
    """Calls each function once per round, rotating the order every round.

    Returns `{name: [seconds per round]}`.
    """
    names = list(functions)
    times = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            functions[name]()
            times[name].append(time.perf_counter() - start)
    return times


def ratios(times, pairs):
    """`{name: {"by_medians", "per_round"}}` of `times[a] / times[b]` for
    each `name: (a, b)` of `pairs`."""
    return {
        name: {
            "by_medians": statistics.median(times[a]) / statistics.median(times[b]),
            "per_round": statistics.median(x / y for x, y in zip(times[a], times[b])),
        }
        for name, (a, b) in pairs.items()
    }


def paired_decode(rounds):
    """Decoding calls of the five systems, interleaved."""
    import _keras_systems as ks
    import tensorflow as tf
    from _common import decode_source

    source = tf.constant(decode_source())
    functions = {}
    for system in sorted({name for pair in DECODE_RATIOS.values() for name in pair}):
        functions[system] = ks.decode_function(system, source)
        functions[system]()  # traces and compiles
    times = interleave(functions, rounds)
    ms_per_step = {
        name: 1000 * statistics.median(t) / DECODE["new_tokens"]
        for name, t in times.items()
    }
    return {
        "times_s": times,
        "ms_per_step": ms_per_step,
        "ratios": ratios(times, DECODE_RATIOS),
    }


def paired_train(rounds):
    """XLA training steps of ours and keras-hub, interleaved step by step."""
    import _keras_systems as ks
    from _common import training_batch

    batch = training_batch()
    x, y = ks.keras_inputs(batch)
    functions = {}
    for name in ("ours", "keras_hub"):
        model = ks.build_for_training({"system": name, "jit": True})
        for _ in range(3):  # compile, warm up
            model.train_on_batch(x, y)
        functions[name] = lambda model=model: model.train_on_batch(x, y)
    times = interleave(functions, rounds * 2)
    tokens = count_tokens(batch["target_out"])
    return {
        "times_s": times,
        "tokens_per_s": {n: tokens / statistics.median(t) for n, t in times.items()},
        "ratios": ratios(times, TRAIN_RATIOS),
    }


def paired_e2e(rounds, batches=16):
    """`batches` steps per round of each end-to-end system, interleaved.

    Graph mode, endless streams as in `compare.py`, one untimed round each
    first (tracing). Each round's time is scaled to the median real target
    tokens of ours' rounds (each system's batches hold different tokens).
    """
    import _pipelines

    pairs = corpus(batches)
    systems = {
        "ours_data": ("ours_data", "keras"),
        "ours_data_our_loss": ("ours_data", "ours"),
        "ours_padded": ("ours_padded", "keras"),
        "keras_hub_padded": ("keras_hub", "keras"),
    }
    functions, times, tokens = {}, {}, {}
    for name, (system, loss) in systems.items():
        task = {"system": system, "jit": False, "loss": loss}
        model, dataset, counter = _pipelines.keras_stream(task, pairs)
        _pipelines.fit_epochs(model, dataset, 1, counter, batches)  # traces
        times[name], tokens[name] = [], []

        def steps(model=model, dataset=dataset, counter=counter, name=name):
            seconds, counted = _pipelines.fit_epochs(
                model, dataset, 1, counter, batches
            )
            times[name].append(seconds[0])
            tokens[name].append(counted[0])

        functions[name] = steps
    interleave(functions, rounds)
    per_round = statistics.median(tokens["ours_data"])
    scaled = {
        name: [t * per_round / n for t, n in zip(times[name], tokens[name])]
        for name in times
    }
    return {
        "times_s": scaled,
        "raw_times_s": times,
        "tokens": tokens,
        "tokens_per_s": {
            name: per_round / statistics.median(t) for name, t in scaled.items()
        },
        "ratios": ratios(scaled, E2E_RATIOS),
    }


def run(task):
    """The `paired` task: `task["kind"]` in decode, train, e2e; `"rounds"`."""
    kinds = {"decode": paired_decode, "train": paired_train, "e2e": paired_e2e}
    result = kinds[task["kind"]](task["rounds"])
    result["rounds"] = len(next(iter(result["times_s"].values())))
    return result
