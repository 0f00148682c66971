"""`benchmarks/accelerator.py --smoke` runs on a CPU and writes a complete JSON.

The script is meant for GPU and TPU machines; this smoke run (tiny sizes, a
subprocess on the CPU, ~50 s on an idle 2-core machine) keeps it from
rotting between device runs. `conftest.py` starts it when the tests are
collected and runs these tests last, so it overlaps the rest of the suite.
"""

import pytest


@pytest.fixture
def results(accelerator_smoke):
    # Started in the background at collection time (conftest.py).
    return accelerator_smoke


def _no_errors(results, *parts):
    for part in parts:
        assert "error" not in results[part], (part, results[part])


pytestmark = pytest.mark.slow


def test_run_facts(results):
    assert results["benchmark"] == "accelerator"
    assert results["smoke"] is True
    assert results["device"]["kind"] == "CPU"
    assert results["device"]["replicas"] == 1
    assert results["preset"] == "tiny"
    assert results["policy"] == "float32"
    assert results["jit_compile"] is True
    assert results["cpu_tuned_paths"] is True
    assert results["model"]["parameters"] > 0
    assert 0 < results["seconds"]["total"] < 300


def test_peak_and_data(results):
    _no_errors(results, "peak_matmul", "peak_after", "data")
    assert results["peak_flops_per_s"] > 0
    assert results["data"]["shapes_kept"]
    assert 0 <= results["data"]["timed_padding_fraction"] < 1


def test_training(results):
    _no_errors(results, "training")
    training = results["training"]
    assert training["steps_per_s"] > 0
    assert training["real_target_tokens_per_s"] > 0
    assert 0 < training["mfu"] <= 1
    assert training["mfu"] <= training["hfu"]  # padding adds FLOPs, not model FLOPs
    assert training["estimated_100k_steps_hours"] > 0
    assert training["estimated_100k_steps_hours_at_25k_real_tokens"] > 0
    assert training["peak_memory_bytes"] is None  # not measured on CPUs
    assert training["peak_memory_note"]
    assert "6d^2" in training["flop_formula"]
    assert len(training["step_seconds"]) == training["timed_steps"]


def test_decoding(results):
    _no_errors(results, "decoding")
    batch = results["sizes"]["decode_batch"]
    for name in ("greedy", "beam4"):
        latency = results["decoding"][f"{name}_batch1"]
        throughput = results["decoding"][f"{name}_batch{batch}"]
        assert latency["seconds"] > 0
        assert throughput["sentences_per_s"] > 0
        # The end id is absent from the data: every search runs to its limit.
        extra = results["sizes"]["extra"]
        assert throughput["output_length"] == latency["source_length"] + extra


def test_export(results):
    _no_errors(results, "export")
    for signature in ("translate_greedy", "serving_default"):
        assert results["export"][signature]["sentences_per_s"] > 0
