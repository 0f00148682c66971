"""A quiet console: what the command line shows of TensorFlow's and Python's
logging and warnings.

By default a command prints only its own output: no TensorFlow C++ log
lines (oneDNN, CUDA probing, CPU features, XLA start-up), no
TensorFlow/absl Python logging below errors and no Python warnings.
`--verbose`, or the environment variable `KERAS_TRANSFORMER_VERBOSE=1`,
shows them all, for debugging.

TensorFlow 2.21 writes its start-up lines through absl before absl's
logging is initialized, where `TF_CPP_MIN_LOG_LEVEL` does not apply, so
`quiet_stderr` filters them out of file descriptor 2 itself.
"""

import contextlib
import logging
import os
import re
import sys
import threading
import warnings

VERBOSE_VARIABLE = "KERAS_TRANSFORMER_VERBOSE"

# C++ log lines: absl/glog's `I0000 00:00:1796470160.476826   18217 port.cc:153]`
# and TensorFlow's older `2025-09-17 14:44:05.157831: I external/...:32]`,
# absl's notice that logging is not initialized, and the one line that
# continues the CPU-features message.
TENSORFLOW_LOG_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]"
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] \S+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\)"
    rb"|To enable the following instructions: .* rebuild TensorFlow)"
)


def verbose_requested(flag=False):
    """Whether `--verbose` was given or `KERAS_TRANSFORMER_VERBOSE=1` is set."""
    return bool(flag) or os.environ.get(VERBOSE_VARIABLE, "") not in ("", "0")


def configure(verbose=False):
    """Quiets TensorFlow's Python logging and Python warnings unless `verbose`.

    Call it before TensorFlow is imported. A `TF_CPP_MIN_LOG_LEVEL` the user
    set in the environment is kept.
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.simplefilter("ignore")
    for name in ("tensorflow", "absl", "keras", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _forward(read_fd, write_fd):
    """Copies lines from `read_fd` to `write_fd`, less TensorFlow's log lines."""
    with os.fdopen(read_fd, "rb") as lines:
        for line in lines:
            if not TENSORFLOW_LOG_LINE.match(line):
                os.write(write_fd, line)


@contextlib.contextmanager
def quiet_stderr(enabled=True):
    """Drops TensorFlow's C++ log lines from stderr meanwhile.

    File descriptor 2 (where C++ code and `sys.stderr` write) is pointed at a
    pipe; a thread forwards every other line to the real stderr. On exit,
    the real stderr is restored and everything written is flushed through.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    saved = os.dup(2)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    forwarder = threading.Thread(
        target=_forward, args=(read_fd, saved), name="stderr-filter", daemon=True
    )
    forwarder.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the thread ends
        forwarder.join(timeout=10)
        os.close(saved)
