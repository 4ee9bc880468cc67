"""A model behind an HTTP API (``distillab serve``): batches of inputs in, outputs out, never the weights.

The server side lives in ``server``; it needs the ``serve`` extra (starlette, uvicorn), imported only when a
service is made.
"""

from .server import ServeOptions, ServiceHandle, make_app, read_token_file, serve_forever, start_service

__all__ = ["ServeOptions", "ServiceHandle", "make_app", "read_token_file", "serve_forever", "start_service"]
