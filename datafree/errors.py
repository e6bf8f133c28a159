"""One exception type for every user-facing failure: its message is the single line the CLI prints."""


class DatafreeError(Exception):
    """A problem the user can fix; ``str(err)`` says what went wrong and what to do."""
