"""The CLI's exit codes and its usage error, shared by every sub-command module."""

EXIT_OK, EXIT_FAILED_RUNS, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user; printed as one line, exit code 2."""
