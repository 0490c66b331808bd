"""One error type for bad user input: the CLI prints its message on one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (file, row, field, option). The message names what and where."""
