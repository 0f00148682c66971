"""XLA compiles the bucketed train step once per bucket shape, not per batch."""

import os
import re


def test_jit_train_step_compiles_once_per_bucket_shape(workers):
    # `compile_count_worker.py`, started at collection time (conftest.py).
    report = workers.result("compile_count")
    dump = workers.compile_dump
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
