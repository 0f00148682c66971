"""The generated reference pages: the command line and the API entries."""

import argparse
import importlib.util
import pathlib

from keras_transformer import cli

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    raise AssertionError("no sub-commands")


def test_cli_page_lists_every_command_and_flag_of_the_parser():
    hooks = _load("hooks")
    page = hooks.cli_reference()
    commands = _subparsers(cli.build_parser())
    assert set(cli.COMMANDS) <= set(commands)
    for name, subparser in commands.items():
        assert f"## `keras-transformer {name}`" in page
        for action in subparser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings:
                assert f"`{flag}`" in page, (name, flag)


def test_cli_page_follows_the_parser(monkeypatch):
    # A command added to the CLI appears without editing a page.
    hooks = _load("hooks")
    build = cli.build_parser

    def with_extra_command():
        parser = build()
        extra = _subparsers(parser)
        new = argparse.ArgumentParser(prog="keras-transformer frobnicate")
        new.add_argument("--widgets", type=int, default=3, help="How many.")
        extra["frobnicate"] = new
        return parser

    monkeypatch.setattr(cli, "build_parser", with_extra_command)
    page = hooks.cli_reference()
    assert "## `keras-transformer frobnicate`" in page
    assert "| `--widgets` `WIDGETS` |  | `3` | How many. |" in page


def test_api_entries_name_every_export_where_it_is_defined():
    hooks = _load("hooks")
    entries = hooks.api_entries("keras_transformer.layers")
    assert (
        "::: keras_transformer.layers.multi_head_attention.MultiHeadAttention"
        in entries
    )
    # A package exporting its names lazily (module __getattr__) still resolves.
    training = hooks.api_entries("keras_transformer.training")
    assert "::: keras_transformer.training.losses.LabelSmoothedCrossEntropy" in training
    assert "::: keras_transformer.training.strategy.STRATEGY_NAMES" in training
    import keras_transformer.training as package

    for name in package.__all__:
        assert f"toc_label: {name}\n" in training


def test_doctest_sessions_become_code_fences():
    fences = _load("griffe_doctests")
    text = "Example:\n\n>>> x = 1\n>>> x + 1\n2\n\nAfter."
    assert fences.fence_doctests(text) == (
        "Example:\n\n```pycon\n>>> x = 1\n>>> x + 1\n2\n```\n\nAfter."
    )
    fenced = "```python\n>>> not a session\n```"
    assert fences.fence_doctests(fenced) == fenced
