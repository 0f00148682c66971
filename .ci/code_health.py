"""Code-health checks that ruff and import-linter do not make.

- No function body (the lines after its docstring) is longer than
  `--max-lines`; `--top K` lists the K longest.
- No module imports a `_private` name from another module
  (`from a.b import _name`, or `a.b._name` through an imported module).

Usage: python .ci/code_health.py [--max-lines N] [--top K] PATH...
Exits 1 when a check fails.
"""

import argparse
import ast
import pathlib
import sys


def _body_without_docstring(node):
    body = node.body
    first = body[0] if body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        body = body[1:]
    return body


def function_lengths(path, tree):
    """Yields `(length, "file:line name")` for every function of `tree`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = _body_without_docstring(node)
            if body:
                length = body[-1].end_lineno - body[0].lineno + 1
                yield length, f"{path}:{node.lineno} {node.name}"


def _is_private(name):
    return name.startswith("_") and not name.startswith("__")


def private_imports(path, tree):
    """Yields `"file:line name"` for each `_private` name imported from a module.

    Relative imports and imports of a package's own `__init__`-level names
    are treated alike: any `from X import _name` is reported.
    """
    imported_modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                if _is_private(alias.name):
                    yield f"{path}:{node.lineno} from {node.module} import {alias.name}"
                else:
                    imported_modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                imported_modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _is_private(node.attr)
            and isinstance(node.value, ast.Name)
            and node.value.id in imported_modules
            and node.value.id.islower()
        ):
            yield f"{path}:{node.lineno} {node.value.id}.{node.attr}"


def _files(paths):
    for root in map(pathlib.Path, paths):
        yield from [root] if root.is_file() else sorted(root.rglob("*.py"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--max-lines", type=int, default=100)
    parser.add_argument("--top", type=int, default=0)
    parser.add_argument(
        "--private-imports",
        nargs="*",
        default=None,
        help="paths checked for private imports (default: the same paths)",
    )
    args = parser.parse_args(argv)
    lengths, problems = [], []
    for path in _files(args.paths):
        lengths.extend(function_lengths(path, ast.parse(path.read_text(), str(path))))
    for path in _files(args.private_imports or args.paths):
        tree = ast.parse(path.read_text(), str(path))
        problems.extend(
            f"{w}: imports a private name" for w in private_imports(path, tree)
        )
    lengths.sort(reverse=True)
    for length, where in lengths[: args.top]:
        print(f"{length:5d}  {where}")
    problems += [
        f"{where}: body of {n} lines (limit {args.max_lines})"
        for n, where in lengths
        if n > args.max_lines
    ]
    print("\n".join(problems) or "code health: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
