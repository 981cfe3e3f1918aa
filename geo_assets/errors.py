"""Errors that users see. Each names the input at fault and what to do about it."""


class GeoscoutError(Exception):
    """Base class for every error geoscout raises on purpose."""


class InputError(GeoscoutError, ValueError):
    """Bad user input: a setting, a file, an argument. The message names it."""


class DataUnavailableError(GeoscoutError):
    """Data that a step needs is missing and cannot be fetched (e.g. offline)."""


class RemoteServiceError(GeoscoutError):
    """A remote API failed in a way that retrying now will not fix."""
