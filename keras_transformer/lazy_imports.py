"""Packages whose public names are imported on first use (PEP 562).

It imports nothing of the library (nor TensorFlow), so the command line can
parse its arguments before any heavy import.
"""

import importlib


def lazy_exports(package, exports, namespace):
    """A package's module-level `__getattr__` and `__dir__`.

    `__getattr__(name)` imports `package.<exports[name]>` and returns its
    `name`; any other name is tried as a sub-module of `package`.

    Args:
        package: the package's `__name__`.
        exports: dict, public name -> the module (relative to `package`, e.g.
            `"models.transformer"`) that defines it.
        namespace: the package's `globals()`.

    Returns:
        `(__getattr__, __dir__)`.

    Example:

    >>> getattr_, dir_ = lazy_exports("json", {"JSONDecoder": "decoder"}, {})
    >>> getattr_("JSONDecoder").__name__, dir_()
    ('JSONDecoder', ['JSONDecoder'])
    """

    def __getattr__(name):
        if name in exports:
            module = importlib.import_module(f"{package}.{exports[name]}")
            return getattr(module, name)
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{package}.{name}":
                raise
            raise AttributeError(
                f"module {package!r} has no attribute {name!r}"
            ) from None

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
