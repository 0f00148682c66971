"""List the longest functions of a tree; fail when one body is over a limit.

A function's length is the number of lines of its body after the docstring.
Usage: python .ci/function_lengths.py [--max-lines N] [--top K] PATH...
"""

import argparse
import ast
import pathlib
import sys


def function_lengths(path):
    """Yields (length, "file:line name") for every function in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body = body[1:]
        if not body:
            continue
        length = body[-1].end_lineno - body[0].lineno + 1
        yield length, f"{path}:{node.lineno} {node.name}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--max-lines", type=int, default=100)
    parser.add_argument("--top", type=int, default=0)
    args = parser.parse_args(argv)
    found = []
    for root in args.paths:
        root = pathlib.Path(root)
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for path in files:
            found.extend(function_lengths(path))
    found.sort(reverse=True)
    for length, where in found[: args.top]:
        print(f"{length:5d}  {where}")
    too_long = [(n, w) for n, w in found if n > args.max_lines]
    for length, where in too_long:
        print(f"{where}: body of {length} lines (limit {args.max_lines})")
    return 1 if too_long else 0


if __name__ == "__main__":
    sys.exit(main())
