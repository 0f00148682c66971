"""Every docstring example of the package runs (as keras-hub checks its own).

Two kinds of examples are collected from every module of `keras_transformer`:

- `>>>` examples: run with `doctest` (ellipsis and whitespace-normalized
  comparison) in the module's namespace; what they print must match.
- ```` ```python ```` fences inside docstrings: executed in the module's
  namespace; they must run without error.

Each runs in a fresh temporary working directory (examples may write small
files such as `train.tsv`). A fence's source is registered in `linecache`, as
a file's would be, so that AutoGraph can read the functions it defines (as it
does when a user runs the example from a `.py` file). Examples of modules that
need an optional extra (`ctranslate2`) are skipped when it is not installed.

Examples that do not run yet are listed in `KNOWN_FAILURES` with the reason;
they are strict expected failures, so an example that starts to pass must be
taken off the list.
"""

import doctest
import importlib
import io
import linecache
import pkgutil
import re
import textwrap

import pytest

import keras_transformer

_FENCE = re.compile(r"^\s*```python\s*\n(.*?)^\s*```", re.MULTILINE | re.DOTALL)

# Module (prefix) of an example -> the optional package its examples need.
OPTIONAL_PACKAGES = {"keras_transformer.export.ctranslate2": "ctranslate2"}

# "module.qualname[fence N]" -> why it does not run yet. These docstrings are
# in files owned by other work; the examples are illustrations with
# placeholders (`...`, names defined nowhere) rather than runnable code.
KNOWN_FAILURES = {}


def _modules():
    names = ["keras_transformer"]
    for info in pkgutil.walk_packages(
        keras_transformer.__path__, prefix="keras_transformer."
    ):
        if not info.name.endswith(".__main__"):  # runs the command line
            names.append(info.name)
    return sorted(names)


def collect_examples():
    """`(id, kind, test)`: kind "doctest" (a `doctest.DocTest`) or "fence"
    (`(code, globs)`)."""
    finder = doctest.DocTestFinder(exclude_empty=False)
    found = []
    for name in _modules():
        module = importlib.import_module(name)
        for test in finder.find(module):
            if test.examples:
                found.append((test.name, "doctest", test))
            fences = _FENCE.findall(test.docstring or "")
            for number, code in enumerate(fences, 1):
                found.append((f"{test.name}[fence {number}]", "fence", (code, test)))
    return found


EXAMPLES = collect_examples()


def _params():
    for example_id, kind, test in EXAMPLES:
        marks = []
        if example_id in KNOWN_FAILURES:
            marks.append(
                pytest.mark.xfail(reason=KNOWN_FAILURES[example_id], strict=True)
            )
        yield pytest.param(kind, test, id=example_id, marks=marks)


def test_examples_were_found():
    kinds = [kind for _, kind, _ in EXAMPLES]
    assert kinds.count("doctest") >= 40
    ids = {example_id for example_id, _, _ in EXAMPLES}
    # Every known failure still names an existing example.
    assert set(KNOWN_FAILURES) <= ids


def _run_fence(code, owner):
    """Executes a fence in a copy of its module's namespace, its source in
    `linecache` (as a file's: `inspect.getsource` of what it defines works)."""
    code = textwrap.dedent(code)
    filename = f"<{owner.name} example>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        exec(compile(code, filename, "exec"), dict(owner.globs))
    finally:
        linecache.cache.pop(filename, None)


@pytest.mark.parametrize("kind, test", list(_params()))
def test_docstring_example(kind, test, tmp_path, monkeypatch):
    name = test.name if kind == "doctest" else test[1].name
    for prefix, package in OPTIONAL_PACKAGES.items():
        if name == prefix or name.startswith(prefix + "."):
            pytest.importorskip(package)
    monkeypatch.chdir(tmp_path)  # examples may write small files
    if kind == "doctest":
        runner = doctest.DocTestRunner(
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        )
        report = io.StringIO()
        test.globs = dict(test.globs)
        result = runner.run(test, out=report.write, clear_globs=True)
        assert result.failed == 0, report.getvalue()
    else:
        _run_fence(*test)
