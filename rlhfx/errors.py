"""The one error type users see: a short paragraph saying what went wrong, where, and how to fix it."""


class RlhfxError(Exception):
    """A problem with the user's input or environment. The CLI prints it without a traceback (exit code 2)."""

    def __init__(self, what: str, fix: str | None = None):
        self.what = what
        self.fix = fix
        super().__init__(what if fix is None else f"{what} Fix: {fix}")
