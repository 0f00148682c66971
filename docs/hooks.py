"""MkDocs hooks: pages written from the code and files they document.

Markers in a page's markdown are replaced at build time, so the site has one
source of truth:

- `<!-- cli-reference -->`: the `keras-transformer` command line, rendered
  from `keras_transformer.cli.build_parser()` (every sub-command, its
  options table and its `--help` text). A command or flag added to the CLI
  appears here without editing a page.
- `<!-- api: PACKAGE -->`: the package's docstring, then one mkdocstrings
  entry per public name the package exports (its `__all__`, else the public
  names its `__init__.py` imports), each documented where it is defined.
- `<!-- include: PATH#HEADING -->`: the section of a repository markdown
  file under `## HEADING` (up to the next `## `), with its relative links
  made plain text (they point inside the repository, not the site).
"""

import argparse
import ast
import importlib
import os
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent

_CLI_MARKER = "<!-- cli-reference -->"
_API_MARKER = re.compile(r"<!-- api: ([\w.]+) -->")
_INCLUDE_MARKER = re.compile(r"<!-- include: ([\w./-]+)#([^>]+?) -->")
_LINK = re.compile(r"\[([^\]]+)\]\((?!https?://)([^)]+)\)")


def on_page_markdown(markdown, page, config, files):
    if _CLI_MARKER in markdown:
        markdown = markdown.replace(_CLI_MARKER, cli_reference())
    markdown = _API_MARKER.sub(lambda match: api_entries(match.group(1)), markdown)
    return _INCLUDE_MARKER.sub(
        lambda match: include_section(match.group(1), match.group(2)), markdown
    )


# ----------------------------------------------------------------- CLI page


def _subcommands(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, subparser in action.choices.items():
                yield name, helps.get(name), subparser


def _option_row(action):
    if action.option_strings:
        names = ", ".join(f"`{name}`" for name in action.option_strings)
        if action.nargs != 0:
            metavar = action.metavar or action.dest.upper()
            names += f" `{metavar}`"
    else:
        names = f"`{action.metavar or action.dest}`"
    required = "yes" if action.required else ""
    default = action.default
    if action.nargs == 0 or default in (None, argparse.SUPPRESS):
        default = ""
    else:
        default = f"`{default}`"
    choices = ""
    if action.choices:
        choices = ", ".join(f"`{choice}`" for choice in action.choices)
    text = (action.help or "").replace("%%", "%").replace("\n", " ")
    if action.help and "%(default)" in action.help:
        text = text.replace("%(default)s", str(action.default))
    if choices:
        text = f"{text} One of {choices}.".strip()
    text = text.replace("|", "\\|")
    return f"| {names} | {required} | {default} | {text} |"


def cli_reference():
    """Markdown for the whole `keras-transformer` command line."""
    from keras_transformer.cli import build_parser

    os.environ["COLUMNS"] = "88"  # argparse wraps --help at this width
    parser = build_parser()
    lines = [
        "```text",
        parser.format_help().rstrip(),
        "```",
        "",
    ]
    for name, summary, subparser in _subcommands(parser):
        lines += [f"## `keras-transformer {name}`", ""]
        if summary:
            lines += [summary, ""]
        if subparser.description:
            lines += [subparser.description, ""]
        for group in subparser._action_groups:
            actions = [
                action
                for action in group._group_actions
                if not isinstance(action, argparse._HelpAction)
            ]
            if not actions:
                continue
            title, _, remark = group.title.partition(" (")
            lines += [f"### {title.capitalize()}", ""]
            if remark:
                lines += [f"({remark}", ""]
            if group.description:
                lines += [group.description, ""]
            lines += [
                "| argument | required | default | what it does |",
                "| --- | --- | --- | --- |",
            ]
            lines += [_option_row(action) for action in actions]
            lines.append("")
        lines += [
            "`--help`:",
            "",
            "```text",
            subparser.format_help().rstrip(),
            "```",
            "",
        ]
    return "\n".join(lines)


# ----------------------------------------------------------------- API pages


def _module_file(module):
    path = ROOT.joinpath(*module.split("."))
    if path.is_dir():
        return path / "__init__.py"
    return path.with_suffix(".py")


def _static_public_names(tree):
    """The public names an `__init__.py` imports from the package, in order."""
    names = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "keras_transformer"
        ):
            for alias in node.names:
                name = alias.asname or alias.name
                if not name.startswith("_") and name not in names:
                    names.append(name)
    return names


def public_names(module):
    """The names `module` exports: its `__all__`, else its public imports."""
    imported = importlib.import_module(module)
    names = getattr(imported, "__all__", None)
    if names is None:
        tree = ast.parse(_module_file(module).read_text(encoding="utf-8"))
        names = _static_public_names(tree)
    return list(names)


def _defines(path, name):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            if node.name == name:
                return True
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
    return False


def definition_path(module, name):
    """Where `module.name` is defined, as a dotted path mkdocstrings can load.

    Packages may export names lazily (a module `__getattr__`), which a static
    reader cannot follow, so the object is imported and traced to its
    defining module; a constant is looked up in the package's modules.
    """
    value = getattr(importlib.import_module(module), name)
    owner = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if isinstance(owner, str) and owner.startswith("keras_transformer") and qualname:
        return f"{owner}.{qualname}"
    package = _module_file(module).parent
    for path in sorted(package.glob("*.py")):
        if path.name != "__init__.py" and _defines(path, name):
            return f"{module}.{path.stem}.{name}"
    return f"{module}.{name}"


def api_entries(module):
    """mkdocstrings entries: the module's docstring, then each public name."""
    if _module_file(module).name != "__init__.py":
        # A plain module: mkdocstrings lists its public members.
        return "\n".join(
            [f"::: {module}", "    options:", "      show_root_heading: false", ""]
        )
    lines = [
        f"::: {module}",
        "    options:",
        "      members: false",
        "      show_root_heading: false",
        "      show_root_toc_entry: false",
        "",
    ]
    for name in public_names(module):
        lines += [
            f"::: {definition_path(module, name)}",
            "    options:",
            f"      toc_label: {name}",
            "",
        ]
    return "\n".join(lines)


# ------------------------------------------------------------- included text


def include_section(path, heading):
    """The `## heading...` section of a repository markdown file."""
    text = (ROOT / path).read_text(encoding="utf-8")
    lines = text.splitlines()
    start = None
    for index, line in enumerate(lines):
        if start is None and line.startswith("## ") and line[3:].startswith(heading):
            start = index + 1
        elif start is not None and line.startswith("## "):
            lines = lines[start:index]
            break
    else:
        if start is None:
            raise ValueError(f"{path} has no section '## {heading}'")
        lines = lines[start:]
    body = "\n".join(lines).strip("\n")
    # Nested headings move under the page's own heading levels.
    body = re.sub(r"^### ", "#### ", body, flags=re.MULTILINE)
    folder = os.path.dirname(path)

    def plain(match):
        target = os.path.normpath(os.path.join(folder, match.group(2).split("#")[0]))
        return f"{match.group(1)} (`{target}` in the repository)"

    return _LINK.sub(plain, body)
