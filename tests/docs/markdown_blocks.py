"""Runs a documentation page's python blocks and checks their printed output.

A page pairs a ```` ```python ```` block with the ```` ```text ```` block
right after it whose first line has `title="Output"`: that is what the code
prints, and it is compared exactly (trailing spaces aside). An output block
titled otherwise (e.g. `title="Output from runs/demo"`) documents a run on
the reader's trained model: it is not compared, but its code still runs.
All python blocks of a page run in order in one namespace, as a reader who
pastes them into one session would run them.

    python -m tests.docs.markdown_blocks docs/tour.md            # check
    python -m tests.docs.markdown_blocks docs/tour.md --update   # rewrite outputs
    python -m tests.docs.markdown_blocks docs/tour.md --model DIR
        # runs the blocks with "runs/demo" replaced by DIR
"""

import argparse
import contextlib
import dataclasses
import io
import os
import re
import sys

_FENCE = re.compile(r"^```(\w+)(.*)$")
COMPARED_TITLE = 'title="Output"'
DEMO_MODEL = "runs/demo"


@dataclasses.dataclass
class Block:
    language: str
    info: str  # the rest of the opening fence line
    start: int  # index of the first content line
    end: int  # index of the closing fence
    code: str


@dataclasses.dataclass
class Example:
    code: Block
    output: Block | None  # the output block right after the code, if any

    @property
    def compared(self):
        return self.output is not None and COMPARED_TITLE in self.output.info


def blocks(lines):
    """Every fenced block of `lines` (top level fences only)."""
    found = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        close = index + 1
        while close < len(lines) and lines[close].rstrip() != "```":
            close += 1
        if close == len(lines):
            raise ValueError(f"unclosed code fence at line {index + 1}")
        code = "\n".join(lines[index + 1 : close])
        found.append(Block(match.group(1), match.group(2), index + 1, close, code))
        index = close + 1
    return found


def examples(lines):
    """The python blocks, each with the output block that follows it."""
    found = blocks(lines)
    result = []
    for index, block in enumerate(found):
        if block.language != "python":
            continue
        output = None
        if index + 1 < len(found):
            candidate = found[index + 1]
            between = lines[block.end + 1 : candidate.start - 1]
            if candidate.language == "text" and not any(s.strip() for s in between):
                output = candidate
        result.append(Example(block, output))
    return result


def run(examples_, model_dir=None):
    """Runs the examples in one namespace; returns what each printed."""
    namespace = {"__name__": "__docs__"}
    printed = []
    for number, example in enumerate(examples_, 1):
        code = example.code.code
        if model_dir is not None:
            code = code.replace(f'"{DEMO_MODEL}"', repr(str(model_dir)))
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            try:
                exec(compile(code, f"<block {number}>", "exec"), namespace)
            except Exception as error:
                raise AssertionError(
                    f"python block {number} (line {example.code.start}) failed: "
                    f"{type(error).__name__}: {error}\n{code}"
                ) from error
        printed.append(stdout.getvalue())
    return printed


def _normalize(text):
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def mismatches(examples_, printed):
    """`(block number, expected, printed)` of each compared output that differs."""
    found = []
    for number, (example, output) in enumerate(zip(examples_, printed), 1):
        if example.compared and _normalize(example.output.code) != _normalize(output):
            found.append((number, example.output.code, output))
    return found


def update(lines, examples_, printed):
    """`lines` with every output block replaced by what its code printed."""
    lines = list(lines)
    for example, output in reversed(list(zip(examples_, printed))):
        if example.output is None:
            continue
        new = _normalize(output).splitlines()
        lines[example.output.start : example.output.end] = new
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page")
    parser.add_argument("--update", action="store_true")
    parser.add_argument("--model", help=f"a model directory to use for {DEMO_MODEL}")
    args = parser.parse_args(argv)
    with open(args.page, encoding="utf-8") as file:
        lines = file.read().splitlines()
    found = examples(lines)
    printed = run(found, args.model)
    if args.update:
        with open(args.page, "w", encoding="utf-8") as file:
            file.write("\n".join(update(lines, found, printed)) + "\n")
        print(f"updated {sum(e.output is not None for e in found)} output blocks")
        return 0
    bad = mismatches(found, printed)
    for number, expected, got in bad:
        print(f"block {number}: expected\n{expected}\ngot\n{got}", file=sys.stderr)
    print(f"{len(found)} python blocks, {len(bad)} mismatched outputs")
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
