"""The client side of a teacher service (``distillab serve``): batched, concurrent queries with retries and
back-off, a client-side rate limit, and a local answer cache keyed by a hash of each input, so that an interrupted
or repeated run never pays for a query twice.

Only the standard library speaks HTTP here (``urllib``); answers come back as safetensors bytes (never pickle) and
are checked before use: a service that answers with the wrong shape, class count or non-probabilities ends the run
with one line, and the answers already cached stay.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import random
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DistillabError, require
from .protocol import SERVICE_FORMAT

MAX_ANSWER_BYTES = 1 << 28  # an answer larger than this is not a batch of probabilities


@dataclass
class QueryOptions:
    """How the client queries (the one place its defaults live)."""

    concurrency: int = 4       # requests in flight at once
    query_batch: int = 256     # rows per request (at most the service's max_batch)
    rate: float = 0.0          # requests per second this client sends (0: as fast as the service allows)
    timeout: float = 30.0      # seconds per request
    retries: int = 5           # attempts after the first, on 5xx, 429, time-outs and refused connections
    backoff: float = 0.5       # seconds before the first retry; doubled each time (at most 30 s)
    # A redirect would carry the bearer token to wherever the service points: refused unless followed on purpose,
    # and then the token is dropped for any other scheme, host or port.
    follow_redirects: bool = False
    # Rows of each batch found in the cache that are asked again and compared: a cache forged wholesale (valid
    # rows, wrong answers) is refused; a few forged rows among many can pass a spot check (0: trust the cache).
    cache_checks: int = 16

    def check(self) -> "QueryOptions":
        require(self.concurrency >= 1, f"--concurrency must be at least 1, got {self.concurrency}")
        require(self.query_batch >= 1, f"--query-batch must be at least 1, got {self.query_batch}")
        require(self.rate >= 0, f"the query rate must be >= 0, got {self.rate}")
        require(self.timeout > 0 and self.retries >= 0 and self.backoff >= 0,
                "timeout must be > 0, retries and backoff >= 0")
        require(type(self.cache_checks) is int and 0 <= self.cache_checks <= 1_000_000,
                f"--cache-checks must be a whole number 0..1,000,000, got {self.cache_checks!r}")
        return self


class _Unavailable(Exception):
    """A failure worth retrying (5xx, 429, time-out, refused connection)."""

    def __init__(self, why: str, wait: float | None = None):
        super().__init__(why)
        self.wait = wait


class RateLimit:
    """At most ``rate`` request starts per second across threads (0: no limit)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next)
            self.next = start + self.interval
        if start > now:
            time.sleep(start - now)


def _number(v) -> bool:
    """A finite int or float (not a bool, not NaN or infinity, which JSON from a forged service may carry)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(str(text).split())[:limit]


def _origin(url: str) -> tuple:
    parsed = urllib.parse.urlparse(url)
    default = {"http": 80, "https": 443}.get(parsed.scheme)
    return parsed.scheme, (parsed.hostname or "").lower(), parsed.port or default


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects refused in one line naming the target, or (``follow``) followed with the token dropped once
    they leave the service's origin."""

    def __init__(self, url: str, follow: bool):
        self.url, self.follow = url, follow

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not self.follow:
            path = urllib.parse.urlparse(req.full_url).path
            raise DistillabError(f"the teacher service at {self.url} redirected {path} to {_one_line(newurl)} (HTTP "
                                 f"{code}); distillab does not follow redirects, so its token stays with the URL you "
                                 "gave: give the final URL, or pass --follow-redirects")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(new.full_url) != _origin(self.url):
            new.remove_header("Authorization")
        return new


class ServiceClient:
    """A teacher service at ``url``: ``info`` (checked), ``answer(x)`` for a batch of normalised inputs."""

    def __init__(self, url: str, token: str | None = None, options: QueryOptions | None = None):
        parsed = urllib.parse.urlparse(url)
        require(parsed.scheme in ("http", "https") and parsed.netloc,
                f"--teacher-url must be an http(s) URL like http://127.0.0.1:8000, got '{url}'")
        self.url = url.rstrip("/")
        self.token = token
        self.options = (options or QueryOptions()).check()
        self.limit = RateLimit(self.options.rate)
        self.requests = self.rows = self.retried = 0
        self.seconds = 0.0
        self._count = threading.Lock()
        self._opener = urllib.request.build_opener(_Redirects(self.url, self.options.follow_redirects))
        self.info = self._info()
        self.batch = min(self.options.query_batch, int(self.info["max_batch"]))

    # ---- HTTP ----

    def _request(self, path: str, body: bytes | None = None) -> tuple[bytes, str]:
        headers = {"Accept": "application/octet-stream, application/json"}
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=body, headers=headers,
                                         method="POST" if body is not None else "GET")
        try:
            deadline = time.monotonic() + self.options.timeout
            with self._opener.open(request, timeout=self.options.timeout) as response:
                chunks, size = [], 0
                while chunk := response.read1(1 << 20):  # the timeout bounds each read; the deadline the answer
                    chunks.append(chunk)
                    size += len(chunk)
                    require(size <= MAX_ANSWER_BYTES, f"the teacher service at {self.url} sent an answer larger "
                                                      f"than {MAX_ANSWER_BYTES} bytes")
                    if time.monotonic() > deadline:
                        raise _Unavailable(f"its answer took longer than {self.options.timeout:g} s to arrive")
                return b"".join(chunks), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            message = _error_text(e)
            if e.code >= 500 or e.code == 429:
                wait = e.headers.get("Retry-After") if e.headers else None
                raise _Unavailable(f"HTTP {e.code}: {message}", _seconds(wait)) from None
            if e.code == 401:
                raise DistillabError(f"the teacher service at {self.url} refused the request (401: {message}); "
                                     "pass --token-file with its token") from None
            raise DistillabError(f"the teacher service at {self.url} refused the request (HTTP {e.code}: "
                                 f"{message})") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise _Unavailable(_one_line(reason)) from None
        except http.client.HTTPException as e:  # not HTTP: a bad status line, more than 100 headers, a cut answer
            raise _Unavailable(f"it did not speak HTTP ({type(e).__name__}: {_one_line(e, 80)})") from None

    def _with_retries(self, path: str, body: bytes | None = None) -> tuple[bytes, str]:
        wait = self.options.backoff
        for attempt in range(self.options.retries + 1):
            self.limit.wait()
            try:
                return self._request(path, body)
            except _Unavailable as e:
                if attempt == self.options.retries:
                    raise DistillabError(f"the teacher service at {self.url} did not answer ({e}) after "
                                         f"{attempt + 1} attempts") from None
                with self._count:
                    self.retried += 1
                time.sleep(min(30.0, max(wait, e.wait or 0.0)))
                wait *= 2
        raise AssertionError("unreachable")

    # ---- the service's description ----

    def _info(self) -> dict:
        data, _ = self._with_retries("/info")
        try:
            info = json.loads(data)
        except (ValueError, RecursionError):  # RecursionError: a nesting bomb
            raise DistillabError(f"{self.url}/info did not answer with JSON; is this a distillab teacher service?") \
                from None
        require(isinstance(info, dict) and info.get("format") == SERVICE_FORMAT,
                f"{self.url}/info does not describe a distillab teacher service")
        shape, classes, norm = info.get("input_shape"), info.get("classes"), info.get("normalisation")
        require(isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) and 0 < d <= 4096 for d in shape),
                f"{self.url}/info: input_shape must be [C, H, W], got {shape!r}"[:200])
        require(isinstance(classes, list) and 2 <= len(classes) <= 100_000, f"{self.url}/info: bad classes")
        require(isinstance(norm, dict) and all(isinstance(norm.get(k), list) and len(norm[k]) == shape[0]
                                               and all(_number(v) for v in norm[k]) for k in ("mean", "std"))
                and all(v > 0 for v in norm["std"]),
                f"{self.url}/info: normalisation must give a finite mean and a positive std per channel")
        output = info.get("output")
        require(output in ("probs", "label") or (isinstance(output, str) and output.startswith("topk:")
                                                  and output[5:].isdigit() and 1 <= int(output[5:]) < len(classes)),
                f"{self.url}/info: unknown output '{output}'")
        require(type(info.get("max_batch")) is int and info["max_batch"] >= 1, f"{self.url}/info: bad max_batch")
        require(info.get("round") in (None, 0) or (type(info["round"]) is int and 0 <= info["round"] <= 8),
                f"{self.url}/info: round must be a whole number of decimals, 0..8")
        require(info.get("noise") is None or (_number(info["noise"]) and info["noise"] >= 0),
                f"{self.url}/info: noise must be a finite number >= 0")
        return info

    @property
    def num_classes(self) -> int:
        return len(self.info["classes"])

    @property
    def output(self) -> str:
        return self.info["output"]

    def row_width(self) -> int:
        """Numbers per cached answer row: K probabilities, k indices + k probabilities, or one label."""
        if self.output == "probs":
            return self.num_classes
        if self.output == "label":
            return 1
        return 2 * int(self.output[5:])

    # ---- answers ----

    def answer(self, x: torch.Tensor) -> np.ndarray:
        """One request for the normalised inputs ``x`` (N, C, H, W): (N, row_width()) float64 answer rows."""
        from safetensors.torch import save

        started = time.perf_counter()
        data, kind = self._with_retries("/predict", save({"inputs": x.detach().float().cpu().contiguous()}))
        rows = self._rows(data, kind, len(x))
        with self._count:
            self.requests += 1
            self.rows += len(x)
            self.seconds += time.perf_counter() - started
        return rows

    def _rows(self, data: bytes, kind: str, n: int) -> np.ndarray:
        from safetensors import SafetensorError
        from safetensors.torch import load

        where = f"the teacher service at {self.url}"
        try:
            tensors = load(data) if "octet-stream" in kind else {k: torch.tensor(v) for k, v in json.loads(data).items()}
        except (SafetensorError, ValueError, TypeError, RuntimeError, AttributeError, OverflowError, RecursionError):
            raise DistillabError(f"{where} sent an answer that is neither safetensors nor JSON tensors") from None
        k = self.num_classes
        if self.output == "probs":
            p = tensors.get("probs")
            require(isinstance(p, torch.Tensor) and tuple(p.shape) == (n, k),
                    f"{where} answered with probs of shape {tuple(p.shape) if isinstance(p, torch.Tensor) else None}, "
                    f"expected ({n}, {k}): another model, or not probabilities")
            p = p.double()
            slack = 1e-2 + (k * 0.5 * 10.0 ** -int(self.info.get("round") or 0) if self.info.get("round") else 0.0)
            require(bool(torch.isfinite(p).all() and (p >= 0).all() and ((p.sum(1) - 1).abs() < slack).all()),
                    f"{where} answered with rows that are not probabilities")
            return p.numpy()
        if self.output == "label":
            labels = tensors.get("labels")
            require(isinstance(labels, torch.Tensor) and tuple(labels.shape) == (n,) and not labels.is_floating_point()
                    and bool(((labels >= 0) & (labels < k)).all()), f"{where} answered with bad labels")
            return labels.double().view(n, 1).numpy()
        top = int(self.output[5:])
        index, prob = tensors.get("topk_index"), tensors.get("topk_prob")
        require(isinstance(index, torch.Tensor) and isinstance(prob, torch.Tensor)
                and tuple(index.shape) == tuple(prob.shape) == (n, top) and not index.is_floating_point()
                and bool(((index >= 0) & (index < k)).all()) and bool(torch.isfinite(prob).all())
                and bool(((prob >= 0) & (prob.sum(1, keepdim=True) <= 1 + 1e-2 + top * 10.0 ** -int(
                    self.info.get("round") or 8))).all()),
                f"{where} answered with a bad top-{top} (expected indices and probabilities of shape ({n}, {top}))")
        return torch.cat([index.double(), prob.double()], 1).numpy()


def _error_text(e: urllib.error.HTTPError) -> str:
    try:
        body = e.read(4096)
        return _one_line(json.loads(body).get("error", body.decode(errors="replace")))
    except Exception:  # the error's own body may be anything; the status says enough
        return _one_line(e.reason)


def _seconds(value) -> float | None:
    try:
        return min(60.0, max(0.0, float(value)))
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------------------
# The answer cache


def input_keys(x: torch.Tensor) -> list[bytes]:
    """A key per input row: the SHA-256 of its float32 bytes (as sent to the service)."""
    arr = x.detach().float().cpu().contiguous().numpy()
    return [hashlib.sha256(row.tobytes()).digest() for row in arr.reshape(len(arr), -1)]


CACHE_COLUMNS = {"service": [("fingerprint", "TEXT")], "answers": [("key", "BLOB"), ("row", "BLOB")]}


def row_is_an_answer(row: np.ndarray, info: dict) -> bool:
    """Whether one cached row is an answer the service described by ``info`` could give: probabilities (finite,
    >= 0, summing to 1 within its rounding), a label (a whole class number), or top-k indices and probabilities."""
    k, output = len(info["classes"]), info["output"]
    decimals = info.get("round") or 0
    if not np.isfinite(row).all():
        return False
    if output == "probs":
        slack = 1e-2 + (k * 0.5 * 10.0 ** -decimals if decimals else 0.0)
        return bool((row >= 0).all() and abs(row.sum() - 1) < slack)
    if output == "label":
        return bool(row[0] == int(row[0]) and 0 <= row[0] < k)
    top = int(output[5:])
    index, prob = row[:top], row[top:]
    whole = (index == np.floor(index)).all() and (index >= 0).all() and (index < k).all()
    return bool(whole and len(set(index.tolist())) == top and (prob >= 0).all()
                and prob.sum() <= 1 + 1e-2 + top * 10.0 ** -(decimals or 8))


class AnswerCache:
    """Answers by input hash in an SQLite file, for one service description (shape, classes, normalisation,
    output): a cache made for another service is refused. Written after every request, so a killed run keeps
    what it paid for."""

    def __init__(self, path, info: dict):
        self.path = Path(path)
        fingerprint = json.dumps({k: info.get(k) for k in ("input_shape", "classes", "normalisation", "output",
                                                           "noise", "round")}, sort_keys=True)
        self.db, self.lock = None, threading.Lock()
        try:
            self.db = sqlite3.connect(self.path, check_same_thread=False)
            self.db.execute("CREATE TABLE IF NOT EXISTS service (fingerprint TEXT NOT NULL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS answers (key BLOB PRIMARY KEY, row BLOB NOT NULL)")
            kinds = dict(self.db.execute("SELECT name, type FROM sqlite_master WHERE name IN ('service', 'answers')"))
            columns = {t: [(c[1], c[2].upper()) for c in self.db.execute(f"PRAGMA table_info({t})")]
                       for t in ("service", "answers")}
            require(kinds == {"service": "table", "answers": "table"} and columns == CACHE_COLUMNS,
                    f"{self.path} is not a query cache of distillab (its tables have another form); give another "
                    "--query-cache")
            found = self.db.execute("SELECT fingerprint FROM service").fetchall()
            if not found:
                self.db.execute("INSERT INTO service VALUES (?)", (fingerprint,))
                self.db.commit()
            else:
                require(len(found) == 1 and found[0][0] == fingerprint,
                        f"{self.path} caches answers of another teacher service (other classes, inputs or output); "
                        "give another --query-cache")
        except sqlite3.DatabaseError as e:
            self.close()
            raise DistillabError(f"{self.path} is not a query cache ({_one_line(e)}); give another --query-cache")\
                from None
        except DistillabError:
            self.close()
            raise
        self.info = info

    def get(self, keys: list[bytes], width: int) -> dict[bytes, np.ndarray]:
        found = {}
        with self.lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for key, row in self.db.execute(f"SELECT key, row FROM answers WHERE key IN ({marks})", chunk):
                    value = np.frombuffer(row, dtype=np.float64) if isinstance(row, bytes) else np.zeros(0)
                    if len(value) == width and row_is_an_answer(value, self.info):  # a forged row is asked again
                        found[bytes(key)] = value
        return found

    def put(self, keys: list[bytes], rows: np.ndarray) -> None:
        with self.lock:
            self.db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?)",
                                [(k, np.ascontiguousarray(r, dtype=np.float64).tobytes()) for k, r in zip(keys, rows)])
            self.db.commit()

    def __len__(self) -> int:
        with self.lock:
            return int(self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self.lock:
            if self.db is not None:
                self.db.close()


# --------------------------------------------------------------------------------------------------------------
# Answers for many rows


def rows_agree(cached: np.ndarray, fresh: np.ndarray, info: dict) -> np.ndarray:
    """Per row, whether a cached answer is one the service gives now: without noise the same answer (within the
    service's rounding and float32 round-off); with noise the same top class."""
    output = info["output"]
    top = 1 if output == "label" else (int(output[5:]) if output.startswith("topk:") else None)
    if top is None:  # probabilities
        if info.get("noise"):
            return cached.argmax(1) == fresh.argmax(1)
        slack = 1e-4 + (10.0 ** -info["round"] if info.get("round") else 0.0)
        return np.abs(cached - fresh).max(1) <= slack
    if info.get("noise") or output == "label":  # the top class (a label, or the first of the top k)
        return cached[:, 0] == fresh[:, 0]
    # the same top class and the same k probabilities (the classes past the first may swap at a near-tie)
    slack = 1e-4 + (10.0 ** -info["round"] if info.get("round") else 0.0)
    return (cached[:, 0] == fresh[:, 0]) & (
        np.abs(np.sort(cached[:, top:], 1) - np.sort(fresh[:, top:], 1)).max(1) <= slack)


class ServiceAnswers:
    """Answer rows for any inputs: from the cache, else from the service (missing rows only, in batches of the
    client's size, ``concurrency`` at once). ``queried`` counts the rows paid for, ``hits`` those the cache had,
    ``checked`` the cached rows asked again to check the cache (``QueryOptions.cache_checks`` per call)."""

    def __init__(self, client: ServiceClient, cache: AnswerCache):
        self.client, self.cache = client, cache
        self.width = client.row_width()
        self.queried = self.hits = self.checked = 0

    def _spot_check(self, x: torch.Tensor, keys: list[bytes], known: dict) -> None:
        """Ask the service again for a few rows the cache had; a cache whose answers it does not give is refused.
        Which rows is drawn from the system's entropy (a forger cannot know it); an honest cache passes whatever
        the draw, so the run's results do not depend on it."""
        first = {}
        for i, k in enumerate(keys):
            if k in known:
                first.setdefault(k, i)
        n = min(self.client.options.cache_checks, len(first))
        if n == 0:
            return
        index = sorted(random.SystemRandom().sample(sorted(first.values()), n))
        fresh = np.concatenate([self.client.answer(x[index[s:s + self.client.batch]])
                                for s in range(0, n, self.client.batch)])
        self.checked += n
        agree = rows_agree(np.stack([known[keys[i]] for i in index]), fresh, self.cache.info)
        # with noise the top class of an honest cache still differs now and then: a majority must agree
        enough = agree.mean() >= 0.5 if self.cache.info.get("noise") else agree.all()
        require(enough, f"{self.cache.path} holds answers the teacher service does not give ({int((~agree).sum())} "
                        f"of {n} cached rows asked again differ): a forged or stale cache; delete it or give another "
                        "--query-cache")

    def __call__(self, x: torch.Tensor, on_rows=None) -> np.ndarray:
        keys = input_keys(x)
        known = self.cache.get(keys, self.width)
        self.hits += sum(k in known for k in keys)
        if known and self.client.options.cache_checks:
            self._spot_check(x, keys, known)
        missing, seen = [], set()
        for i, k in enumerate(keys):
            if k not in known and k not in seen:  # the same input twice is asked once
                missing.append(i)
                seen.add(k)
        batches = [missing[s:s + self.client.batch] for s in range(0, len(missing), self.client.batch)]

        def fetch(index):
            rows = self.client.answer(x[index])
            self.cache.put([keys[i] for i in index], rows)
            return index, rows

        if batches:
            pool = ThreadPoolExecutor(min(self.client.options.concurrency, len(batches)))
            try:
                for future in as_completed([pool.submit(fetch, b) for b in batches]):
                    index, rows = future.result()
                    known.update({keys[i]: r for i, r in zip(index, rows)})
                    self.queried += len(index)
                    if on_rows:
                        on_rows(len(index))
            finally:  # on a failure the requests not yet sent are dropped; those in flight still reach the cache
                pool.shutdown(wait=True, cancel_futures=True)
        return np.stack([known[k] for k in keys]) if keys else np.zeros((0, self.width))
