"""Benchmark keras-transformer against keras-hub and torch.nn.Transformer.

    python benchmarks/compare.py --quick                          # smoke run
    python benchmarks/compare.py --output benchmarks/results.json # full run

Configuration "base-small" (`_common.CONFIG`). Every measurement runs in its
own subprocess (`_worker.py`), one after the other, so thread pools, XLA
caches and peak RSS belong to one system. Prints the tables, the issue's
ratios with their targets, and writes every number to JSON. Method and
results: benchmarks/README.md.
"""

import argparse
import importlib.metadata
import json
import os
import platform
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
from _common import train_flops  # noqa: E402

GREEDY = "ours greedy (cache, XLA)"
BEAM = "ours beam 4 (cache, XLA)"
HUB_GREEDY = "keras-hub greedy (caches, XLA)"
FLOOR_16 = "floor: ours' step matmuls only, 16 rows (XLA)"
FLOOR_64 = "floor: ours' step matmuls only, 64 rows (XLA)"
OURS_E2E = "ours (keras_transformer.data buckets)"
HUB_E2E = "keras-hub (padded tf.data, fit)"
BF16 = ("mixed_bfloat16", "bfloat16")
BF16_GREEDY, BF16_HUB = f"{GREEDY[:-1]}, {BF16[0]})", f"{HUB_GREEDY[:-1]}, {BF16[0]})"

# The targets: name -> (op, target, section, numerator row,
# denominator row, key); the ratio is numerator[key] / denominator[key].
TARGETS = {
    "train_vs_keras_hub_xla": (">=", 1.25, "train", "ours XLA fp32", "keras-hub XLA fp32", "tokens_per_s"),
    "train_vs_torch": (">=", 1.5, "train", "ours XLA fp32", "torch fp32", "tokens_per_s"),
    "greedy_vs_keras_hub_cached_xla": (">=", 2.0, "decode", GREEDY, HUB_GREEDY, "tokens_per_s"),
    "beam4_vs_greedy_per_sentence": ("<=", 3.0, "decode", BEAM, GREEDY, "ms_per_sentence"),
    "e2e_own_pipeline_vs_keras_hub": (">=", 1.5, "e2e", OURS_E2E, HUB_E2E, "tokens_per_s"),
}  # fmt: skip

# Decoding bounds (no target): name -> (numerator row, denominator row) of
# ms/step. The matmul floor is what a step costs if everything but its
# weight matmuls were free.
BOUNDS = {
    "greedy_vs_keras_hub_at_the_floor": (HUB_GREEDY, FLOOR_16),
    "beam4_vs_greedy_at_the_floor": (FLOOR_64, FLOOR_16),
    "ours_greedy_step_vs_its_floor": (GREEDY, FLOOR_16),
    "ours_beam4_step_vs_its_floor": (BEAM, FLOOR_64),
    **{
        f"greedy_vs_keras_hub_both_{d}": (f"{HUB_GREEDY[:-1]}, {d})", f"{GREEDY[:-1]}, {d})")
        for d in BF16
    },
    "ours_greedy_mixed_bfloat16_vs_fp32": (BF16_GREEDY, GREEDY),
    "keras_hub_greedy_mixed_bfloat16_vs_fp32": (BF16_HUB, HUB_GREEDY),
}  # fmt: skip

# Every measured row: (section, label, in --quick, task options over
# DEFAULTS[section]).
TOKENS_2048 = {"batch_tokens": CONFIG["batch_size"] * CONFIG["max_length"]}
ROWS = [
    ("train", "ours XLA fp32", True, {"system": "ours", "jit": True}),
    ("train", "keras-hub XLA fp32", True, {"system": "keras_hub", "jit": True}),
    ("train", "torch fp32", True, {"system": "torch"}),
    ("train", "ours XLA bf16", False, {"system": "ours", "jit": True, "dtype": BF16[0]}),
    ("train", "ours graph fp32", False, {"system": "ours"}),
    ("train", "ours graph bf16", False, {"system": "ours", "dtype": BF16[0]}),
    ("train", "keras-hub graph fp32", False, {"system": "keras_hub"}),
    # The library's own loss on the same objective (see _keras_systems).
    ("train", "ours XLA fp32, our loss", False, {"system": "ours", "jit": True, "loss": "ours"}),
    ("train", "ours graph fp32, our loss", False, {"system": "ours", "loss": "ours"}),
    ("decode", GREEDY, True, {"system": "ours_greedy"}),
    ("decode", BEAM, True, {"system": "ours_beam"}),
    ("decode", HUB_GREEDY, True, {"system": "keras_hub_cached"}),
    ("decode", FLOOR_16, True, {"system": "floor_greedy"}),
    ("decode", FLOOR_64, True, {"system": "floor_beam"}),
    ("decode", "ours greedy (cache, graph)", False, {"system": "ours_greedy", "jit": False}),
    ("decode", "keras-hub greedy (recompute, graph)", False, {"system": "keras_hub_recompute", "repeats": 2}),
    ("decode", "torch greedy (recompute, eager)", False, {"system": "torch_recompute", "repeats": 2}),
    ("decode", BF16_GREEDY, False, {"system": "ours_greedy", "dtype": BF16[0]}),
    ("decode", BF16_HUB, False, {"system": "keras_hub_cached", "dtype": BF16[0]}),
    ("decode", f"{GREEDY[:-1]}, {BF16[1]})", False, {"system": "ours_greedy", "dtype": BF16[1]}),
    ("decode", f"{HUB_GREEDY[:-1]}, {BF16[1]})", False, {"system": "keras_hub_cached", "dtype": BF16[1]}),
    ("e2e", OURS_E2E, True, {"system": "ours_data"}),
    ("e2e", "ours (buckets, our loss)", False, {"system": "ours_data", "loss": "ours"}),
    ("e2e", "ours (buckets, batch_tokens=2048)", False, {"system": "ours_data", **TOKENS_2048}),
    ("e2e", "ours (buckets, batch_tokens=2048, FINE_BOUNDARIES)", False, {"system": "ours_data", **TOKENS_2048, "bucket_boundaries": "fine"}),
    ("e2e", "ours (buckets, static shapes, XLA: trainer default)", False, {"system": "ours_data", "jit": True, "static_shapes": True}),
    ("e2e", "ours (stand-in: padded tf.data)", False, {"system": "ours_padded"}),
    ("e2e", HUB_E2E, False, {"system": "keras_hub"}),
    ("e2e", "torch (DataLoader, pad collate)", False, {"system": "torch"}),
]  # fmt: skip
DEFAULTS = {
    "train": {"jit": False, "dtype": "float32", "loss": "keras"},
    "decode": {"jit": True, "dtype": "float32"},
    "e2e": {"jit": False, "loss": "keras"},
}
# --quick runs what the ratios need first: its time budget skips from the end.
QUICK_ORDER = ["tf.matmul peak", "ours XLA fp32", "keras-hub XLA fp32", GREEDY]
QUICK_ORDER += [HUB_GREEDY, BEAM, "torch fp32"]


def plan(quick, rounds=1):
    """The ordered task list: `(section, label, task dict)`.

    With `rounds > 1` the training and decoding tasks are repeated
    round-robin (the best round is kept), so a burst of load from other
    processes does not land on one system only. Then the paired tasks
    measure the issue's ratios again in one process each (`_paired.py`).
    """
    sizes = [1024] if quick else [1024, 2048]
    counts = {
        "train": {"steps": 2, "warmup": 0} if quick else {"steps": 20, "warmup": 3},
        "decode": {"repeats": 2 if quick else 5},
        "e2e": {"batches": 2, "epochs": 1} if quick else {"batches": 16, "epochs": 4},
    }
    tasks = [("peak", "tf.matmul peak", {"task": "peak", "sizes": sizes})]
    for section, label, in_quick, options in ROWS:
        if in_quick or not quick:
            task = {"task": section, **DEFAULTS[section], **counts[section]}
            tasks.append((section, label, {**task, **options}))
    if quick:
        order = QUICK_ORDER
        tasks.sort(key=lambda t: order.index(t[1]) if t[1] in order else len(order))
    tasks += [
        t for _ in range(rounds - 1) for t in tasks if t[0] in ("train", "decode")
    ]
    paired = [("decode", 3)] if quick else [("decode", 9), ("train", 4), ("e2e", 3)]
    for kind, paired_rounds in paired:
        task = {"task": "paired", "kind": kind, "rounds": paired_rounds}
        tasks.append(("paired", f"{kind}, paired in one process", task))
    return tasks


def run_task(task, log_path, timeout):
    """Runs one task in a `_worker.py` subprocess; returns its result dict."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("PYTHONWARNINGS", "ignore")
    command = [sys.executable, str(HERE / "_worker.py"), json.dumps(task)]
    load_before = os.getloadavg()[0]
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
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER) :])
            result.setdefault("status", "ok")
            result["process_s"] = time.perf_counter() - start
            result["loadavg_1m_before"] = load_before
            result["loadavg_1m_after"] = os.getloadavg()[0]
            return result
    tail = Path(log_path).read_text()[-2000:]
    return {"status": "error", "returncode": proc.returncode, "log_tail": tail}


def keep_best(rows, result):
    """Adds `result`, or keeps the faster of it and an earlier round's row
    (`rounds_tokens_per_s` lists every round's tokens/s)."""
    old = next((r for r in rows if r["label"] == result["label"]), None)
    if old is None:
        rows.append(result)
        return
    history = old.pop("rounds_tokens_per_s", [old.get("tokens_per_s")])
    best = max(old, result, key=lambda r: r.get("tokens_per_s") or -1.0)
    best["rounds_tokens_per_s"] = [*history, result.get("tokens_per_s")]
    rows[rows.index(old)] = best


def versions():
    """Versions of Python and of every benchmarked package (None: absent)."""
    out = {"python": platform.python_version()}
    for name in ("tensorflow", "keras", "keras-hub", "torch", "keras-transformer"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


# Derived numbers.


def find(rows, label):
    """The row of `rows` with this label if it ran, else None."""
    for row in rows:
        if row.get("label") == label and row.get("status") == "ok":
            return row
    return None


def add_mfu(results):
    """Adds FLOPs per step, achieved GFLOP/s and MFU to each training row."""
    peak = results["peak"] or {}
    for row in results["train"]:
        if row.get("status") != "ok":
            continue
        (batch, source_len), target_len = row["source_shape"], row["target_shape"][1]
        flops = train_flops(batch, source_len, target_len)
        row["train_flops_per_step"] = flops
        row["achieved_gflops"] = flops / row["step"]["median_s"] / 1e9
        key = "bfloat16_gflops" if "bfloat16" in row["task"]["dtype"] else None
        key = key or "float32_gflops"
        if peak.get(key):
            row["peak_gflops"] = peak[key]
            row["mfu"] = row["achieved_gflops"] / peak[key]
        results["forward_flops_training_batch"] = forward_flops(
            batch, source_len, target_len
        )


def compute_ratios(results):
    """The issue's ratios (`TARGETS`), each with its target and verdict."""
    ratios = {}
    for name, (op, target, section, top, bottom, key) in TARGETS.items():
        top, bottom = find(results[section], top), find(results[section], bottom)
        if top is None or bottom is None:
            ratios[name] = {"value": None, "note": "missing measurement"}
            continue
        value = top[key] / bottom[key]
        met = value >= target if op == ">=" else value <= target
        ratios[name] = {"value": value, "target": f"{op} {target}", "met": met}
    return ratios


def compute_extras(results):
    """Ratios without a target: the decoding bounds (`BOUNDS`), each of our
    training rows / keras-hub's in the same mode, each of our end-to-end
    rows / keras-hub's."""
    decode, train, e2e = results["decode"], results["train"], results["e2e"]
    bounds = {}
    for name, (top, bottom) in BOUNDS.items():
        top, bottom = find(decode, top), find(decode, bottom)
        if top and bottom:
            bounds[name] = top["ms_per_step"] / bottom["ms_per_step"]
    train_variants = {}
    for mode in ("XLA", "graph"):
        hub = find(train, f"keras-hub {mode} fp32")
        for row in train if hub else []:
            if row.get("status") == "ok" and row["label"].startswith(f"ours {mode}"):
                name = f"{row['label']} / {hub['label']}"
                train_variants[name] = row["tokens_per_s"] / hub["tokens_per_s"]
    hub = find(e2e, HUB_E2E)
    e2e_variants = {
        row["label"]: row["tokens_per_s"] / hub["tokens_per_s"]
        for row in (e2e if hub else [])
        if row.get("status") == "ok" and row["label"].startswith("ours")
    }
    return {
        "bounds": bounds,
        "train_variants": train_variants,
        "e2e_variants": e2e_variants,
    }


# Printing.


def fmt(value, spec="{:.1f}"):
    """`spec.format(value)`, or "-" for None."""
    return "-" if value is None else spec.format(value)


def e2e_notes(row):
    """The e2e table's notes: corpus, epoch times, XLA."""
    epochs = ", ".join(f"{t:.1f}s" for t in row["epoch_s"])
    return f"{row['pairs']} pairs, epochs {epochs}" + (
        ", XLA" if row.get("jit") else ""
    )


# section -> (title, [(header, cell of an "ok" row)])
COLUMNS = {
    "train": (
        "Training (one fixed batch, Adam, masked cross-entropy; median step)",
        [
            ("B x S / T", lambda r: "{}x{}/{}".format(*r["source_shape"], r["target_shape"][1])),
            ("step ms", lambda r: fmt(1000 * r["step"]["median_s"], "{:.0f}")),
            ("tokens/s", lambda r: fmt(r["tokens_per_s"], "{:.0f}")),
            ("GFLOP/s", lambda r: fmt(r.get("achieved_gflops"))),
            ("MFU", lambda r: fmt(100 * r["mfu"] if "mfu" in r else None, "{:.1f}%")),
            ("peak RSS MiB", lambda r: fmt(r["peak_rss_mib"], "{:.0f}")),
            ("1st step s", lambda r: fmt(r["first_step_s"])),
        ],
    ),
    "decode": (
        f"Decoding (batch {DECODE['batch_size']}, source {DECODE['source_length']}, "
        f"{DECODE['new_tokens']} new tokens, untrained model, median call)",
        [
            ("tokens/s", lambda r: fmt(r["tokens_per_s"], "{:.0f}")),
            ("ms/step", lambda r: fmt(r["ms_per_step"], "{:.2f}")),
            ("ms/sentence", lambda r: fmt(r["ms_per_sentence"])),
            ("1st call s", lambda r: fmt(r["first_call_s"])),
            ("64 steps", lambda r: "yes" if r.get("ran_all_steps", True) else "NO"),
            ("peak RSS MiB", lambda r: fmt(r["peak_rss_mib"], "{:.0f}")),
        ],
    ),
    "e2e": (
        "End-to-end training, own input pipeline (real target tokens/s)",
        [
            ("epoch 1 tok/s", lambda r: fmt(r["first_epoch_tokens_per_s"], "{:.0f}")),
            ("epochs 2-N tok/s", lambda r: fmt(r["tokens_per_s"], "{:.0f}")),
            ("peak RSS MiB", lambda r: fmt(r["peak_rss_mib"], "{:.0f}")),
            ("notes", e2e_notes),
        ],
    ),
}  # fmt: skip


def print_table(title, header, rows):
    """Prints a plain-text table with left-aligned columns."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(f"\n{title}\n{line}\n{'-' * len(line)}")
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def print_section(results, section):
    """Prints one section's table (`COLUMNS`); a row that did not run shows
    its status."""
    title, columns = COLUMNS[section]
    rows = []
    for row in results[section]:
        cells = [row.get("status")] + [""] * (len(columns) - 1)
        if row.get("status") == "ok":
            cells = [cell(row) for _, cell in columns]
        rows.append([row["label"], *cells])
    print_table(title, ["system", *(header for header, _ in columns)], rows)


def print_values(title, values):
    """Prints `name value` lines under a title (nothing if empty)."""
    if values:
        print(f"\n{title}")
        for name, value in values.items():
            print(f"  {name:62s} {value:6.2f}")


EXTRAS = {
    "train_variants": "Training, each of our rows / keras-hub's in the same mode:",
    "e2e_variants": "End to end, each of our rows / keras-hub (no target but the first):",
    "bounds": "At the matmul floor (a step = its weight matmuls only), and in bf16:",
}


def report(results):
    """Prints the configuration, the three tables and every ratio."""
    peak, machine = results["peak"] or {}, results["machine"]
    ours = find(results["train"], "ours XLA fp32") or {"params": 0}
    print(
        f"\nConfiguration {CONFIG['name']}: V={CONFIG['vocabulary_size']} "
        f"d={CONFIG['d_model']} h={CONFIG['num_heads']} d_ff={CONFIG['d_ff']} "
        f"layers={CONFIG['num_layers']}+{CONFIG['num_layers']} dropout="
        f"{CONFIG['dropout']}; {ours['params']:,} weights\n"
        f"Matmul peak (tf.matmul): fp32 {fmt(peak.get('float32_gflops'))} GFLOP/s, "
        f"bf16 {fmt(peak.get('bfloat16_gflops'))} GFLOP/s; load average at start "
        f"{machine['loadavg_start'][0]:.2f} on {machine['cpus']} CPUs"
    )
    for section in ("train", "decode", "e2e"):
        print_section(results, section)
    print("\nRatios (ours / peer) vs the issue's targets:")
    for name, entry in results["ratios"].items():
        if entry["value"] is None:
            print(f"  {name:34s} -      ({entry['note']})")
        else:
            verdict = "met" if entry["met"] else "NOT met"
            print(
                f"  {name:34s} {entry['value']:6.2f}  target {entry['target']:7s} "
                f"{verdict}"
            )
    for key, title in EXTRAS.items():
        print_values(title, results[key])
    for kind, paired in results["paired"].items():
        if paired.get("status") == "ok" and "rounds" in paired:  # not: older runs
            print_values(
                f"Paired in one process ({kind}, {paired['rounds']} rounds), "
                "time a / time b, median of the per-round ratios:",
                {name: r["per_round"] for name, r in paired["ratios"].items()},
            )


# Driver.


def parse_args(argv=None):
    """The command line (see the module docstring and benchmarks/README.md)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, ~3 min")
    parser.add_argument("--output", default="results.json", help="JSON file")
    parser.add_argument("--only", default="", help="peak,train,decode,e2e,paired")
    parser.add_argument("--budget", type=float, help="seconds; --quick: 150")
    parser.add_argument("--rounds", type=int, default=1, help="train/decode rounds")
    parser.add_argument("--task-timeout", type=float, default=600.0)
    parser.add_argument("--log-dir", default=None, help="worker stderr logs")
    args = parser.parse_args(argv)
    if args.budget is None and args.quick:
        args.budget = 150.0
    return args


def run_all(tasks, args, log_dir):
    """Runs the tasks in order within the time budget; returns the results."""
    results = {"peak": None, "paired": {}, "train": [], "decode": [], "e2e": []}
    start = time.perf_counter()
    for index, (section, label, task) in enumerate(tasks):
        elapsed = time.perf_counter() - start
        if args.budget is not None and elapsed > args.budget:
            result = {"status": "skipped (time budget)"}
        else:
            print(f"[{elapsed:6.0f}s] {index + 1}/{len(tasks)} {section}: {label}")
            sys.stdout.flush()
            log_path = log_dir / f"{index:02d}_{section}_{task.get('system', '')}.log"
            timeout = args.task_timeout
            if args.budget is not None:
                timeout = max(20.0, min(timeout, args.budget + 20.0 - elapsed))
            result = run_task(task, log_path, timeout)
            if result["status"] != "ok":
                print(f"    -> {result['status']}: see {log_path}", flush=True)
        result["label"] = label
        if section == "peak":
            results["peak"] = result if result["status"] == "ok" else None
        elif section == "paired":
            results["paired"][task["kind"]] = result
        else:
            keep_best(results[section], result)
    results["total_s"] = time.perf_counter() - start
    return results


def write_results(path, results):
    """Writes the JSON, keeping the `variants` section (`variants.py`) of an
    existing file."""
    path = Path(path)
    if path.exists():
        previous = json.loads(path.read_text())
        if "variants" in previous:
            results["variants"] = previous["variants"]
    path.write_text(json.dumps(results, indent=2) + "\n")


def main(argv=None):
    """Plans, runs, reports and writes one comparison."""
    args = parse_args(argv)
    only = {s for s in args.only.split(",") if s}
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="bench_logs_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    tasks = [t for t in plan(args.quick, args.rounds) if t[0] in only or not only]
    machine = {
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "platform": platform.platform(),
        "versions": versions(),
    }
    results = run_all(tasks, args, log_dir)
    machine["loadavg_end"] = os.getloadavg()
    results.update(
        config=CONFIG, decode_config=DECODE, quick=args.quick, machine=machine,
        forward_flops_training_batch=None,
    )  # fmt: skip
    add_mfu(results)
    results["ratios"] = compute_ratios(results)
    results.update(compute_extras(results))
    report(results)
    print(f"\nTotal {results['total_s']:.0f}s; worker logs in {log_dir}")
    write_results(args.output, results)
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
