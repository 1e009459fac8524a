"""Turning exceptions into the one-line errors the command lines print."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type when the message is empty."""
    text = str(e)
    return text.splitlines()[0] if text else type(e).__name__
