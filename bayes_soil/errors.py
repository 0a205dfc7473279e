"""Exceptions that the CLI turns into exit codes and clear messages."""


class BayesSoilError(Exception):
    """Base error; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class InputError(BayesSoilError):
    """Bad user input (file, row, column named in the message): exit code 2."""

    exit_code = 2


class DiagnosticsError(BayesSoilError):
    """A fit failed its diagnostics gate under ``--strict``: exit code 3."""

    exit_code = 3
