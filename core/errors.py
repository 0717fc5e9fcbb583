"""User-facing error types: the CLI prints these as one clear line instead of a traceback."""


class CopsError(Exception):
    """Bad input from the user (a file, a key, a value); the message says what was expected."""


class RecipeError(CopsError, ValueError):
    """A recipe key, type or value is wrong."""


class DatasetError(CopsError, ValueError):
    """A dataset file or annotation is missing or inconsistent."""
