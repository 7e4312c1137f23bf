"""One exception type for every user-facing error: the CLI prints its message on one line and exits 2."""


class FlowscanError(Exception):
    """A usage or input error the user can fix (bad path, bad ref, bad spec...)."""
