"""Errors of the data layer. Every message names the problem and the fix."""


class DatasetError(Exception):
    """A dataset cannot be found, read, written or used as asked."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset id is not in the local Minari store."""


class DatasetFormatError(DatasetError, ValueError):
    """A source file or stored dataset is corrupt, incomplete or inconsistent."""


class DatasetExistsError(DatasetError, FileExistsError):
    """Writing would replace a dataset that already exists."""


class DatasetBusyError(DatasetError, FileExistsError):
    """Another process is writing the dataset id."""


class UnsupportedSpaceError(DatasetError, TypeError):
    """An observation or action space cannot be flattened losslessly into a float vector."""
