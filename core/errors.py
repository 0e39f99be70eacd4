"""The one exception type users see: its message is a complete, one-line explanation."""


class SLMError(Exception):
    """A mistake or condition the user can act on; the CLI prints it as one line and exits non-zero."""


class Cancelled(SLMError):
    """Long work (tokenizer training, encoding) stopped because its cancel token was set."""


def check(what: str, checks: list[tuple[bool, str]]) -> None:
    """Raise `SLMError("invalid WHAT: MESSAGE")` for the first check that does not hold."""
    for ok, message in checks:
        if not ok:
            raise SLMError(f"invalid {what}: {message}")
