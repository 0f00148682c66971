"""The python blocks of the tour (and guides) run and print what the pages show."""

import pathlib

import pytest

from tests.docs import markdown_blocks

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
TOUR = DOCS / "tour.md"
REUSING = DOCS / "guides" / "reusing-layers.md"


def test_blocks_pair_code_with_outputs():
    examples = markdown_blocks.examples(TOUR.read_text(encoding="utf-8").splitlines())
    assert len(examples) >= 20
    compared = [example for example in examples if example.compared]
    # Most steps print numbers a reader can reproduce without the demo model.
    assert len(compared) >= 12
    # Every output block belongs to a python block.
    assert all(example.output is not None for example in examples)


@pytest.mark.parametrize("page", [TOUR, REUSING], ids=["tour", "reusing-layers"])
def test_page_runs_and_prints_the_shown_outputs(page, small_model_dir):
    lines = page.read_text(encoding="utf-8").splitlines()
    examples = markdown_blocks.examples(lines)
    # The blocks that load "runs/demo" run on the session's small trained model.
    printed = markdown_blocks.run(examples, model_dir=small_model_dir)
    assert markdown_blocks.mismatches(examples, printed) == []


def test_a_changed_output_is_caught():
    lines = [
        "```python",
        "print(1 + 1)",
        "```",
        "",
        '```text title="Output"',
        "3",
        "```",
    ]
    examples = markdown_blocks.examples(lines)
    printed = markdown_blocks.run(examples)
    assert printed == ["2\n"]
    assert markdown_blocks.mismatches(examples, printed) == [(1, "3", "2\n")]
    assert markdown_blocks.update(lines, examples, printed)[5] == "2"
