"""A Griffe extension: docstring `>>>` examples rendered as code.

Keras-style docstrings write `Example:` followed by a blank line and an
unindented doctest session, which a Google-style parser reads as plain text
(and Markdown as nested quotes). Each run of `>>>` / `...` lines, with the
output lines after it up to a blank line, is wrapped here in a `pycon` code
fence before the docstring is parsed. Docstrings are not changed on disk.
"""

import griffe

_PROMPTS = (">>>", "...")


def fence_doctests(text):
    """`text` with every doctest session wrapped in a ```` ```pycon ```` fence."""
    lines = text.splitlines()
    result = []
    index = 0
    in_fence = False
    while index < len(lines):
        line = lines[index]
        stripped = line.lstrip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        if in_fence or not stripped.startswith(">>>"):
            result.append(line)
            index += 1
            continue
        indent = line[: len(line) - len(stripped)]
        session = []
        while index < len(lines) and lines[index].strip():
            session.append(lines[index][len(indent) :])
            index += 1
        result += (
            [f"{indent}```pycon"] + [indent + s for s in session] + [f"{indent}```"]
        )
    return "\n".join(result)


class DoctestFences(griffe.Extension):
    """Wraps the doctest sessions of every docstring in code fences."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
