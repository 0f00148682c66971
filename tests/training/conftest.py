"""Starts the subprocess checks of `test_strategy.py` and `test_compile_count.py`
as soon as tests are collected.

Those checks need fresh processes (2 logical CPUs, `TF_CONFIG`, `XLA_FLAGS`)
and spend most of their ~20 s importing TensorFlow; started at collection time
they run while the in-process tests do. Under pytest-xdist they start lazily
instead.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile

import pytest

from keras_transformer.training.strategy import TPU_ENVIRONMENT_VARIABLES

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
COMPILE_COUNT_WORKER = os.path.join(
    os.path.dirname(__file__), "compile_count_worker.py"
)

_started = None


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_worker(mode, script=WORKER, remove=(), **environment):
    """Starts `SCRIPT MODE` (`distributed_worker.py`) in a fresh process,
    without the environment variables `remove`."""
    env = {**os.environ, **environment}
    for name in TPU_ENVIRONMENT_VARIABLES + ("TF_CONFIG",) + tuple(remove):
        if name not in environment:
            env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, script, mode],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Workers:
    """The running subprocess checks and their parsed results."""

    def __init__(self):
        tf_config = {
            "cluster": {"worker": [f"localhost:{free_port()}"]},
            "task": {"type": "worker", "index": 0},
        }
        self.directory = tempfile.TemporaryDirectory(prefix="workers-")
        # Where `compile_count_worker.py` has XLA dump its compilations.
        self.compile_dump = os.path.join(self.directory.name, "xla")
        self.processes = {
            "compile_count": start_worker(
                self.compile_dump, COMPILE_COUNT_WORKER, remove=["XLA_FLAGS"]
            ),
            "mirrored": start_worker("mirrored"),
            "mirrored_trainer": start_worker("mirrored_trainer"),
            "multiworker": start_worker("multiworker", TF_CONFIG=json.dumps(tf_config)),
        }
        self.results = {}

    def result(self, name):
        """The JSON that worker `name` printed, once it has finished."""
        if name not in self.results:
            process = self.processes[name]
            try:
                stdout, stderr = process.communicate(timeout=240)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            lines = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
            assert process.returncode == 0 and lines, stderr[-3000:]
            self.results[name] = json.loads(lines[-1][len("RESULT ") :])
        return self.results[name]

    def close(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
        self.directory.cleanup()


def _workers():
    global _started
    if _started is None:
        _started = Workers()
    return _started


@pytest.hookimpl(trylast=True)  # after `-k`/`-m` deselection
def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if any("workers" in getattr(item, "fixturenames", ()) for item in items):
        _workers()


def pytest_sessionfinish(session, exitstatus):
    if _started is not None:
        _started.close()


@pytest.fixture(scope="session")
def workers():
    return _workers()
