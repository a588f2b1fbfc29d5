"""Exceptions that carry a message a user can act on.

Front ends (CLI, widgets, service) catch ``ClipbenchError`` and show its message as it is;
anything else is a bug and keeps its traceback.
"""


class ClipbenchError(Exception):
    """Base class for errors caused by input or configuration, not by a bug."""


class ConfigError(ClipbenchError, ValueError):
    """Invalid configuration value, missing file or folder named in the configuration."""


class ModelLoadError(ClipbenchError, RuntimeError):
    """A model could not be built or its weights could not be loaded."""


class DatasetError(ClipbenchError, RuntimeError):
    """A data set could not be opened or contains no usable images."""
