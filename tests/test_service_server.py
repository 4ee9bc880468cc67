"""The teacher service's server side: a real uvicorn server on a free loopback port, spoken to with urllib.

Every request has a timeout and every loop a fixed count; every server is stopped by its fixture, which also
checks that no service thread is left running.
"""

import http.client
import json
import math
import os
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from distillab.errors import DistillabError  # noqa: E402
from distillab.models import build_model  # noqa: E402
from distillab.reporting import Reporter  # noqa: E402
from distillab.service import ServeOptions, make_app, read_token_file, serve_forever, start_service  # noqa: E402

SHAPE = (1, 8, 8)
CLASSES = ["zero", "one", "two"]
META = {"input_shape": list(SHAPE), "classes": CLASSES, "normalisation": {"mean": [0.5], "std": [0.25]},
        "spec": "mlp:hidden=8"}
TIMEOUT = 10
JSON_TYPE = {"Content-Type": "application/json"}
OCTET = "application/octet-stream"


def tiny_model():
    return build_model("mlp:hidden=8", SHAPE, len(CLASSES), torch.Generator().manual_seed(0)).eval()


def inputs(n, seed=1):
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def service_threads():
    return [t for t in threading.enumerate() if t.name.startswith("distillab-service")]


@pytest.fixture
def serve():
    """start(**options) -> a running service on 127.0.0.1, port 0; all stopped (and checked gone) afterwards."""
    handles = []

    def start(model=None, **options):
        handle = start_service(model if model is not None else tiny_model(), META,
                               ServeOptions(**{"host": "127.0.0.1", "port": 0, **options}))
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()
    assert service_threads() == []


def call(url, path, body=None, headers=None, method=None):
    """(status, headers, body bytes) of one request; HTTP errors are answers too."""
    request = urllib.request.Request(url + path, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read()


def predict_json(url, x, headers=None):
    return call(url, "/predict", json.dumps({"inputs": x.tolist()}).encode(), {**JSON_TYPE, **(headers or {})})


def predict_safetensors(url, x, headers=None):
    return call(url, "/predict", save_safetensors({"inputs": x.contiguous()}),
                {"Content-Type": OCTET, "Accept": OCTET, **(headers or {})})


def error_of(answer):
    status, headers, body = answer
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, body)
    message = json.loads(body)["error"]
    assert isinstance(message, str) and "\n" not in message and message
    return status, message


def expected_probs(x):
    with torch.no_grad():
        return F.softmax(tiny_model()(x), 1)


def test_info_gives_shape_classes_and_normalisation_but_no_weights(serve):
    handle = serve(output="topk:2", max_batch=16, rate=5.0, noise=0.1, round=3)
    status, headers, body = call(handle.url, "/info")
    assert status == 200 and headers["content-type"] == "application/json"
    info = json.loads(body)
    assert set(info) == {"format", "version", "input_shape", "classes", "normalisation", "output", "max_batch",
                         "max_body_bytes", "rate", "noise", "round"}
    assert info["format"] == "distillab.teacher-service" and info["version"] == 1
    assert info["input_shape"] == [1, 8, 8] and info["classes"] == CLASSES
    assert info["normalisation"] == {"mean": [0.5], "std": [0.25]}
    assert (info["output"], info["max_batch"], info["rate"], info["noise"], info["round"]) == ("topk:2", 16, 5.0, 0.1, 3)
    # room for 16 rows as JSON text, and not absurdly more
    assert 16 * 64 * 10 < info["max_body_bytes"] < 16 * 64 * 64 + 128 * 1024
    # nothing beyond the few numbers above: the model has 8 * 64 + 8 + 3 * 8 + 3 weights, none of them here
    assert len(body) < 400 and "mlp" not in body.decode() and "hidden" not in body.decode()


def test_predict_answers_the_models_softmax_in_both_body_formats(serve):
    handle = serve()
    x = inputs(5)
    status, headers, body = predict_json(handle.url, x)
    assert status == 200 and headers["content-type"] == "application/json"
    from_json = torch.tensor(json.loads(body)["probs"], dtype=torch.float32)
    torch.testing.assert_close(from_json, expected_probs(x), rtol=0, atol=1e-6)

    status, headers, body = predict_safetensors(handle.url, x)
    assert status == 200 and headers["content-type"] == OCTET
    answer = load_safetensors(body)
    assert set(answer) == {"probs"} and answer["probs"].dtype == torch.float32 and answer["probs"].shape == (5, 3)
    assert torch.equal(answer["probs"], from_json)  # float32 -> JSON text -> float32 is exact

    # the body format and the answer format are independent: safetensors in, JSON out and the other way round
    status, _, body = call(handle.url, "/predict", save_safetensors({"inputs": x}), {"Content-Type": OCTET})
    assert status == 200 and torch.equal(torch.tensor(json.loads(body)["probs"], dtype=torch.float32), from_json)
    status, _, body = predict_json(handle.url, x, {"Accept": OCTET})
    assert status == 200 and torch.equal(load_safetensors(body)["probs"], from_json)


def test_topk_and_label_outputs(serve):
    x = inputs(6)
    probs = expected_probs(x)
    top_prob, top_index = probs.topk(2, 1)

    topk = serve(output="topk:2")
    status, _, body = predict_safetensors(topk.url, x)
    answer = load_safetensors(body)
    assert status == 200 and set(answer) == {"topk_index", "topk_prob"}
    assert answer["topk_index"].dtype == torch.int64 and answer["topk_prob"].dtype == torch.float32
    assert torch.equal(answer["topk_index"], top_index)
    torch.testing.assert_close(answer["topk_prob"], top_prob, rtol=0, atol=1e-6)
    assert bool((answer["topk_prob"][:, 0] >= answer["topk_prob"][:, 1]).all())
    status, _, body = predict_json(topk.url, x)
    assert status == 200 and json.loads(body)["topk_index"] == top_index.tolist()

    label = serve(output="label")
    status, _, body = predict_safetensors(label.url, x)
    answer = load_safetensors(body)
    assert status == 200 and set(answer) == {"labels"} and answer["labels"].dtype == torch.int64
    assert torch.equal(answer["labels"], probs.argmax(1))
    status, _, body = predict_json(label.url, x)
    assert status == 200 and json.loads(body) == {"labels": probs.argmax(1).tolist()}


def test_rounding_leaves_at_most_the_asked_decimals(serve):
    handle = serve(round=2)
    x = inputs(8)
    status, _, body = predict_json(handle.url, x)
    assert status == 200
    numbers = re.findall(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", body.decode())
    assert len(numbers) == 8 * 3
    assert all("e" not in n.lower() and len(n.partition(".")[2]) <= 2 for n in numbers), numbers
    torch.testing.assert_close(torch.tensor(json.loads(body)["probs"]), expected_probs(x), rtol=0, atol=0.005)

    status, _, body = predict_safetensors(handle.url, x)
    probs = load_safetensors(body)["probs"]
    assert torch.equal(probs, torch.round(probs.double(), decimals=2).float())  # float32 nearest to 2 decimals


def test_noise_changes_the_answer_reproducibly_and_keeps_rows_distributions(serve):
    x = inputs(10)
    clean = expected_probs(x)

    def first_answer(seed):
        handle = serve(noise=0.5, seed=seed)
        status, _, body = predict_safetensors(handle.url, x)
        assert status == 200
        handle.stop()
        return load_safetensors(body)["probs"]

    noisy, again, other_seed = first_answer(7), first_answer(7), first_answer(8)
    assert (noisy - clean).abs().max() > 0.01
    assert torch.equal(noisy, again)  # a fresh server with the same seed draws the same noise
    assert not torch.equal(noisy, other_seed)
    torch.testing.assert_close(noisy.sum(1), torch.ones(10), rtol=0, atol=1e-5)
    assert bool((noisy >= 0).all())


def test_bearer_token_guards_everything_but_health(serve):
    handle = serve(token="S3cret-Token")
    x = inputs(2)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "S3cret-Token"},
                    {"Authorization": "Bearer S3cret-Token-and-more"},
                    {"Authorization": "Bearer s3cret-token"}, {"Authorization": "Bearer S3CRET-TOKEN"}):  # case counts
        status, message = error_of(predict_json(handle.url, x, headers))
        assert status == 401 and "token" in message
        assert predict_json(handle.url, x, headers)[1]["www-authenticate"] == "Bearer"
    for path in ("/info", "/metrics"):
        assert call(handle.url, path)[0] == 401
        assert call(handle.url, path, headers={"Authorization": "Bearer S3cret-Token"})[0] == 200
    assert predict_json(handle.url, x, {"Authorization": "Bearer S3cret-Token"})[0] == 200
    status, _, body = call(handle.url, "/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})


def test_too_many_rows_and_too_large_bodies_are_413(serve):
    handle = serve(max_batch=4)
    limit = json.loads(call(handle.url, "/info")[2])["max_body_bytes"]
    assert predict_json(handle.url, inputs(4))[0] == 200
    for answer in (predict_json(handle.url, inputs(5)), predict_safetensors(handle.url, inputs(5))):
        status, message = error_of(answer)
        assert status == 413 and "4" in message

    status, message = error_of(call(handle.url, "/predict", b" " * (limit + 1), JSON_TYPE))
    assert status == 413 and str(limit) in message

    # a declared Content-Length over the limit is refused before any of the body is sent
    port = int(handle.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT / 2)
    try:
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(10**12))
        connection.endheaders()
        reply = connection.getresponse()
        assert reply.status == 413 and str(10**12) in json.loads(reply.read())["error"]
    finally:
        connection.close()

    # a chunked body says nothing of its size up front: it is refused as it crosses the limit
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        chunks = (b" " * 8192 for _ in range(limit // 8192 + 2))
        connection.request("POST", "/predict", body=chunks, headers=JSON_TYPE, encode_chunked=True)
        reply = connection.getresponse()
        assert reply.status == 413 and "over" in json.loads(reply.read())["error"]
    finally:
        connection.close()
    assert predict_json(handle.url, inputs(1))[0] == 200


def test_bad_bodies_are_400_and_the_server_keeps_answering(serve):
    handle = serve()
    nan = inputs(2)
    nan[1, 0, 3, 3] = float("nan")
    bad = {
        "not json": call(handle.url, "/predict", b'{"inputs": [[[', JSON_TYPE),
        "no inputs": call(handle.url, "/predict", b'{"x": 1}', JSON_TYPE),
        "a list": call(handle.url, "/predict", b"[1, 2]", JSON_TYPE),
        "ragged": call(handle.url, "/predict", b'{"inputs": [[[[1, 2], [3]]]]}', JSON_TYPE),
        "strings": call(handle.url, "/predict", json.dumps({"inputs": [[[["1"] * 8] * 8]]}).encode(), JSON_TYPE),
        "wrong shape": predict_json(handle.url, torch.zeros(2, 1, 8, 7)),
        "flat rows": predict_json(handle.url, torch.zeros(2, 64)),
        "nan": predict_json(handle.url, nan),
        "nan literal": call(handle.url, "/predict", json.dumps({"inputs": nan.tolist()}).encode(), JSON_TYPE),
        "empty": call(handle.url, "/predict", save_safetensors({"inputs": torch.zeros(0, *SHAPE)}),
                      {"Content-Type": OCTET}),
        "garbage safetensors": call(handle.url, "/predict", os.urandom(64) + b"\xff" * 64, {"Content-Type": OCTET}),
        "huge header length": call(handle.url, "/predict", (2**62).to_bytes(8, "little") + b"{}",
                                   {"Content-Type": OCTET}),
        "float64": predict_safetensors(handle.url, inputs(2).double()),
        "another tensor": call(handle.url, "/predict", save_safetensors({"inputs": inputs(1), "x": inputs(1)}),
                               {"Content-Type": OCTET}),
        "wrong name": call(handle.url, "/predict", save_safetensors({"x": inputs(1)}), {"Content-Type": OCTET}),
    }
    for what, answer in bad.items():
        assert error_of(answer)[0] == 400, what
    assert "shape (N, 1, 8, 8)" in error_of(bad["wrong shape"])[1]
    assert "NaN" in error_of(bad["nan"])[1]
    status, _, body = predict_json(handle.url, inputs(3))
    assert status == 200 and len(json.loads(body)["probs"]) == 3


def test_other_content_types_are_415_and_unknown_routes_404_405(serve):
    handle = serve()
    status, message = error_of(call(handle.url, "/predict", b"1 2 3", {"Content-Type": "text/plain"}))
    assert status == 415 and "application/json" in message
    assert error_of(call(handle.url, "/predict", b"{}", {"Content-Type": "application/x-www-form-urlencoded"}))[0] == 415
    assert error_of(call(handle.url, "/weights"))[0] == 404
    status, headers, _ = call(handle.url, "/predict")
    assert status == 405 and "POST" in headers["allow"]
    assert error_of(call(handle.url, "/info", b"{}", JSON_TYPE))[0] == 405


def test_rate_limit_answers_429_with_retry_after(serve):
    handle = serve(rate=1.0)
    x = inputs(1)
    answers = [predict_json(handle.url, x) for _ in range(3)]
    assert answers[0][0] == 200
    refused = [a for a in answers[1:] if a[0] == 429]
    assert refused, [a[0] for a in answers]
    assert int(refused[0][1]["retry-after"]) >= 1
    assert "per second" in error_of(refused[0])[1]
    assert call(handle.url, "/health")[0] == 200  # the limit is on /predict alone


def test_metrics_count_requests_rows_and_latency(serve):
    handle = serve()
    assert predict_json(handle.url, inputs(3))[0] == 200
    assert predict_safetensors(handle.url, inputs(2))[0] == 200
    assert predict_json(handle.url, torch.zeros(1, 2, 8, 8))[0] == 400
    status, headers, body = call(handle.url, "/metrics")
    assert status == 200 and headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    assert 'distillab_requests_total{path="/predict",code="200"} 2\n' in text
    assert 'distillab_requests_total{path="/predict",code="400"} 1\n' in text
    assert "distillab_rows_total 5\n" in text
    assert 'distillab_request_seconds_bucket{le="+Inf"} 3\n' in text and "distillab_request_seconds_count 3\n" in text
    assert float(re.search(r"distillab_request_seconds_sum (\S+)", text).group(1)) > 0
    # buckets are cumulative: each at least the one before
    counts = [int(n) for n in re.findall(r'distillab_request_seconds_bucket\{le="[^"]+"\} (\d+)', text)]
    assert counts == sorted(counts) and len(counts) >= 5
    assert "# TYPE distillab_request_seconds histogram" in text


def test_health_answers_while_a_batch_is_computed(serve):
    entered, release = threading.Event(), threading.Event()

    class Slow(torch.nn.Module):
        def forward(self, x):
            entered.set()
            release.wait(TIMEOUT)  # bounded: the test releases it as soon as /health has answered
            return torch.zeros(len(x), len(CLASSES))

    handle = serve(model=Slow())
    answers = []
    worker = threading.Thread(target=lambda: answers.append(predict_json(handle.url, inputs(1))))
    worker.start()
    try:
        assert entered.wait(TIMEOUT)
        started = time.monotonic()
        assert call(handle.url, "/health")[0] == 200
        assert time.monotonic() - started < TIMEOUT / 2
    finally:
        release.set()
        worker.join(TIMEOUT)
    assert answers and answers[0][0] == 200


def test_a_failing_model_is_a_500_without_internals_and_the_server_lives_on(serve):
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("secret internals")

    handle = serve(model=Broken())
    status, message = error_of(predict_json(handle.url, inputs(1)))
    assert status == 500 and "secret" not in message and "Traceback" not in message
    assert call(handle.url, "/health")[0] == 200
    assert 'distillab_requests_total{path="/predict",code="500"} 1\n' in call(handle.url, "/metrics")[2].decode()


def test_a_port_in_use_is_a_one_line_error(serve):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DistillabError, match=f"port {port} .*already in use") as caught:
            start_service(tiny_model(), META, ServeOptions(port=port))
        assert "\n" not in str(caught.value)
    assert service_threads() == []


def test_stop_is_idempotent_frees_the_port_and_leaves_no_thread(serve):
    with start_service(tiny_model(), META, ServeOptions()) as handle:
        port = handle.port
        assert predict_json(handle.url, inputs(2))[0] == 200
    handle.stop()
    handle.stop()
    assert service_threads() == []  # the server's own thread is gone (other libraries' threads may come and go)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(handle.url + "/health", timeout=TIMEOUT)
    again = serve(port=port)  # the same port serves again at once
    assert call(again.url, "/health")[0] == 200


def test_options_and_metadata_are_checked_in_one_line(tmp_path):
    bad = [dict(output="topk:3"), dict(output="topk:0"), dict(output="topk"), dict(output="logits"),
           dict(max_batch=0), dict(rate=-1.0), dict(rate=math.inf), dict(noise=-0.1), dict(round=9),
           dict(port=70000), dict(token=""), dict(token="two words")]
    for options in bad:
        with pytest.raises(DistillabError) as caught:
            ServeOptions(**options).check(len(CLASSES))
        assert "\n" not in str(caught.value), options
    ServeOptions(output="topk:2", rate=2.5, noise=0.1, round=4, token="t0k3n").check(len(CLASSES))
    with pytest.raises(DistillabError, match="topk:3"):
        make_app(tiny_model(), META, ServeOptions(output="topk:3"))
    with pytest.raises(DistillabError, match="normalisation"):
        make_app(tiny_model(), {"input_shape": [1, 8, 8], "classes": CLASSES}, ServeOptions())

    token_file = tmp_path / "token"
    token_file.write_text("  s3cret\n")
    assert read_token_file(token_file) == "s3cret"
    token_file.write_text(" \n")
    with pytest.raises(DistillabError, match="empty"):
        read_token_file(token_file)
    token_file.write_bytes(b"x" * 100_000)
    with pytest.raises(DistillabError, match="bytes"):
        read_token_file(token_file)
    with pytest.raises(DistillabError, match="cannot read"):
        read_token_file(tmp_path / "missing")


class _Recorder(Reporter):
    def __init__(self):
        super().__init__(quiet=True)
        self.messages = []

    def info(self, message):
        self.messages.append(message)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_forever_returns_cleanly_on_a_signal(signum):
    reporter, seen = _Recorder(), []
    handler_before = signal.getsignal(signum)

    def poke_then_signal():
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and not reporter.messages:
            time.sleep(0.02)
        found = re.search(r"http://\S+:\d+", " ".join(reporter.messages))
        if found:
            seen.append(call(found.group(0), "/health")[0])
        os.kill(os.getpid(), signum)  # always sent, so serve_forever cannot outlive the test

    poker = threading.Thread(target=poke_then_signal)
    poker.start()
    serve_forever(tiny_model(), META, ServeOptions(), reporter=reporter)
    poker.join(TIMEOUT)
    assert seen == [200]
    assert reporter.messages[-1] == "service stopped"
    assert signal.getsignal(signum) is handler_before
    assert service_threads() == []


# ---- clients that connect and say nothing, or say it slowly, do not hold the service ----------------------------


def _port(url):
    return int(url.rsplit(":", 1)[1])


def _closed_by_server(sock, within: float) -> bool:
    """Whether the server closes ``sock`` (reading it returns end-of-file, or a reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_idle_connections_neither_stall_health_nor_stay_open(serve):
    handle = serve(request_timeout=1.0)
    idle = [socket.create_connection(("127.0.0.1", _port(handle.url)), timeout=5) for _ in range(300)]
    try:
        started = time.monotonic()
        status, _, body = call(handle.url, "/health")
        assert (status, json.loads(body)) == (200, {"status": "ok"}) and time.monotonic() - started < 5
        time.sleep(1.0)
        assert all(_closed_by_server(s, within=5.0) for s in idle)  # each closed after its second of silence
    finally:
        for s in idle:
            s.close()


@pytest.mark.parametrize("part", ["headers", "headers-after-a-request", "body"])
def test_a_request_trickled_a_byte_at_a_time_is_cut_off(serve, part):
    handle = serve(request_timeout=1.0)
    with socket.create_connection(("127.0.0.1", _port(handle.url)), timeout=5) as s:
        trickle = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40
        if part == "headers-after-a-request":  # kept alive after an answer: the next request's first byte starts
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # its clock
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            time.sleep(1.2)
        elif part == "body":  # whole headers at once, then the body slowly
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 400\r\n\r\n")
            trickle = b'{"inputs": [' + b"0, " * 40
        started, cut = time.monotonic(), False
        for byte in trickle:  # at most ~15 s, bounded
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            time.sleep(0.3)
            if time.monotonic() - started > 1.5:
                cut = _closed_by_server(s, within=2.0)
                break
        assert cut and time.monotonic() - started < 5


def test_keep_alive_requests_each_get_their_own_time(serve):
    """A second request on the same connection, sent in two halves, starts its own clock: the first request's has
    stopped (a leftover one would cut the second request off)."""
    handle = serve(request_timeout=1.0)
    conn = http.client.HTTPConnection("127.0.0.1", _port(handle.url), timeout=5)
    conn.request("GET", "/health")
    assert conn.getresponse().read() == b'{"status":"ok"}'
    time.sleep(0.7)
    conn.sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    time.sleep(0.6)  # past the first request's second
    conn.sock.sendall(b"\r\n")
    assert conn.sock.recv(4096).startswith(b"HTTP/1.1 200")
    conn.close()


def test_beyond_max_connections_a_new_one_is_answered_503_and_closed(serve):
    handle = serve(max_connections=4)
    held = [socket.create_connection(("127.0.0.1", _port(handle.url)), timeout=5) for _ in range(4)]
    try:
        time.sleep(0.2)  # the server has taken them
        with socket.create_connection(("127.0.0.1", _port(handle.url)), timeout=5) as extra:
            reply = extra.recv(4096)
            assert reply.startswith(b"HTTP/1.1 503") and b"too many connections" in reply
            assert _closed_by_server(extra, within=2.0)
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)  # released: the service answers again
    assert call(handle.url, "/health")[0] == 200


def test_the_port_default_is_known_in_the_foreground_and_free_in_the_background(monkeypatch):
    """One default, in ServeOptions: a service run from the shell (serve_forever, `distillab serve`) listens on
    FOREGROUND_PORT, which clients can name; a background handle takes a free port (tests and notebooks run many)."""
    from distillab.service import server

    assert ServeOptions().port is None
    handle = start_service(tiny_model(), META, ServeOptions())
    try:
        assert handle.port not in (0, server.FOREGROUND_PORT)
    finally:
        handle.stop()
    asked = []

    def refuse(model, meta, options, device="cpu"):
        asked.append(options.port)
        raise OSError("not started in this test")

    monkeypatch.setattr(server, "start_service", refuse)
    with pytest.raises(OSError):
        server.serve_forever(tiny_model(), META, ServeOptions())
    with pytest.raises(OSError):
        server.serve_forever(tiny_model(), META, ServeOptions(port=0))
    assert asked == [server.FOREGROUND_PORT, 0]
