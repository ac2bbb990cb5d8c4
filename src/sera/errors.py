"""The two kinds of failure a user can meet, and the exit codes the CLI maps them to."""


class SeraInputError(Exception):
    """Bad input the user can fix (a file, a row, a field, an option): exit code 2."""

    exit_code = 2


class SeraRuntimeError(Exception):
    """A fault while running (NaN loss, failed write, interrupted generation): exit code 1."""

    exit_code = 1
