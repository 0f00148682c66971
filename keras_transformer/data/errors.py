"""The error raised for bad input data."""


class DataError(ValueError):
    """Bad input data: a missing file, a malformed line, invalid UTF-8, ...

    The message is one line and names the file (and line) where it applies,
    e.g. `corpus.tsv:17: expected 'source<TAB>target', found 0 tabs`, so the
    command line can print it as is.

    Example:

    >>> from keras_transformer.data import read_tsv
    >>> try:
    ...     read_tsv("missing.tsv")
    ... except DataError as error:
    ...     print(error)
    missing.tsv: no such file
    """
