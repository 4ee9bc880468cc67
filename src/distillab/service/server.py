"""A model behind an HTTP API: batches of inputs in, the model's outputs out, never its weights.

A Starlette app (``make_app``) served by uvicorn, in a background thread (``start_service``, for Python and tests)
or in the foreground until SIGINT/SIGTERM (``serve_forever``, for ``distillab serve``). The wire protocol is
``protocol.py``'s.
"""

from __future__ import annotations

import errno
import hmac
import json
import math
import signal
import socket
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .. import seeds
from ..errors import DistillabError, require
from .protocol import ROUTES, SERVICE_FORMAT, SERVICE_VERSION
from .tokens import read_token_file, token_text_ok  # noqa: F401  (read_token_file: re-exported)
from ..reporting import SILENT, Reporter

# JSON text per input value: "-1.2345678901234567e-300, " is 26 characters; 32 leaves room for spaces
JSON_BYTES_PER_VALUE = 32
BODY_SLACK_BYTES = 64 * 1024  # the safetensors header, the JSON key and whitespace around the array
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STARTUP_SECONDS = 20.0
STOP_SECONDS = 30.0
# The port of a service run in the foreground (distillab serve) when none is given: a known one, for clients to
# name. A background handle (tests, notebooks) takes a free port chosen by the OS; its url says which.
FOREGROUND_PORT = 8000


@dataclass
class ServeOptions:
    """How a model is served. The one place the defaults live (the CLI and ``distillab.serve`` take them)."""

    host: str = "127.0.0.1"
    port: int | None = None  # None: FOREGROUND_PORT in the foreground, a free port for a background handle; 0: free
    output: str = "probs"  # probs | topk:K | label
    max_batch: int = 1024  # rows per request
    rate: float = 0.0  # requests per second allowed (token bucket, burst = max(1, rate)); 0 = unlimited
    noise: float = 0.0  # std of Gaussian noise added to the log-probabilities (a defence against extraction)
    round: int = 0  # decimals the probabilities are rounded to (0 = not rounded)
    seed: int = 0  # seeds the noise generator
    token: str | None = None  # bearer token; None = no auth
    # A client that opens a connection and sends nothing (or a byte at a time) must not hold it: each request has
    # this long from its first byte (or the connection's opening) to its last, and beyond this many connections at
    # once a new one is answered 503 and closed, well below the process's open-file limit.
    request_timeout: float = 10.0  # seconds
    max_connections: int = 512     # (lowered to leave 64 of the process's open-file limit free)

    def check(self, num_classes: int) -> None:
        """One-line errors for values that cannot be served."""
        require(isinstance(self.host, str) and self.host.strip() != "", "--host must be a host name or address")
        require(self.port is None or type(self.port) is int and 0 <= self.port <= 65535,
                f"--port must be 0..65535 (0: a free port), got {self.port!r}")
        self.output_kind(num_classes)
        require(type(self.max_batch) is int and 1 <= self.max_batch <= 1_000_000,
                f"--max-batch must be a whole number of rows, 1..1000000, got {self.max_batch!r}")
        for name, value in (("rate", self.rate), ("noise", self.noise)):
            require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                    and value >= 0, f"--{name} must be a number >= 0 (0: off), got {value!r}")
        require(type(self.round) is int and 0 <= self.round <= 8,
                f"--round must be 0..8 decimals (0: not rounded; float32 holds about 7), got {self.round!r}")
        require(type(self.seed) is int and 0 <= self.seed < 2**63, f"--seed must be a whole number >= 0, got "
                                                                   f"{self.seed!r}")
        require(isinstance(self.request_timeout, (int, float)) and not isinstance(self.request_timeout, bool)
                and 0 < self.request_timeout <= 3600, f"--request-timeout must be 0..3600 seconds, got "
                                                       f"{self.request_timeout!r}")
        require(type(self.max_connections) is int and 1 <= self.max_connections <= 10_000,
                f"--max-connections must be 1..10000, got {self.max_connections!r}")
        if self.token is not None:
            require(isinstance(self.token, str) and token_text_ok(self.token),
                    "the token must be 1..1024 printable ASCII characters without spaces")

    def output_kind(self, num_classes: int) -> tuple[str, int]:
        """("probs", K) | ("topk", k) | ("label", 1), checked against the model's class count."""
        text = self.output if isinstance(self.output, str) else ""
        if text in ("probs", "label"):
            return text, num_classes if text == "probs" else 1
        name, _, k = text.partition(":")
        require(name == "topk" and k.isdigit(), f"--output must be probs, topk:K or label, got {self.output!r}")
        require(1 <= int(k) <= num_classes - 1, f"--output topk:{k}: K must be 1..{num_classes - 1} for a model with "
                                                f"{num_classes} classes (all {num_classes} is --output probs)")
        return "topk", int(k)


def _check_meta(meta) -> tuple[tuple[int, int, int], list, dict]:
    require(isinstance(meta, dict) and all(k in meta for k in ("input_shape", "classes", "normalisation")),
            "serving a model needs its metadata: input_shape, classes and normalisation (load_model gives them)")
    shape = meta["input_shape"]
    require(isinstance(shape, (list, tuple)) and len(shape) == 3 and all(type(v) is int and v >= 1 for v in shape),
            f"the model's input_shape must be three sizes (C, H, W), got {shape!r}")
    classes = meta["classes"]
    require(isinstance(classes, (list, tuple)) and len(classes) >= 2,
            "the model's classes must be a list of at least 2 classes")
    norm = meta["normalisation"]
    require(isinstance(norm, dict) and all(isinstance(norm.get(k), (list, tuple)) and len(norm[k]) == shape[0]
                                           for k in ("mean", "std")),
            "the model's normalisation must give a mean and a std per channel")
    return tuple(shape), list(classes), {"mean": [float(v) for v in norm["mean"]], "std": [float(v) for v in norm["std"]]}


def max_body_bytes(input_shape, max_batch: int) -> int:
    """The largest request body taken: ``max_batch`` rows written as JSON text (safetensors bytes are smaller)."""
    c, h, w = input_shape
    brackets = 4 * (1 + c + c * h)  # "[", "]", ", " around every row, channel and image row
    return max_batch * (c * h * w * JSON_BYTES_PER_VALUE + brackets) + BODY_SLACK_BYTES


class _BadRequest(Exception):
    """A request the server refuses: the status and the one line the client sees."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        message = " ".join(message.split())[:300]  # one line, however long the key or parser message quoted
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class _TokenBucket:
    """``rate`` requests per second on average, bursts of up to max(1, rate)."""

    def __init__(self, rate: float):
        self.rate, self.capacity = rate, max(1.0, rate)
        self.tokens, self.last = self.capacity, time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float:
        """0 when the request may go ahead, else the seconds until it could."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate


class _Metrics:
    """Counters and a latency histogram, written in the Prometheus text format."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.rows = 0
        self.buckets = [0] * len(LATENCY_BUCKETS)
        self.latency_sum, self.latency_count = 0.0, 0

    def record(self, path: str, status: int, seconds: float) -> None:
        label = path if path in ROUTES else "other"  # unknown paths share one series: clients cannot add series
        with self.lock:
            self.requests[label, status] = self.requests.get((label, status), 0) + 1
            if path == "/predict":
                self.latency_sum += seconds
                self.latency_count += 1
                for i, bound in enumerate(LATENCY_BUCKETS):
                    self.buckets[i] += seconds <= bound

    def add_rows(self, n: int) -> None:
        with self.lock:
            self.rows += n

    def text(self) -> str:
        with self.lock:
            lines = ["# HELP distillab_requests_total Requests answered, by path and status code.",
                     "# TYPE distillab_requests_total counter"]
            lines += [f'distillab_requests_total{{path="{path}",code="{code}"}} {n}'
                      for (path, code), n in sorted(self.requests.items())]
            lines += ["# HELP distillab_rows_total Input rows answered by /predict.",
                      "# TYPE distillab_rows_total counter", f"distillab_rows_total {self.rows}",
                      "# HELP distillab_request_seconds Time to answer a /predict request.",
                      "# TYPE distillab_request_seconds histogram"]
            lines += [f'distillab_request_seconds_bucket{{le="{bound}"}} {n}'
                      for bound, n in zip(LATENCY_BUCKETS, self.buckets)]
            lines += [f'distillab_request_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                      f"distillab_request_seconds_sum {self.latency_sum:.6f}",
                      f"distillab_request_seconds_count {self.latency_count}"]
        return "\n".join(lines) + "\n"


class _Answerer:
    """Turns a batch of inputs into what the service gives out: the model runs here, off the event loop."""

    def __init__(self, model: nn.Module, num_classes: int, options: ServeOptions, device: str):
        self.model = model.to(device).eval()
        self.device = device
        self.kind, self.k = options.output_kind(num_classes)
        self.noise, self.decimals = float(options.noise), options.round
        self.generator = seeds.generator(options.seed)
        self.noise_lock = threading.Lock()  # requests run in a thread pool; draws must not interleave

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.model.eval()  # even if someone called .train() on it since
        with torch.inference_mode():
            logits = self.model(x.to(self.device)).float().cpu()
            log_probs = F.log_softmax(logits, 1)
            if self.noise > 0:
                with self.noise_lock:
                    noise = torch.randn(log_probs.shape, generator=self.generator)
                log_probs = F.log_softmax(log_probs + self.noise * noise, 1)
            probs = log_probs.exp()
            if self.kind == "label":
                return {"labels": probs.argmax(1).to(torch.int64)}
            if self.kind == "topk":
                top, index = probs.topk(self.k, 1)  # sorted, most likely first
                return {"topk_index": index.to(torch.int64), "topk_prob": self._rounded(top)}
            return {"probs": self._rounded(probs)}

    def _rounded(self, probs: torch.Tensor) -> torch.Tensor:
        return (torch.round(probs, decimals=self.decimals) if self.decimals else probs).float().contiguous()


def _error(status: int, message: str, headers: dict | None = None):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _media_type(header: str | None) -> str:
    return (header or "").split(";")[0].strip().lower()


def _json_payload(outputs: dict[str, torch.Tensor], decimals: int) -> dict:
    payload = {}
    for key, value in outputs.items():
        rows = value.tolist()
        if decimals and value.is_floating_point():
            # float32 -> Python float gives digits the float32 value does not hold: print only the rounded ones
            rows = [[round(v, decimals) for v in row] for row in rows]
        payload[key] = rows
    return payload


def make_app(model: nn.Module, meta: dict, options: ServeOptions, device: str = "cpu"):
    """The Starlette app that answers for ``model`` (moved to ``device``, kept in eval mode)."""
    try:
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.exceptions import HTTPException
        from starlette.middleware import Middleware
        from starlette.requests import ClientDisconnect
        from starlette.responses import JSONResponse, PlainTextResponse, Response
        from starlette.routing import Route
    except ImportError:
        raise DistillabError("serving a model needs starlette and uvicorn: pip install 'distillab[serve]'") from None

    require(isinstance(model, nn.Module), f"serve takes a torch.nn.Module, got {type(model).__name__}")
    input_shape, classes, normalisation = _check_meta(meta)
    options.check(len(classes))
    answer = _Answerer(model, len(classes), options, device)
    limit = max_body_bytes(input_shape, options.max_batch)
    bucket = _TokenBucket(float(options.rate)) if options.rate > 0 else None
    metrics = _Metrics()
    expected_auth = f"Bearer {options.token}".encode() if options.token is not None else None
    info = {"format": SERVICE_FORMAT, "version": SERVICE_VERSION, "input_shape": list(input_shape),
            "classes": classes, "normalisation": normalisation, "output": options.output,
            "max_batch": options.max_batch, "max_body_bytes": limit, "rate": float(options.rate),
            "noise": float(options.noise), "round": options.round}

    def authorise(request) -> None:
        if expected_auth is None:
            return
        given = request.headers.get("authorization", "").encode("latin-1", "replace")
        if not hmac.compare_digest(given, expected_auth):  # constant time: the comparison leaks no prefix
            raise _BadRequest(401, "a valid bearer token is needed (Authorization: Bearer TOKEN)",
                              {"WWW-Authenticate": "Bearer"})

    async def read_body(request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise _BadRequest(400, "the Content-Length header is not a number")
            if int(length) > limit:  # refused before a byte of it is read
                raise _BadRequest(413, f"the body is {length} bytes; this service takes at most {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:  # a chunked body says its size only as it comes
                raise _BadRequest(413, f"the body is over {limit} bytes, the most this service takes")
            chunks.append(chunk)
        return b"".join(chunks)

    def parse_inputs(body: bytes, media_type: str) -> torch.Tensor:
        if media_type == "application/json":
            try:
                document = json.loads(body)
            except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
                raise _BadRequest(400, f"the body is not valid JSON ({str(e)[:80]})") from None
            if not isinstance(document, dict) or "inputs" not in document:
                raise _BadRequest(400, 'the JSON body must be an object {"inputs": [...]}')
            if set(document) != {"inputs"}:
                raise _BadRequest(400, f'the JSON body holds {sorted(document)[:5]}; send only "inputs"')
            rows = document["inputs"]
            if not isinstance(rows, list):
                raise _BadRequest(400, '"inputs" must be nested lists of numbers, shape (N, C, H, W)')
            try:
                x = torch.tensor(rows, dtype=torch.float32)
            except (TypeError, ValueError, OverflowError, RuntimeError):
                raise _BadRequest(400, '"inputs" must be nested lists of numbers of one shape (N, C, H, W)') from None
        else:
            from safetensors.torch import load

            try:
                tensors = load(body)  # safetensors: a header and raw bytes, no code runs whatever the bytes say
            except Exception as e:  # SafetensorError, and the conversion's errors (a dtype torch lacks): all bad bodies
                raise _BadRequest(400, f"the body is not safetensors bytes ({str(e) or type(e).__name__})") from None
            if set(tensors) != {"inputs"}:
                raise _BadRequest(400, f'the safetensors body must hold one tensor "inputs", got {sorted(tensors)[:5]}')
            x = tensors["inputs"]
            if x.dtype != torch.float32:
                raise _BadRequest(400, f'"inputs" must be float32, got {str(x.dtype).replace("torch.", "")}')
        if x.dim() != 4 or tuple(x.shape[1:]) != input_shape:
            raise _BadRequest(400, f'"inputs" must have shape (N, {", ".join(map(str, input_shape))}), got '
                                   f"{tuple(x.shape)}")
        if x.shape[0] == 0:
            raise _BadRequest(400, '"inputs" holds no rows')
        if x.shape[0] > options.max_batch:
            raise _BadRequest(413, f"the batch has {x.shape[0]} rows; this service takes at most {options.max_batch} "
                                   "per request")
        if not bool(torch.isfinite(x).all()):
            raise _BadRequest(400, '"inputs" holds NaN or infinite values')
        return x

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def get_info(request):
        authorise(request)
        return JSONResponse(info)

    async def predict(request):
        authorise(request)
        if bucket is not None:
            wait = bucket.take()
            if wait > 0:
                raise _BadRequest(429, f"more than {options.rate:g} requests per second; retry later",
                                  {"Retry-After": str(max(1, math.ceil(wait)))})
        media_type = _media_type(request.headers.get("content-type"))
        if media_type not in ("application/json", "application/octet-stream"):  # refused before the body is read
            raise _BadRequest(415, "send Content-Type application/json or application/octet-stream (safetensors), "
                                   f"not {media_type or 'none'}")
        try:
            body = await read_body(request)
        except ClientDisconnect:
            raise _BadRequest(400, "the client went away before the body was read") from None
        x = await run_in_threadpool(parse_inputs, body, media_type)  # parsing a large JSON body takes a while
        del body
        outputs = await run_in_threadpool(answer, x)
        metrics.add_rows(x.shape[0])
        if "application/octet-stream" in request.headers.get("accept", "").lower():
            from safetensors.torch import save

            return Response(save(outputs), media_type="application/octet-stream")
        return JSONResponse(_json_payload(outputs, options.round))

    async def get_metrics(request):
        authorise(request)
        return PlainTextResponse(metrics.text(), media_type="text/plain; version=0.0.4")

    async def refused(request, exc: _BadRequest):
        return _error(exc.status, exc.message, exc.headers)

    async def http_error(request, exc: HTTPException):
        # Starlette's own 404/405 answer in the service's error form, keeping their headers (Allow)
        return _error(exc.status_code, exc.detail if isinstance(exc.detail, str) else "request refused",
                      dict(exc.headers or {}))

    async def crashed(request, exc: Exception):
        # the traceback goes to the server's log (uvicorn logs it); the client learns only that it failed
        return _error(500, "the service failed on this request; see the server's log")

    return Starlette(routes=[Route("/health", health, methods=["GET"]), Route("/info", get_info, methods=["GET"]),
                             Route("/predict", predict, methods=["POST"]),
                             Route("/metrics", get_metrics, methods=["GET"])],
                     middleware=[Middleware(_Measured, metrics=metrics)],
                     exception_handlers={_BadRequest: refused, HTTPException: http_error, Exception: crashed})


class _Measured:
    """ASGI middleware that counts every HTTP response by path and status, and times /predict."""

    def __init__(self, app, metrics: _Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def send_recording(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            self.metrics.record(scope.get("path", ""), status[0], time.perf_counter() - started)


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket bound here, so a taken port is a one-line error rather than uvicorn's sys.exit."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise DistillabError(f"cannot serve on host {host!r} ({e.strerror}); use an address such as 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise DistillabError(f"port {port} on {host} is already in use; choose another --port, or 0 for a free "
                                 "one") from None
        raise DistillabError(f"cannot serve on {host}:{port} ({e.strerror or e})") from None
    return sock


BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: 58\r\n\r\n" + b'{"error": "too many connections at once; try again later"}')


def guarded_protocol(request_timeout: float, max_connections: int):
    """uvicorn's h11 protocol with two guards it lacks: a request must arrive whole (headers and body) within
    ``request_timeout`` seconds of its first byte, or of the connection's opening, else the connection is closed
    (uvicorn times out only idle keep-alive connections, after a response); and beyond ``max_connections`` open at
    once a new connection is answered 503 and closed. One class per server: it counts that server's connections."""
    import resource

    from uvicorn.protocols.http.h11_impl import H11Protocol

    files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if files != resource.RLIM_INFINITY:  # the cap must bite before the process runs out of file handles
        max_connections = max(1, min(max_connections, files - 64))

    class Guarded(H11Protocol):
        open = 0

        def connection_made(self, transport):
            super().connection_made(transport)
            Guarded.open += 1
            self._deadline = None
            if Guarded.open > max_connections:
                transport.write(BUSY)
                transport.close()
                return
            self._arm()

        def _arm(self):
            if self._deadline is None:
                self._deadline = self.loop.call_later(request_timeout, self._too_slow)

        def _waiting(self) -> bool:
            """No request of this connection is being answered (none yet, or the last one is answered)."""
            return self.cycle is None or self.cycle.response_complete

        def _disarm(self):
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self):
            self._deadline = None
            if self._waiting() or self.cycle.more_body:  # not even a whole request in time
                self.transport.close()

        def data_received(self, data):
            if self._waiting():  # the first byte of a request starts its clock
                self._arm()
            super().data_received(data)

        def handle_events(self):
            super().handle_events()
            if not self._waiting() and not self.cycle.more_body:  # a whole request is in: its clock stops
                self._disarm()

        def connection_lost(self, exc):
            Guarded.open -= 1
            self._disarm()
            super().connection_lost(exc)

    return Guarded


def _url(host: str, port: int) -> str:
    # a wildcard address listens everywhere; a client on this machine reaches it by loopback
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ServiceHandle:
    """A running service in a background thread: ``url``, ``stop()``; a context manager that stops on exit."""

    def __init__(self, server, thread: threading.Thread, url: str):
        self._server, self._thread, self.url = server, thread, url
        self._stop_lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        """Shut the server down (in-flight requests finish) and join its thread. Calling it again does nothing."""
        with self._stop_lock:
            self._server.should_exit = True
            self._thread.join(STOP_SECONDS)
            if self._thread.is_alive():  # a request that never finishes: drop it rather than hang the caller
                self._server.force_exit = True
                self._thread.join(STOP_SECONDS)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def __repr__(self):
        return f"ServiceHandle({self.url!r}, running={self._thread.is_alive()})"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1.0) as reply:
            return reply.status == 200
    except OSError:
        return False


def start_service(model: nn.Module, meta: dict, options: ServeOptions, device: str = "cpu") -> ServiceHandle:
    """Serve ``model`` from a background thread; returns once the service answers /health."""
    try:
        import uvicorn
    except ImportError:
        raise DistillabError("serving a model needs starlette and uvicorn: pip install 'distillab[serve]'") from None
    app = make_app(model, meta, options, device)
    sock = _bind(options.host, 0 if options.port is None else options.port)
    url = _url(options.host, sock.getsockname()[1])
    # log_config=None: uvicorn leaves the process's logging set-up alone; warnings still reach the root logger
    config = uvicorn.Config(app, log_level="warning", access_log=False, log_config=None, lifespan="off",
                            server_header=False, timeout_graceful_shutdown=10,
                            http=guarded_protocol(options.request_timeout, options.max_connections))
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def run():
        try:
            server.run(sockets=[sock])
        except BaseException as e:  # noqa: BLE001 -- reported to the caller below, not lost in a thread
            failure.append(e)
        finally:
            sock.close()

    thread = threading.Thread(target=run, name=f"distillab-service-{url}", daemon=True)
    thread.start()
    handle = ServiceHandle(server, thread, url)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline and thread.is_alive():
        if server.started and _healthy(url):
            return handle
        time.sleep(0.02)
    handle.stop()
    reason = f" ({type(failure[0]).__name__}: {str(failure[0])[:100]})" if failure else ""
    raise DistillabError(f"the service on {url} did not start{reason}")


def serve_forever(model: nn.Module, meta: dict, options: ServeOptions, device: str = "cpu",
                  reporter: Reporter | None = None) -> None:
    """Serve ``model`` until SIGINT or SIGTERM, then shut down cleanly and return (``distillab serve``)."""
    reporter = reporter or SILENT
    stop_asked = threading.Event()
    previous, started = {}, []
    # the handlers go in before the service starts: a signal that comes once it answers must find them
    if threading.current_thread() is threading.main_thread():  # only the main thread may set signal handlers

        def on_signal(signum, frame):
            if stop_asked.is_set() and started:  # a second Ctrl-C: do not wait for in-flight requests
                started[0]._server.force_exit = True
            stop_asked.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    if options.port is None:
        options = replace(options, port=FOREGROUND_PORT)
    try:
        handle = start_service(model, meta, options, device)
    except BaseException:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        raise
    started.append(handle)
    try:
        shown = {k: v for k, v in asdict(options).items() if k not in ("token", "host", "port")}
        reporter.info(f"serving at {handle.url} ({', '.join(f'{k} {v}' for k, v in shown.items())}"
                      f"{', bearer token required' if options.token else ''}); Ctrl-C stops")
        while not stop_asked.wait(0.5):  # a timed wait, so signal handlers run promptly
            if not handle._thread.is_alive():
                raise DistillabError(f"the service on {handle.url} stopped unexpectedly")
        reporter.info("stopping the service")
    finally:
        handle.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    reporter.info("service stopped")
