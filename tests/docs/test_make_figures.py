"""`docs/make_figures.py` draws every figure the pages use."""

import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
_FIGURE = re.compile(r"\(figures/([\w.-]+\.png)\)")


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "make_figures", DOCS / "make_figures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def referenced_figures():
    names = set()
    for page in DOCS.rglob("*.md"):
        names.update(_FIGURE.findall(page.read_text(encoding="utf-8")))
    return names


def test_pages_use_only_figures_the_script_draws():
    script = _load_script()
    used = referenced_figures()
    assert {"positional_encoding.png", "cross_attention.png"} <= used
    assert used <= set(script.FIGURES)
    for name in used:  # committed, and small enough for a web page
        size = (DOCS / "figures" / name).stat().st_size
        assert 10_000 < size < 150_000, (name, size)


def test_script_writes_every_figure(small_model_dir, tmp_path):
    pytest.importorskip("matplotlib")
    script = _load_script()
    assert (
        script.main(["--model", str(small_model_dir), "--output", str(tmp_path)]) == 0
    )
    written = {path.name: path.stat().st_size for path in tmp_path.iterdir()}
    assert set(written) == set(script.FIGURES)
    assert referenced_figures() <= set(written)
    for name, size in written.items():
        assert size > 5_000, (name, size)  # a drawn figure, not an empty canvas
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_script_refuses_a_directory_without_a_model(tmp_path, capsys):
    script = _load_script()
    with pytest.raises(SystemExit) as stop:
        script.main(["--model", str(tmp_path), "--output", str(tmp_path / "out")])
    assert stop.value.code == 2
    assert "keras-transformer demo" in capsys.readouterr().err
