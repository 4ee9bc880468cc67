"""One exception type for every problem the user can fix.

The CLI turns it into the one-line ``distillab: error: ...`` message and exit code 2.
"""


class DistillabError(Exception):
    """Bad input: the message says what is wrong and how to fix it."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise DistillabError(message)
