"""Profile our model with the TensorFlow profiler and list the top costs.

    python benchmarks/profile_ours.py train [--no-jit] [--bf16] [--steps 5]
    python benchmarks/profile_ours.py greedy|beam [--no-jit]
    python benchmarks/profile_ours.py greedy --system keras_hub   # the peer

Runs the workload a few times, traces some calls with
`tf.profiler.experimental`, reads the XSpace (`*.xplane.pb`) it wrote and
prints the events with the most self time, two ways:

- by kernel: each XLA thunk (`MatMul.12`, `transpose_copy_fusion.3`, ...) or,
  without XLA, each TensorFlow op, with the TF op it came from (for XLA, the
  `op_name` metadata of the optimized HLO, dumped with `--xla_dump_to`);
- by category: the kernel name without its numeric suffix.

Only the worker threads are counted (not Python's own line), so the sum is
CPU time spent in kernels; on 2 cores it can exceed the wall time.
"""

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=["train", "greedy", "beam"])
    parser.add_argument("--system", choices=["ours", "keras_hub"], default="ours")
    parser.add_argument("--no-jit", action="store_true")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--steps", type=int, default=3, help="traced calls")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--logdir", default=None)
    parser.add_argument(
        "--variant",
        default="baseline",
        help="a patch from experiments.py (gather_writes, cross_per_beam, legacy, topk2)",
    )
    return parser.parse_args(argv)


def self_times(plane):
    """{(kernel name): [self ps, count]} over the worker threads of a plane."""
    names = plane.event_metadata
    totals = collections.defaultdict(lambda: [0, 0])
    for line in plane.lines:
        if line.name == "python":
            continue
        events = sorted(line.events, key=lambda e: e.offset_ps)
        self_ps = [e.duration_ps for e in events]
        stack = []
        for index, event in enumerate(events):
            while stack and stack[-1][1] <= event.offset_ps:
                stack.pop()
            if stack:
                self_ps[stack[-1][0]] -= event.duration_ps
            stack.append((index, event.offset_ps + event.duration_ps))
        for index, event in enumerate(events):
            name = names[event.metadata_id].name
            if name.startswith("end: "):
                continue
            totals[name][0] += self_ps[index]
            totals[name][1] += 1
    return totals


def hlo_op_names(dump_dir):
    """Kernel name -> TF op_name, from the largest optimized HLO module."""
    files = glob.glob(os.path.join(dump_dir, "*after_optimizations.txt"))
    if not files:
        return {}
    text = Path(max(files, key=os.path.getsize)).read_text()
    pattern = re.compile(r"%([\w.\-]+) = .*?op_name=\"([^\"]+)\"")
    return {m.group(1): m.group(2) for m in pattern.finditer(text)}


def short_op_name(op_name):
    """Drops Keras' `_1` duplicates and `while/` so rows group by layer."""
    op_name = re.sub(r"_\d+(?=/|$)", "", op_name)
    return op_name.replace("while/", "")


def report(totals, op_names, wall_s, calls, top):
    grand = sum(v[0] for v in totals.values()) or 1
    print(
        f"\n{calls} traced calls, {wall_s:.3f}s wall; kernel self time "
        f"{grand / 1e12:.3f}s CPU (both worker threads)"
    )
    print(f"\nTop {top} kernels by self time:")
    ranked = sorted(totals.items(), key=lambda kv: -kv[1][0])
    for name, (ps, count) in ranked[:top]:
        origin = short_op_name(op_names.get(name, ""))
        print(
            f"  {ps / 1e9 / calls:8.2f} ms/call {100 * ps / grand:5.1f}%  "
            f"x{count // calls:<4d} {name[:40]:40s} {origin[:90]}"
        )
    categories = collections.defaultdict(lambda: [0, 0])
    for name, (ps, count) in totals.items():
        key = re.sub(r"(\.\d+|_\d+)+$", "", name.split(":")[0])
        categories[key][0] += ps
        categories[key][1] += count
    print("\nBy category (kernel name without suffix):")
    for name, (ps, count) in sorted(categories.items(), key=lambda kv: -kv[1][0])[:top]:
        print(
            f"  {ps / 1e9 / calls:8.2f} ms/call {100 * ps / grand:5.1f}%  "
            f"x{count // calls:<5d} {name}"
        )
    by_layer = collections.defaultdict(int)
    for name, (ps, _) in totals.items():
        origin = short_op_name(op_names.get(name, name))
        parts = [p for p in origin.split("/") if p]
        layer = "/".join(parts[:-1][-3:]) if len(parts) > 1 else "(other)"
        by_layer[layer] += ps
    print("\nBy originating layer (last 3 scopes of the TF op name):")
    for name, ps in sorted(by_layer.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {ps / 1e9 / calls:8.2f} ms/call {100 * ps / grand:5.1f}%  {name}")


def main(argv=None):
    args = parse_args(argv)
    logdir = Path(args.logdir or tempfile.mkdtemp(prefix="profile_ours_"))
    dump_dir = logdir / "hlo"
    if not args.no_jit:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_dump_to={dump_dir} --xla_dump_hlo_as_text"
            + " --xla_dump_hlo_module_re=.*(train|lambda|search|one_step).*"
        )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import _common
    import _keras_systems as ks
    import experiments
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    experiments.apply_patch(args.variant)
    ks.set_policy("mixed_bfloat16" if args.bf16 else "float32")
    jit = not args.no_jit
    if args.system == "ours":
        model = ks.build_ours()
    else:
        model = ks.build_keras_hub()
    if args.workload == "train":
        ks.compile_for_training(model, jit)
        x, y = ks.keras_inputs(_common.training_batch())

        def run():
            return model.train_on_batch(x, y)

    else:
        source = tf.constant(_common.decode_source())
        new_tokens = _common.DECODE["new_tokens"]
        if args.system == "ours":
            beam = _common.DECODE["beam_size"] if args.workload == "beam" else 1

            def run():
                return model.generate(
                    source, max_length=new_tokens, beam_size=beam, jit_compile=jit
                ).numpy()

        else:
            fn = tf.function(
                lambda s: ks.keras_hub_greedy_cached(model, s, new_tokens),
                jit_compile=jit,
                autograph=False,
            )

            def run():
                return fn(source).numpy()

    for _ in range(3):  # compile and warm up
        run()
    tf.profiler.experimental.start(str(logdir))
    start = time.perf_counter()
    for _ in range(args.steps):
        run()
    wall = time.perf_counter() - start
    tf.profiler.experimental.stop()

    path = max(glob.glob(str(logdir / "**" / "*.xplane.pb"), recursive=True))
    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(path).read_bytes())
    totals = collections.defaultdict(lambda: [0, 0])
    for plane in space.planes:
        if plane.name.startswith("/host:CPU"):
            for name, (ps, count) in self_times(plane).items():
                totals[name][0] += ps
                totals[name][1] += count
    print(
        f"{args.system} {args.workload} jit={jit} bf16={args.bf16} "
        f"variant={args.variant}; "
        f"trace in {logdir}"
    )
    report(totals, hlo_op_names(dump_dir) if jit else {}, wall, args.steps, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
