"""Starts `benchmarks/accelerator.py --smoke` as soon as tests are collected.

The smoke run is a subprocess (~50 s on an idle 2-core machine) whose
results `test_accelerator.py` checks. Started at collection time and with
those tests moved to the end of the run, it runs while the in-process tests
do (which leave the second core mostly idle), as `tests/training/conftest.py`
does for its workers. Under pytest-xdist it starts lazily instead.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "accelerator.py"
FIXTURE = "accelerator_smoke"

_started = None


class Smoke:
    """The running smoke benchmark and, once it has finished, its results."""

    def __init__(self):
        self.directory = tempfile.TemporaryDirectory(prefix="accelerator-")
        self.output = pathlib.Path(self.directory.name) / "results.json"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
               "KERAS_BACKEND": "tensorflow"}  # fmt: skip
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--smoke", "--output", str(self.output)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self._results = None

    def results(self):
        """The JSON the script wrote; asserts that it ran cleanly."""
        if self._results is None:
            try:
                stdout, stderr = self.process.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                self.process.kill()
                stdout, stderr = self.process.communicate()
            assert self.process.returncode == 0, stderr[-4000:]
            assert "train MFU" in stdout  # the printed table
            self._results = json.loads(self.output.read_text())
        return self._results

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
        self.directory.cleanup()


def _smoke():
    global _started
    if _started is None:
        _started = Smoke()
    return _started


@pytest.hookimpl(trylast=True)  # after `-k`/`-m` deselection
def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    smoke = [item for item in items if FIXTURE in getattr(item, "fixturenames", ())]
    if smoke:
        _smoke()
        items[:] = [item for item in items if item not in smoke] + smoke


def pytest_sessionfinish(session, exitstatus):
    if _started is not None:
        _started.close()


@pytest.fixture(scope="session")
def accelerator_smoke():
    """The results JSON of `benchmarks/accelerator.py --smoke`."""
    return _smoke().results()
