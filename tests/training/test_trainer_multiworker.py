"""`keras-transformer train --strategy multiworker` with two local workers."""

import json
import os
import signal
import subprocess
import sys

from num2words import num2words

from keras_transformer.training.strategy import TPU_ENVIRONMENT_VARIABLES
from tests.training.conftest import free_port


def test_two_workers_train_with_the_custom_loop(tmp_path):
    data = tmp_path / "train.tsv"
    data.write_text(
        "".join(f"{num2words(n)}\t{num2words(n, lang='de')}\n" for n in range(200)),
        encoding="utf-8",
    )
    output = tmp_path / "model"
    ports = [free_port(), free_port()]
    processes = []
    for index in range(2):
        tf_config = {
            "cluster": {"worker": [f"localhost:{port}" for port in ports]},
            "task": {"type": "worker", "index": index},
        }
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps(tf_config),
            "CUDA_VISIBLE_DEVICES": "-1",
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        for name in TPU_ENVIRONMENT_VARIABLES:
            env.pop(name, None)
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "keras_transformer",
                    "train",
                    "--train",
                    f"tsv:{data}",
                    "--output",
                    str(output),
                    "--strategy",
                    "multiworker",
                    "--epochs",
                    "2",
                    "--steps-per-epoch",
                    "3",
                    "--batch-size",
                    "8",
                    "--vocab-size",
                    "60",
                    "--max-length",
                    "32",
                    "--checkpoint-every",
                    "2",
                ],  # fmt: skip
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )
    try:
        outcomes = [p.communicate(timeout=240) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
    for p, (_, stderr) in zip(processes, outcomes):
        assert p.returncode == 0, stderr[-3000:]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["strategy"] == "CollectiveAllReduceStrategy"
    assert (metrics["workers"], metrics["replicas"]) == (2, 2)
    assert metrics["steps"] == metrics["epochs_completed"] * 3 == 6
    assert (output / "model.keras").exists()
    # The chief's checkpoints: every 2 steps and at epoch ends, last 3 kept.
    state = output / "checkpoints" / "train_state"
    assert sorted(p.name for p in state.glob("ckpt-*.index")) == [
        "ckpt-3.index", "ckpt-4.index", "ckpt-6.index"
    ]  # fmt: skip
