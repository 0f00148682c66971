"""XLA compiles the bucketed train step once per bucket shape, not per batch."""

import json
import os
import re
import subprocess
import sys

WORKER = os.path.join(os.path.dirname(__file__), "compile_count_worker.py")


def test_jit_train_step_compiles_once_per_bucket_shape(tmp_path):
    dump = tmp_path / "xla"
    result = subprocess.run(
        [sys.executable, WORKER, str(dump)],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    report = json.loads(line[len("RESULT ") :])
    shapes = [tuple(map(tuple, s)) for s in report["shapes"]]
    allowed = {tuple(s) for s in report["allowed"]}
    # Every batch has one of the static bucket shapes (B, S) / (B, T)...
    assert {(s[0], s[1], t[1]) for s, t in shapes} <= allowed
    assert all(s[0] == t[0] == 16 for s, t in shapes)
    assert len(shapes) >= 2
    # ...and two epochs in two `fit` calls compiled the train step once for
    # each shape: one traced function, one XLA module per shape.
    compiled = {
        match.group(1)
        for name in os.listdir(dump)
        if (
            match := re.match(
                r"(module_\d+)\.a_inference_one_step_on_data_.*"
                r"before_optimizations\.txt$",
                name,
            )
        )
    }
    assert len(compiled) == len(shapes), (sorted(compiled), shapes)
    if report["traces"] is not None:
        assert report["traces"] == 1
