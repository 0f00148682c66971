"""Benchmark keras-transformer against keras-hub and torch.nn.Transformer.

    python benchmarks/compare.py [--quick] [--output results.json]

Configuration "base-small" (see `_common.CONFIG`). Every measurement runs in
its own subprocess (`_worker.py`), one after the other, so thread pools, XLA
caches and peak RSS are per system. Prints tables, the issue's ratios with
their targets, and writes everything to JSON. See benchmarks/README.md.
"""

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import CONFIG  # noqa: E402
from _common import DECODE  # noqa: E402
from _common import RESULT_MARKER  # noqa: E402
from _common import forward_flops  # noqa: E402
from _common import parameter_counts  # noqa: E402
from _common import train_flops  # noqa: E402

TARGETS = {
    "train_vs_keras_hub_xla": (">=", 1.25),
    "train_vs_torch": (">=", 1.5),
    "greedy_vs_keras_hub_cached_xla": (">=", 2.0),
    "beam4_vs_greedy_per_sentence": ("<=", 3.0),
    "e2e_own_pipeline_vs_keras_hub": (">=", 1.5),
}

FLOP_FORMULA = (
    "training FLOPs/step = 3 x forward matmul FLOPs on the padded batch "
    "(B, S, T): forward = 2*B*[L*S*(4d^2 + 2*d*d_ff) + L*T*(6d^2 + 2*d*d_ff) "
    "+ L*S*2d^2 + T*d*V] + 4*B*d*L*(S^2 + T^2 + T*S); i.e. 6 x "
    "(non-embedding weights x the tokens they see + tied output d*V x T "
    "tokens) + attention terms. Embedding gathers, norms, softmax, biases: "
    "not counted. MFU = FLOPs/step / median step time / measured tf.matmul "
    "peak of the same dtype."
)


def plan(quick, e2e_jit, rounds=1, e2e_stream=True):
    """The ordered task list: (section, label, task dict).

    With `rounds > 1` the training and decoding tasks are repeated
    round-robin (the best round is kept), so a burst of load from other
    processes does not land on one system only. `e2e_stream`: the end-to-end
    runs train on one endless stream (see `_pipelines`), else one pass per
    epoch.
    """
    steps, warmup = (2, 0) if quick else (20, 3)
    repeats = 2 if quick else 5
    sizes = [1024] if quick else [1024, 2048]
    tasks = [("peak", "tf.matmul peak", {"task": "peak", "sizes": sizes})]

    def train(label, system, jit=True, dtype="float32", loss="keras"):
        task = {
            "task": "train",
            "system": system,
            "jit": jit,
            "dtype": dtype,
            "steps": steps,
            "warmup": warmup,
            "loss": loss,
        }
        tasks.append(("train", label, task))

    train("ours XLA fp32", "ours", True)
    train("keras-hub XLA fp32", "keras_hub", True)
    train("torch fp32", "torch", False)
    if not quick:
        train("ours XLA bf16", "ours", True, "mixed_bfloat16")
        train("ours graph fp32", "ours", False)
        train("ours graph bf16", "ours", False, "mixed_bfloat16")
        train("keras-hub graph fp32", "keras_hub", False)
        # The library's own loss, same objective (see _keras_systems).
        train("ours XLA fp32, our loss", "ours", True, loss="ours")
        train("ours graph fp32, our loss", "ours", False, loss="ours")

    def decode(label, system, jit=True, n=repeats, dtype="float32"):
        task = {
            "task": "decode",
            "system": system,
            "jit": jit,
            "repeats": n,
            "dtype": dtype,
        }
        tasks.append(("decode", label, task))

    decode("ours greedy (cache, XLA)", "ours_greedy")
    decode("ours beam 4 (cache, XLA)", "ours_beam")
    decode("keras-hub greedy (caches, XLA)", "keras_hub_cached")
    decode("floor: ours' step matmuls only, 16 rows (XLA)", "floor_greedy")
    decode("floor: ours' step matmuls only, 64 rows (XLA)", "floor_beam")
    if not quick:
        decode("ours greedy (cache, graph)", "ours_greedy", jit=False)
        decode("keras-hub greedy (recompute, graph)", "keras_hub_recompute", n=2)
        decode("torch greedy (recompute, eager)", "torch_recompute", n=2)
        # bf16 for both (no target): does the CPU's bf16 move the greedy
        # ratio? (XLA:CPU upcasts bf16 dots to f32; see benchmarks/README.md.)
        for dtype in ("mixed_bfloat16", "bfloat16"):
            decode(f"ours greedy (cache, XLA, {dtype})", "ours_greedy", dtype=dtype)
            decode(
                f"keras-hub greedy (caches, XLA, {dtype})",
                "keras_hub_cached",
                dtype=dtype,
            )

    if quick:
        # What the ratios need first: the time budget skips from the end, and
        # torch is the system that suffers most on a loaded machine.
        order = [
            "tf.matmul peak",
            "ours XLA fp32",
            "keras-hub XLA fp32",
            "ours greedy (cache, XLA)",
            "keras-hub greedy (caches, XLA)",
            "ours beam 4 (cache, XLA)",
            "torch fp32",
        ]
        tasks.sort(key=lambda t: order.index(t[1]) if t[1] in order else len(order))
    repeated = [t for t in tasks if t[0] in ("train", "decode")]
    tasks += [t for _ in range(rounds - 1) for t in repeated]

    batches, epochs = (2, 1) if quick else (16, 4)

    def e2e(label, system, jit=e2e_jit, **extra):
        task = {
            "task": "e2e",
            "system": system,
            "batches": batches,
            "epochs": epochs,
            "jit": jit,
            "stream": e2e_stream,
            **extra,
        }
        tasks.append(("e2e", label, task))

    e2e("ours (keras_transformer.data buckets)", "ours_data")
    if not quick:
        # The same with the library's own loss on the same objective.
        e2e("ours (buckets, our loss)", "ours_data", loss="ours")
        # Token-based batches (the paper's): the same padded-token budget
        # per batch as 32 x 64, more sentences in the short buckets.
        e2e(
            "ours (buckets, batch_tokens=2048)",
            "ours_data",
            batch_tokens=CONFIG["batch_size"] * CONFIG["max_length"],
        )
        # The same with four bucket lengths per octave instead of two
        # (`keras_transformer.data.FINE_BOUNDARIES`): less padding, more
        # shapes (free without XLA).
        e2e(
            "ours (buckets, batch_tokens=2048, FINE_BOUNDARIES)",
            "ours_data",
            batch_tokens=CONFIG["batch_size"] * CONFIG["max_length"],
            bucket_boundaries="fine",
        )
        # The trainer's default on one CPU (fp32): XLA, with the pipeline
        # settings that keep the shapes few (one compile each).
        e2e(
            "ours (buckets, static shapes, XLA: trainer default)",
            "ours_data",
            jit=True,
            static_shapes=True,
        )
        e2e("ours (stand-in: padded tf.data)", "ours_padded")
        e2e("keras-hub (padded tf.data, fit)", "keras_hub")
        e2e("torch (DataLoader, pad collate)", "torch")

    # The ratios again, each measured paired in one process
    # (interleaved calls cancel the load drift between separate processes;
    # see experiments.py): decoding always, training and end to end unless
    # quick.
    paired = [("decode", 3 if quick else 9)]
    if not quick:
        paired += [("train", 4), ("e2e", 3)]
    for kind, paired_rounds in paired:
        task = {"task": "paired", "kind": kind, "rounds": paired_rounds}
        tasks.append(("paired", f"{kind}, paired in one process", task))
    return tasks


def run_task(task, log_path, timeout):
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("PYTHONWARNINGS", "ignore")
    command = [sys.executable, str(HERE / "_worker.py"), json.dumps(task)]
    if task["task"] == "paired":
        # experiments.py's child for this kind, the library as it is (no
        # variants) against its peer: decode (greedy, beam 4, keras-hub
        # cached, the matmul floors), train (ours and keras-hub XLA, step by
        # step) or e2e (16 steps each per round from endless streams).
        command = [
            sys.executable,
            str(HERE / "experiments.py"),
            "--child",
            task["kind"],
            "--variants",
            "baseline",
            "--rounds",
            str(task["rounds"]),
        ]
    load_before = os.getloadavg()
    start = time.perf_counter()
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run(
                command,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                timeout=timeout,
                env=env,
                cwd=str(HERE),
            )
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "timeout_s": timeout}
    elapsed = time.perf_counter() - start
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER) :])
            result.setdefault("status", "ok")
            result["process_s"] = elapsed
            result["loadavg_1m_before"] = load_before[0]
            result["loadavg_1m_after"] = os.getloadavg()[0]
            return result
    tail = Path(log_path).read_text()[-2000:]
    return {"status": "error", "returncode": proc.returncode, "log_tail": tail}


def keep_best(rows, result):
    """Adds `result`, or keeps the better of it and an earlier round's."""
    for index, row in enumerate(rows):
        if row["label"] != result["label"]:
            continue
        history = row.pop("rounds_tokens_per_s", [row.get("tokens_per_s")])
        history.append(result.get("tokens_per_s"))
        if result.get("status") == "ok" and (
            row.get("status") != "ok" or result["tokens_per_s"] > row["tokens_per_s"]
        ):
            row = result
        row["rounds_tokens_per_s"] = history
        rows[index] = row
        return
    rows.append(result)


def versions():
    out = {"python": platform.python_version()}
    for name in ("tensorflow", "keras", "keras-hub", "torch", "keras-transformer"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


# ---------------------------------------------------------------------------
# Derived numbers and printing.


def add_mfu(results, peak):
    for row in results["train"]:
        if row.get("status") != "ok":
            continue
        batch, source_len = row["source_shape"]
        target_len = row["target_shape"][1]
        flops = train_flops(batch, source_len, target_len)
        row["train_flops_per_step"] = flops
        row["achieved_gflops"] = flops / row["step"]["median_s"] / 1e9
        key = "bfloat16_gflops" if "bfloat16" in row["task"]["dtype"] else None
        key = key or "float32_gflops"
        if peak and peak.get(key):
            row["peak_gflops"] = peak[key]
            row["mfu"] = row["achieved_gflops"] / peak[key]


def find(rows, label):
    for row in rows:
        if row.get("label") == label and row.get("status") == "ok":
            return row
    return None


def compute_ratios(results):
    train, decode, e2e = results["train"], results["decode"], results["e2e"]
    ratios = {}

    def ratio(name, numerator, denominator, key, invert=False):
        if numerator is None or denominator is None:
            ratios[name] = {"value": None, "note": "missing measurement"}
            return
        value = numerator[key] / denominator[key]
        if invert:
            value = 1.0 / value
        op, target = TARGETS[name]
        met = value >= target if op == ">=" else value <= target
        ratios[name] = {"value": value, "target": f"{op} {target}", "met": met}

    ours = find(train, "ours XLA fp32")
    ratio(
        "train_vs_keras_hub_xla",
        ours,
        find(train, "keras-hub XLA fp32"),
        "tokens_per_s",
    )
    ratio("train_vs_torch", ours, find(train, "torch fp32"), "tokens_per_s")
    greedy = find(decode, "ours greedy (cache, XLA)")
    ratio(
        "greedy_vs_keras_hub_cached_xla",
        greedy,
        find(decode, "keras-hub greedy (caches, XLA)"),
        "tokens_per_s",
    )
    # Beam cost per sentence / greedy cost per sentence (same batch of 16).
    ratio(
        "beam4_vs_greedy_per_sentence",
        find(decode, "ours beam 4 (cache, XLA)"),
        greedy,
        "ms_per_sentence",
    )
    # Real target tokens/s of the last (steady-state) epoch.
    ratio(
        "e2e_own_pipeline_vs_keras_hub",
        find(e2e, "ours (keras_transformer.data buckets)"),
        find(e2e, "keras-hub (padded tf.data, fit)"),
        "tokens_per_s",
    )
    return ratios


def compute_e2e_variants(results):
    """Each of our end-to-end rows / keras-hub's, real target tokens/s.
    Informational: the target is the headline row's (`compute_ratios`)."""
    hub = find(results["e2e"], "keras-hub (padded tf.data, fit)")
    if hub is None:
        return {}
    return {
        row["label"]: row["tokens_per_s"] / hub["tokens_per_s"]
        for row in results["e2e"]
        if row.get("status") == "ok" and row["label"].startswith("ours")
    }


def compute_train_variants(results):
    """Each of our training rows / keras-hub's in the same mode (XLA or
    graph), target tokens/s. Informational: the target is `ours XLA fp32`'s."""
    variants = {}
    for mode in ("XLA", "graph"):
        hub = find(results["train"], f"keras-hub {mode} fp32")
        if hub is None:
            continue
        for row in results["train"]:
            if row.get("status") == "ok" and row["label"].startswith(f"ours {mode}"):
                variants[f"{row['label']} / {hub['label']}"] = (
                    row["tokens_per_s"] / hub["tokens_per_s"]
                )
    return variants


def compute_bounds(results):
    """What the decoding targets would be at the matmul floor: the ratios if
    a step cost only its weight matmuls (the `floor: ...` rows), with the
    peer as measured; and the greedy ratio with both systems in bf16, and
    bf16's ms/step against fp32's (above 1: bf16 is slower). Informational,
    no target."""
    rows = {
        name: find(results["decode"], label)
        for name, label in (
            ("floor16", "floor: ours' step matmuls only, 16 rows (XLA)"),
            ("floor64", "floor: ours' step matmuls only, 64 rows (XLA)"),
            ("hub", "keras-hub greedy (caches, XLA)"),
            ("greedy", "ours greedy (cache, XLA)"),
            ("beam", "ours beam 4 (cache, XLA)"),
        )
    }
    for dtype in ("mixed_bfloat16", "bfloat16"):
        rows[f"greedy_{dtype}"] = find(
            results["decode"], f"ours greedy (cache, XLA, {dtype})"
        )
        rows[f"hub_{dtype}"] = find(
            results["decode"], f"keras-hub greedy (caches, XLA, {dtype})"
        )
    bounds = {}
    for name, numerator, denominator in (
        ("greedy_vs_keras_hub_at_the_floor", "hub", "floor16"),
        ("beam4_vs_greedy_at_the_floor", "floor64", "floor16"),
        ("ours_greedy_step_vs_its_floor", "greedy", "floor16"),
        ("ours_beam4_step_vs_its_floor", "beam", "floor64"),
        # Greedy ratios with both systems in bf16, and bf16 against fp32.
        (
            "greedy_vs_keras_hub_both_mixed_bfloat16",
            "hub_mixed_bfloat16",
            "greedy_mixed_bfloat16",
        ),
        ("greedy_vs_keras_hub_both_bfloat16", "hub_bfloat16", "greedy_bfloat16"),
        ("ours_greedy_mixed_bfloat16_vs_fp32", "greedy_mixed_bfloat16", "greedy"),
        ("keras_hub_greedy_mixed_bfloat16_vs_fp32", "hub_mixed_bfloat16", "hub"),
    ):
        if rows[numerator] and rows[denominator]:
            bounds[name] = (
                rows[numerator]["ms_per_step"] / rows[denominator]["ms_per_step"]
            )
    return bounds


def fmt(value, spec="{:.1f}", missing="-"):
    return missing if value is None else spec.format(value)


def print_table(title, header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    print(f"\n{title}")
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def report(results):
    peak = results.get("peak") or {}
    print(
        f"\nConfiguration {CONFIG['name']}: V={CONFIG['vocabulary_size']} "
        f"d={CONFIG['d_model']} h={CONFIG['num_heads']} d_ff={CONFIG['d_ff']} "
        f"layers={CONFIG['num_layers']}+{CONFIG['num_layers']} dropout="
        f"{CONFIG['dropout']}; {parameter_counts()['total']:,} weights"
    )
    print(
        f"Matmul peak (tf.matmul): fp32 {fmt(peak.get('float32_gflops'))} "
        f"GFLOP/s, bf16 {fmt(peak.get('bfloat16_gflops'))} GFLOP/s; "
        f"load average at start {results['machine']['loadavg_start'][0]:.2f} "
        f"on {results['machine']['cpus']} CPUs"
    )
    rows = []
    for row in results["train"]:
        if row.get("status") != "ok":
            rows.append([row["label"], row.get("status"), "", "", "", "", "", ""])
            continue
        rows.append(
            [
                row["label"],
                "x".join(map(str, row["source_shape"]))
                + "/"
                + str(row["target_shape"][1]),
                fmt(1000 * row["step"]["median_s"], "{:.0f}"),
                fmt(row["tokens_per_s"], "{:.0f}"),
                fmt(row.get("achieved_gflops")),
                fmt(100 * row["mfu"] if row.get("mfu") else None, "{:.1f}%"),
                fmt(row["peak_rss_mib"], "{:.0f}"),
                fmt(row["first_step_s"]),
            ]
        )
    print_table(
        "Training (one fixed batch, Adam, masked cross-entropy; median step)",
        [
            "system",
            "B x S / T",
            "step ms",
            "tokens/s",
            "GFLOP/s",
            "MFU",
            "peak RSS MiB",
            "1st step s",
        ],
        rows,
    )
    rows = []
    for row in results["decode"]:
        if row.get("status") != "ok":
            rows.append([row["label"], row.get("status"), "", "", "", "", ""])
            continue
        rows.append(
            [
                row["label"],
                fmt(row["tokens_per_s"], "{:.0f}"),
                fmt(row["ms_per_step"], "{:.2f}"),
                fmt(row["ms_per_sentence"], "{:.1f}"),
                fmt(row["first_call_s"]),
                "yes" if row.get("ran_all_steps", True) else "NO",
                fmt(row["peak_rss_mib"], "{:.0f}"),
            ]
        )
    print_table(
        f"Decoding (batch {DECODE['batch_size']}, source {DECODE['source_length']},"
        f" {DECODE['new_tokens']} new tokens, untrained model, median call)",
        [
            "system",
            "tokens/s",
            "ms/step",
            "ms/sentence",
            "1st call s",
            "64 steps",
            "peak RSS MiB",
        ],
        rows,
    )
    rows = []
    for row in results["e2e"]:
        status = row.get("status")
        if status == "todo":
            rows.append([row["label"], "TODO", "", "", row.get("note", "")[:60]])
        elif status != "ok":
            rows.append([row["label"], status, "", "", ""])
        else:
            rows.append(
                [
                    row["label"],
                    fmt(row["first_epoch_tokens_per_s"], "{:.0f}"),
                    fmt(row["tokens_per_s"], "{:.0f}"),
                    fmt(row["peak_rss_mib"], "{:.0f}"),
                    f"{row['pairs']} pairs, epochs "
                    + ", ".join(f"{t:.1f}s" for t in row["epoch_s"])
                    + " ("
                    + "/".join(map(str, row.get("batches_per_epoch", [])))
                    + " batches)"
                    + (", XLA" if row.get("jit") else "")
                    + (", one pass" if row.get("stream") is False else ""),
                ]
            )
    print_table(
        "End-to-end training, own input pipeline (real target tokens/s)",
        ["system", "epoch 1 tok/s", "epochs 2-N tok/s", "peak RSS MiB", "notes"],
        rows,
    )
    print("\nRatios (ours / peer) vs the issue's targets:")
    for name, entry in results["ratios"].items():
        if entry.get("value") is None:
            print(f"  {name:34s} -      ({entry.get('note')})")
            continue
        verdict = "met" if entry["met"] else "NOT met"
        print(
            f"  {name:34s} {entry['value']:6.2f}  target {entry['target']:7s} {verdict}"
        )
    if results.get("train_variants"):
        print("\nTraining, each of our rows / keras-hub's in the same mode:")
        for name, value in results["train_variants"].items():
            print(f"  {name:62s} {value:6.2f}")
    if results.get("e2e_variants"):
        print("\nEnd to end, each of our rows / keras-hub (no target but the first):")
        for name, value in results["e2e_variants"].items():
            print(f"  {name:62s} {value:6.2f}")
    report_paired(results.get("paired") or {})
    if results.get("bounds"):
        print(
            "\nAt the matmul floor (a step = its weight matmuls only), and in "
            "bf16 (no target):"
        )
        for name, value in results["bounds"].items():
            print(f"  {name:34s} {value:6.2f}")


def report_paired(paired):
    """Prints the ratios measured paired in one process (section `paired`)."""
    decode = paired.get("decode") or {}
    if decode.get("status") == "ok":
        rounds = len(decode["greedy"]["baseline"]["times_s"])
        print(
            f"\nDecoding ratios paired in one process ({rounds} interleaved "
            "rounds, median of the per-round ratios):"
        )
        for name, value in decode["ratios"].items():
            print(f"  {name:62s} {value:6.2f}")
        print(
            "  ms/step: ours greedy "
            f"{decode['greedy']['baseline']['ms_per_step']:.2f}, ours beam 4 "
            f"{decode['beam']['baseline']['ms_per_step']:.2f}, keras-hub cached "
            f"{decode['keras_hub_cached_ms_per_step']:.2f}, floor 16 rows "
            f"{decode['floor_greedy_ms_per_step']:.2f}, floor 64 rows "
            f"{decode['floor_beam_ms_per_step']:.2f}"
        )
    # ours / peer throughput, by medians and per round (experiments.py's
    # `speedup_median` is the median per-round baseline / peer time ratio).
    for kind, ours, peer, what in (
        ("train", "baseline", "keras_hub_xla", "training, ours XLA / keras-hub XLA"),
        ("e2e", "baseline", "keras_hub_padded", "end to end, ours buckets / keras-hub"),
        (
            "e2e",
            "ours_loss",
            "keras_hub_padded",
            "end to end, ours + our loss / keras-hub",
        ),
    ):
        result = paired.get(kind) or {}
        if result.get("status") != "ok" or ours not in result[kind]:
            continue
        rows = result[kind]
        by_medians = rows[peer]["median_s"] / rows[ours]["median_s"]
        per_round = 1.0 / statistics.median(
            o / p for o, p in zip(rows[ours]["times_s"], rows[peer]["times_s"])
        )
        rounds = len(rows[ours]["times_s"])
        print(
            f"\nPaired in one process ({rounds} interleaved rounds): {what} "
            f"{by_medians:.2f} by medians, {per_round:.2f} per round"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test, < 3 min")
    parser.add_argument("--output", default="results.json", help="JSON file")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated sections to run: peak,train,decode,paired,e2e",
    )
    parser.add_argument(
        "--e2e-jit",
        action="store_true",
        help="XLA for the Keras end-to-end runs (one compile per batch shape)",
    )
    parser.add_argument(
        "--e2e-one-pass",
        action="store_true",
        help="end to end: one pass over the corpus per epoch (partial "
        "batches included) instead of one endless stream",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds after which remaining tasks are skipped "
        "(default: 150 with --quick, none otherwise)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat training and decoding round-robin, keep each system's best",
    )
    parser.add_argument("--task-timeout", type=float, default=600.0)
    parser.add_argument("--log-dir", default=None, help="worker stderr logs")
    args = parser.parse_args(argv)

    budget = args.budget if args.budget is not None else (150.0 if args.quick else None)
    only = {s for s in args.only.split(",") if s}
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="bench_logs_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    tasks = plan(
        args.quick, args.e2e_jit, args.rounds, e2e_stream=not args.e2e_one_pass
    )
    tasks = [t for t in tasks if not only or t[0] in only]

    results = {
        "config": CONFIG,
        "decode_config": DECODE,
        "quick": args.quick,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
            "platform": platform.platform(),
            "versions": versions(),
        },
        "flop_formula": FLOP_FORMULA,
        "parameters": parameter_counts(),
        "peak": None,
        "paired": {},
        "train": [],
        "decode": [],
        "e2e": [],
    }
    start = time.perf_counter()
    for index, (section, label, task) in enumerate(tasks):
        elapsed = time.perf_counter() - start
        if budget is not None and elapsed > budget:
            result = {"status": "skipped (time budget)"}
        else:
            print(
                f"[{elapsed:6.0f}s] {index + 1}/{len(tasks)} {section}: {label}",
                flush=True,
            )
            log_path = log_dir / f"{index:02d}_{section}_{task.get('system', '')}.log"
            timeout = args.task_timeout
            if budget is not None:
                timeout = max(20.0, min(timeout, budget + 20.0 - elapsed))
            result = run_task(task, log_path, timeout)
            if result.get("status") not in ("ok", "todo"):
                print(f"    -> {result.get('status')}: see {log_path}", flush=True)
        result["label"] = label
        if section == "peak":
            results["peak"] = result if result.get("status") == "ok" else None
        elif section == "paired":
            results["paired"][task["kind"]] = result
        else:
            keep_best(results[section], result)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["total_s"] = time.perf_counter() - start
    results["forward_flops_training_batch"] = None
    for row in results["train"]:
        if row.get("status") == "ok":
            b, s = row["source_shape"]
            results["forward_flops_training_batch"] = forward_flops(
                b, s, row["target_shape"][1]
            )
            break
    add_mfu(results, results["peak"])
    results["ratios"] = compute_ratios(results)
    results["bounds"] = compute_bounds(results)
    results["e2e_variants"] = compute_e2e_variants(results)
    results["train_variants"] = compute_train_variants(results)
    report(results)
    print(f"\nTotal {results['total_s']:.0f}s; worker logs in {log_dir}")
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
