"""Bearer tokens of a teacher service: read from a file on both sides (the server that checks it, the client that
sends it), so a token stays out of the shell history and the process list."""

from __future__ import annotations

from pathlib import Path

from ..errors import DistillabError, require

MAX_TOKEN_FILE_BYTES = 4096


def token_text_ok(token: str) -> bool:
    # a bearer token travels in a header: visible ASCII only, or the header cannot carry it
    return 1 <= len(token) <= 1024 and all(33 <= ord(c) <= 126 for c in token)


def read_token_file(path) -> str:
    """The bearer token kept in a file: its one line, stripped."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DistillabError(f"cannot read the token file {path} ({e.strerror or e})") from None
    require(size <= MAX_TOKEN_FILE_BYTES, f"the token file {path} holds {size} bytes; a token file holds one token "
                                          f"(at most {MAX_TOKEN_FILE_BYTES} bytes)")
    try:
        with open(path, "rb") as f:  # a bounded read: a device or a pipe (/dev/zero) says size 0 and never ends
            data = f.read(MAX_TOKEN_FILE_BYTES + 1)
        require(len(data) <= MAX_TOKEN_FILE_BYTES, f"the token file {path} holds more than {MAX_TOKEN_FILE_BYTES} "
                                                   "bytes; a token file holds one token")
        token = data.decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise DistillabError(f"cannot read the token file {path} ({getattr(e, 'strerror', None) or e})") from None
    require(token != "", f"the token file {path} is empty; write the token into it")
    require(token_text_ok(token), f"the token in {path} must be 1..1024 printable ASCII characters without spaces")
    return token
