"""The one exception type for user mistakes: the CLI prints its message on one line."""


class VizkitError(Exception):
    """A problem the user can fix (bad value, missing file, unknown name)."""


class UsageError(VizkitError):
    """A bad command-line or API value: exit status 2 in the CLI."""
