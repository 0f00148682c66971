"""The error raised for bad input data."""


class DataError(ValueError):
    """Bad input data: a missing file, a malformed line, invalid UTF-8, ...

    The message is one line and names the file (and line) where it applies,
    so the command line can print it as is.
    """
