"""Distilling from a teacher behind a URL (`distillab kd --teacher-url`, `distill(teacher_url=...)`) against a live
`distillab serve` on 127.0.0.1: the student learns, the answer cache makes a repeated run free and identical, a
server killed mid-run and restarted leaves the same student as an uninterrupted run, and a service that refuses,
is down or answers wrongly ends in one line with the cache kept."""

import json
import time
import sqlite3

import pytest
import torch
from torch import nn

from distillab import api
from distillab.models import build_model, load_model
from distillab.service.client import (AnswerCache, QueryOptions, RateLimit, ServiceAnswers, ServiceClient,
                                      input_keys)
from distillab.errors import DistillabError
from distillab.service.tokens import read_token_file
from distillab.service.server import ServeOptions, start_service

from conftest import assert_one_line_error

KD = dict(data="digits", student="mlp:hidden=16", epochs=2, temperature=4.0, alpha=0.9, quiet=True)
ROWS = DISTINCT = 1214  # digits' training split: each input is asked once


@pytest.fixture(scope="module")
def teacher_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("svc") / "teacher"
    api.train(data="digits", model="mlp:hidden=32", epochs=5, lr=0.05, batch_size=64, out=out, quiet=True)
    return out / "model.safetensors"


@pytest.fixture
def service(teacher_model):
    handles = []

    def start(path=teacher_model, model=None, meta=None, **options):
        if model is None:
            model, meta = load_model(path)
        handle = start_service(model, meta, ServeOptions(**options))
        handles.append(handle)
        return handle

    yield start
    for h in handles:
        h.stop()


def _bytes(run):
    return (run.out / "model.safetensors").read_bytes()


def _same_weights(a, b) -> bool:
    from safetensors.torch import load_file

    wa, wb = load_file(a.out / "model.safetensors"), load_file(b.out / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_student_from_the_url_learns_and_a_repeated_run_is_free_and_identical(service, tmp_path):
    url = service().url
    first = api.distill(teacher_url=url, out=tmp_path / "a", query_cache=tmp_path / "q.sqlite", **KD)
    assert first.metrics["test_accuracy"] > 0.5  # chance is 0.1
    assert first.metrics["teacher_queries"] == DISTINCT and first.metrics["cache_hits"] == 0
    assert first.metrics["teacher_requests"] == -(-DISTINCT // 256)  # batches of --query-batch 256
    again = api.distill(teacher_url=url, out=tmp_path / "b", query_cache=tmp_path / "q.sqlite", **KD)
    assert again.metrics["teacher_queries"] == 0 and again.metrics["cache_hits"] == ROWS
    assert again.metrics["cache_rows_checked"] == 16  # the spot check: asked again, not paid for the student
    assert _bytes(again) == _bytes(first)


def test_the_url_student_matches_the_one_from_local_probabilities(service, teacher_model, tmp_path):
    probs = tmp_path / "probs.npz"
    api.predict(teacher_model, "digits", output="probs", out=probs, quiet=True)
    local = api.distill(teacher_outputs=probs, out=tmp_path / "local", **KD)
    remote = api.distill(teacher_url=service().url, out=tmp_path / "remote", **KD)
    assert abs(local.metrics["test_accuracy"] - remote.metrics["test_accuracy"]) <= 0.01
    assert (tmp_path / "remote.queries.sqlite").exists()  # the default cache sits beside the run


def test_a_server_killed_mid_run_and_restarted_gives_the_uninterrupted_student(service, tmp_path, monkeypatch):
    whole = api.distill(teacher_url=service().url, out=tmp_path / "whole", query_batch=64, concurrency=1, **KD)
    first = service()
    calls = {"n": 0}
    answer = ServiceClient.answer

    def dying(self, x):
        calls["n"] += 1
        if calls["n"] == 6:  # the service dies after five answered requests
            first.stop()
        return answer(self, x)

    monkeypatch.setattr(ServiceClient, "answer", dying)
    with pytest.raises(Exception, match="did not answer"):
        api.distill(teacher_url=first.url, out=tmp_path / "run", query_batch=64, concurrency=1, retries=1, **KD)
    monkeypatch.setattr(ServiceClient, "answer", answer)
    cache = tmp_path / "run.queries.sqlite"
    assert sqlite3.connect(cache).execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 5 * 64  # kept
    second = service()  # restarted (on another port: the cache is keyed by the inputs, not the address)
    resumed = api.distill(teacher_url=second.url, out=tmp_path / "run", query_batch=64, concurrency=1, **KD)
    assert resumed.metrics["teacher_queries"] == DISTINCT - 5 * 64 and resumed.metrics["cache_hits"] >= 5 * 64
    assert _same_weights(resumed, whole)  # the files differ only in the URL they record


def test_with_augmentation_every_view_is_a_query(service, tmp_path):
    run = api.distill(teacher_url=service().url, out=tmp_path / "aug", augment="shift:1", **KD)
    assert run.metrics["teacher_queries"] > ROWS  # two epochs of new views
    assert "live" in run.metrics["teacher_mode"] and run.metrics["queries_per_epoch"] > 800


def test_topk_and_label_services_teach_too(service, tmp_path):
    for output in ("topk:3", "label"):
        run = api.distill(teacher_url=service(output=output).url, out=tmp_path / output.replace(":", ""), **KD)
        assert run.metrics["test_accuracy"] > 0.3 and output in run.metrics["teacher_mode"]  # chance is 0.1


# ---- refusals: one line, exit code 2, the cache kept ----


def test_cli_kd_from_a_url_with_a_token(cli, service, tmp_path):
    (tmp_path / "token").write_text("s3cret\n")
    url = service(token="s3cret").url
    args = ["kd", "--data", "digits", "--student", "mlp:hidden=16", "--epochs", "1", "--teacher-url", url]
    assert_one_line_error(cli(*args, "--out", tmp_path / "no"), "401", "--token-file")
    assert not (tmp_path / "no").exists()
    r = cli(*args, "--token-file", tmp_path / "token", "--out", tmp_path / "yes")
    assert r.code == 0, r.err
    assert r.json["teacher_queries"] == DISTINCT
    assert_one_line_error(cli(*args, "--teacher", "x.safetensors", "--out", tmp_path / "two"), "give one of")
    assert_one_line_error(cli("kd", "--data", "digits", "--student", "mlp:hidden=16", "--teacher", "x.safetensors",
                              "--concurrency", "2"), "go with --teacher-url")


def test_a_service_that_is_down_is_one_line(cli, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli("kd", "--data", "digits", "--student", "mlp:hidden=16", "--teacher-url", f"http://127.0.0.1:{port}",
            "--retries", "1", "--out", tmp_path / "down")
    assert_one_line_error(r, "did not answer", "2 attempts")
    assert_one_line_error(cli("kd", "--data", "digits", "--student", "mlp:hidden=16", "--teacher-url", "ftp://x",
                              "--out", tmp_path / "ftp"), "http(s) URL")


@pytest.mark.parametrize("shape, classes, fragment", [((1, 8, 8), 3, "predicts 3 classes"),
                                                      ((1, 4, 4), 10, "takes inputs of shape (1, 4, 4)")])
def test_a_service_of_another_model_is_refused(cli, service, tmp_path, shape, classes, fragment):
    model = build_model("mlp:hidden=4", shape, classes, torch.Generator().manual_seed(0))
    meta = {"input_shape": list(shape), "classes": [str(c) for c in range(classes)],
            "normalisation": {"mean": [0.0], "std": [1.0]}, "spec": "mlp:hidden=4"}
    r = cli("kd", "--data", "digits", "--student", "mlp:hidden=16", "--teacher-url",
            service(model=model, meta=meta).url, "--out", tmp_path / "other")
    assert_one_line_error(r, fragment)
    assert not (tmp_path / "other").exists()


def test_cli_serve_runs_until_sigterm(teacher_model, tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "distillab", "serve", str(teacher_model), "--port", str(port),
                             "--output", "topk:2"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        info = None
        for _ in range(300):  # up to 30 s to start
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=1) as r:
                    info = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.1)
        assert info and info["output"] == "topk:2" and info["input_shape"] == [1, 8, 8]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert f"serving at http://127.0.0.1:{port}" in proc.stderr.read()
    finally:
        proc.kill()


def test_a_signal_as_the_service_starts_stops_it_cleanly(teacher_model, monkeypatch):
    """The race behind a flaky run: a SIGTERM that comes as soon as the service answers, before serve_forever had
    put its handlers in, fell to the default handler (exit 143 instead of a clean stop)."""
    import os
    import signal

    from distillab.service import server

    model, meta = load_model(teacher_model)
    real_start = server.start_service

    def start_then_signal(*args, **kwargs):
        handle = real_start(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # delivered before start_service returns
        return handle

    class Fell(Exception):
        pass

    def fell_through(signum, frame):
        raise Fell()

    before = signal.signal(signal.SIGTERM, fell_through)  # what a missing handler would meet, without killing pytest
    try:
        monkeypatch.setattr(server, "start_service", start_then_signal)
        server.serve_forever(model, meta, ServeOptions(port=0))  # returns: the service stopped on the signal
        assert signal.getsignal(signal.SIGTERM) is fell_through  # and its handlers were taken out again
    finally:
        signal.signal(signal.SIGTERM, before)


class NaNs(nn.Module):
    def forward(self, x):
        return torch.full((len(x), 10), float("nan"))


def test_a_service_answering_nonsense_is_refused_and_the_cache_kept(cli, service, tmp_path):
    meta = {"input_shape": [1, 8, 8], "classes": [str(i) for i in range(10)],
            "normalisation": {"mean": [0.0], "std": [1.0]}, "spec": "nan"}
    r = cli("kd", "--data", "digits", "--student", "mlp:hidden=16", "--teacher-url",
            service(model=NaNs(), meta=meta).url, "--out", tmp_path / "nan")
    assert_one_line_error(r, "not probabilities")
    assert (tmp_path / "nan.queries.sqlite").exists() and not (tmp_path / "nan").exists()


class Raises(nn.Module):
    def forward(self, x):
        raise RuntimeError("the model broke")


def test_a_failing_service_is_retried_then_one_line(cli, service, tmp_path):
    meta = {"input_shape": [1, 8, 8], "classes": [str(i) for i in range(10)],
            "normalisation": {"mean": [0.0], "std": [1.0]}, "spec": "broken"}
    r = cli("kd", "--data", "digits", "--student", "mlp:hidden=16", "--teacher-url",
            service(model=Raises(), meta=meta).url, "--retries", "1", "--out", tmp_path / "broken")
    assert_one_line_error(r, "did not answer", "HTTP 500", "2 attempts")


class MeanProbe(nn.Module):
    """Class 0's logit is the mean of the input it receives: shows how the client normalised it."""

    def forward(self, x):
        return torch.nn.functional.pad(x.mean((1, 2, 3))[:, None], (0, 9))


def test_inputs_reach_the_service_normalised_as_it_asks(service):
    from distillab import data as data_mod
    from distillab.kd.teachers import ServiceTeacher

    meta = {"input_shape": [1, 8, 8], "classes": [str(i) for i in range(10)],
            "normalisation": {"mean": [0.5], "std": [0.25]}, "spec": "probe"}
    client = ServiceClient(service(model=MeanProbe(), meta=meta).url)
    pixels = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    student_mean, student_std = (0.3,), (0.2,)
    teacher = ServiceTeacher(ServiceAnswers(client, AnswerCache(":memory:", client.info)), student_mean, student_std)
    got = teacher(data_mod.normalise(pixels, student_mean, student_std)).logits
    seen = ((pixels - 0.5) / 0.25).mean((1, 2, 3))  # what the service must have been given
    expected = torch.log_softmax(torch.nn.functional.pad(seen[:, None], (0, 9)), 1)
    assert torch.allclose(got, expected, atol=1e-4)


# ---- the pieces ----


def test_the_cache_refuses_another_service_and_forged_rows(tmp_path):
    info = {"input_shape": [1, 2, 2], "classes": ["a", "b"], "normalisation": {"mean": [0.0], "std": [1.0]},
            "output": "probs"}
    cache = AnswerCache(tmp_path / "c.sqlite", info)
    x = torch.arange(8.0).view(2, 1, 2, 2)
    keys = input_keys(x)
    assert len(set(keys)) == 2 and input_keys(x.clone()) == keys
    cache.put(keys, [[0.25, 0.75], [1.0, 0.0]])
    assert cache.get(keys, 2)[keys[0]].tolist() == [0.25, 0.75] and len(cache) == 2
    assert cache.get(keys, 3) == {}  # a row of the wrong width is asked again, not used
    cache.close()
    for other in ({"output": "label"}, {"noise": 0.1}, {"round": 3}):  # blurred answers are other answers
        with pytest.raises(Exception, match="another teacher service"):
            AnswerCache(tmp_path / "c.sqlite", {**info, **other})
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(Exception, match="not a query cache"):
        AnswerCache(tmp_path / "junk.sqlite", info)


def test_the_same_input_twice_is_asked_once(service, tmp_path):
    client = ServiceClient(service().url)
    answers = ServiceAnswers(client, AnswerCache(tmp_path / "c.sqlite", client.info))
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    rows = answers(torch.cat([x, x[:2]]))
    assert answers.queried == 5 and client.rows == 5 and rows.shape == (7, 10)
    assert (rows[5:] == rows[:2]).all() and abs(rows.sum(1) - 1).max() < 1e-5
    assert answers(x[:3]).tolist() == rows[:3].tolist() and answers.queried == 5 and answers.hits == 3


def test_rate_limit_spaces_requests():
    import time

    limit = RateLimit(20.0)
    started = time.monotonic()
    for _ in range(5):
        limit.wait()
    assert time.monotonic() - started >= 0.19  # 5 starts at 20 per second: 4 intervals of 50 ms
    RateLimit(0).wait()  # no limit: returns at once


def test_token_files_and_query_options_are_checked(tmp_path):
    (tmp_path / "t").write_text("  abc \n")
    assert read_token_file(tmp_path / "t") == "abc"
    for content in ("", "two\nlines", "x" * 5000):
        (tmp_path / "bad").write_text(content)
        with pytest.raises(Exception, match="token"):
            read_token_file(tmp_path / "bad")
    with pytest.raises(DistillabError, match="more than 4096 bytes"):
        read_token_file("/dev/zero")  # says size 0 and never ends: a bounded read refuses it
    with pytest.raises(Exception, match="--concurrency"):
        QueryOptions(concurrency=0).check()


# ---- a hostile service: whatever it sends ends in one DistillabError ----

from hypothesis import given, settings, strategies as st  # noqa: E402



def _offline_client(output: str) -> ServiceClient:
    client = object.__new__(ServiceClient)  # no connection: only the answer checks run
    client.url, client.info = "http://test", {"classes": [str(i) for i in range(10)], "output": output, "round": 0}
    return client


JSONISH = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=5),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=3), max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(body=st.one_of(st.binary(max_size=300), JSONISH.map(lambda v: json.dumps(v).encode())),
       kind=st.sampled_from(["application/octet-stream", "application/json"]),
       output=st.sampled_from(["probs", "topk:3", "label"]))
def test_any_answer_is_used_or_refused_in_one_line(body, kind, output):
    try:
        rows = _offline_client(output)._rows(body, kind, 2)
    except DistillabError as e:
        assert "\n" not in str(e)
    else:
        assert rows.shape[0] == 2


def test_a_forged_safetensors_answer_is_refused():
    from safetensors.torch import save

    client = _offline_client("probs")
    for tensors in ({"probs": torch.full((2, 10), 0.5)}, {"probs": torch.ones(2, 9) / 9},
                    {"probs": torch.full((2, 10), float("nan"))}, {"logits": torch.zeros(2, 10)}):
        with pytest.raises(DistillabError, match="probs|probabilities"):
            client._rows(save(tensors), "application/octet-stream", 2)
    good = torch.softmax(torch.randn(2, 10, generator=torch.Generator().manual_seed(0)), 1)
    assert client._rows(save({"probs": good}), "application/octet-stream", 2).shape == (2, 10)


# ---- the token stays with the URL the user gave ----------------------------------------------------------------


@pytest.fixture
def loopback_server():
    """``start(handler_fn) -> (url, seen)``: a plain HTTP server on 127.0.0.1 whose ``handler_fn(request)`` answers
    every GET and POST; ``seen`` lists (method, path, Authorization header) of each request it got."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    servers = []

    def start(answer):
        seen = []

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                seen.append((self.command, self.path, self.headers.get("Authorization")))
                if self.command == "POST":
                    self.rfile.read(int(self.headers.get("Content-Length", 0)))
                answer(self)

            do_GET = do_POST = _any

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.timeout = 5
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}", seen

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _redirect_to(target: str, code: int = 307):
    def answer(handler):
        handler.send_response(code)
        handler.send_header("Location", target + handler.path)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return answer


def _refuse(handler):
    handler.send_response(401)
    handler.send_header("Content-Type", "application/json")
    body = b'{"error": "no token"}'
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.mark.parametrize("code", [302, 307])
def test_a_redirect_is_refused_and_the_token_never_leaves(cli, tmp_path, loopback_server, code):
    collector, collected = loopback_server(_refuse)
    redirector, asked = loopback_server(_redirect_to(collector, code))
    (tmp_path / "token").write_text("s3cret\n")
    args = ["kd", "--data", "digits", "--student", "mlp:hidden=16", "--epochs", "1", "--teacher-url", redirector,
            "--token-file", tmp_path / "token", "--retries", "0"]
    assert_one_line_error(cli(*args, "--out", tmp_path / "r"), "redirected /info to " + collector + "/info",
                          "--follow-redirects")
    assert asked == [("GET", "/info", "Bearer s3cret")] and collected == [] and not (tmp_path / "r").exists()
    # followed on purpose: the other port is asked, without the token (so it refuses, in one line)
    assert_one_line_error(cli(*args, "--follow-redirects", "--out", tmp_path / "f"), "401")
    assert collected and all(auth is None for _, _, auth in collected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token"]  # no run folder, no query cache left behind


def test_a_followed_redirect_keeps_the_token_only_on_the_same_origin():
    import urllib.request

    from distillab.service.client import _Redirects

    handler = _Redirects("http://127.0.0.1:8000", follow=True)
    for target, kept in [("http://127.0.0.1:8000/v2/info", True), ("http://127.0.0.1/info", False),
                         ("http://127.0.0.1:8001/info", False), ("https://127.0.0.1:8000/info", False),
                         ("http://localhost:8000/info", False), ("http://evil.example:8000/info", False)]:
        req = urllib.request.Request("http://127.0.0.1:8000/info", headers={"Authorization": "Bearer s3cret"})
        new = handler.redirect_request(req, None, 302, "Found", {}, target)
        assert new.has_header("Authorization") == kept, target


@pytest.mark.parametrize("code", [400, 404, 413])
def test_a_refused_request_is_not_retried(loopback_server, code):
    def refuse(handler):
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        body = b'{"error": "not like that"}'
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    url, asked = loopback_server(refuse)
    with pytest.raises(Exception, match=f"HTTP {code}") as e:
        ServiceClient(url, options=QueryOptions(retries=3, backoff=0.01))
    assert len(asked) == 1 and "\n" not in str(e.value)  # asked once: a 4xx answer will not change by asking again


def test_an_answer_trickled_slowly_hits_a_deadline_for_the_whole_answer(loopback_server):
    def trickle(handler):  # every read gets a byte well within the per-read time-out, the answer never ends
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "5000")
        handler.end_headers()
        for _ in range(40):  # bounded: at most ~8 s
            try:
                handler.wfile.write(b" ")
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)

    url, asked = loopback_server(trickle)
    started = time.monotonic()
    with pytest.raises(DistillabError, match="took longer than 1 s"):
        ServiceClient(url, options=QueryOptions(timeout=1.0, retries=0))
    assert time.monotonic() - started < 4 and len(asked) == 1


GOOD_INFO = {"format": "distillab.teacher-service", "input_shape": [1, 8, 8], "classes": [str(i) for i in range(10)],
             "normalisation": {"mean": [0.5], "std": [0.25]}, "output": "probs", "max_batch": 64}


def _answering(body: bytes, raw: bool = False):
    def answer(handler):
        if raw:  # not HTTP at all
            handler.wfile.write(body)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return answer


FORGED_INFO = [  # (id, body, raw, message): a hostile service's answer to GET /info
    ("nesting-bomb", b'{"format": "distillab.teacher-service", "x": ' + b"[" * 100_000, False,
     "did not answer with JSON"),
    ("nan-mean", json.dumps({**GOOD_INFO, "normalisation": {"mean": [float("nan")], "std": [0.25]}}).encode(), False,
     "finite mean"),
    ("inf-std", json.dumps({**GOOD_INFO, "normalisation": {"mean": [0.5], "std": [float("inf")]}}).encode(), False,
     "finite mean"),
    ("max-batch-true", json.dumps({**GOOD_INFO, "max_batch": True}).encode(), False, "bad max_batch"),
    ("round-fraction", json.dumps({**GOOD_INFO, "round": 2.5}).encode(), False, "round must be"),
    ("round-text", json.dumps({**GOOD_INFO, "round": "3"}).encode(), False, "round must be"),
    ("noise-inf", json.dumps({**GOOD_INFO, "noise": float("inf")}).encode(), False, "noise must be"),
    ("bad-status-line", b"SPEAKING NONSENSE\r\n\r\n", True, "did not speak HTTP"),
    ("150-headers", b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 150 + b"\r\n", True, "did not speak HTTP"),
]


@pytest.mark.parametrize("body, raw, message", [pytest.param(*case[1:], id=case[0]) for case in FORGED_INFO])
def test_a_forged_service_description_ends_in_one_line(loopback_server, body, raw, message):
    url, _ = loopback_server(_answering(body, raw))
    with pytest.raises(DistillabError, match=message) as e:
        ServiceClient(url, options=QueryOptions(retries=0, timeout=5))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("body, raw, message", [pytest.param(*case[1:], id=case[0]) for case in FORGED_INFO])
def test_kd_from_a_forged_service_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, loopback_server, body, raw,
                                                                        message):
    """The same answers through `distillab kd --teacher-url`: no traceback, no "internal error", no run folder and
    no query cache left behind."""
    url, _ = loopback_server(_answering(body, raw))
    r = cli("kd", "--data", "digits", "--student", "mlp:hidden=16", "--epochs", "1", "--teacher-url", url,
            "--retries", "0", "--out", tmp_path / "run")
    assert_one_line_error(r, message)
    assert "internal error" not in r.err and list(tmp_path.iterdir()) == []


def test_a_true_service_description_is_taken(loopback_server):
    url, _ = loopback_server(_answering(json.dumps({**GOOD_INFO, "round": 3, "noise": 0.1}).encode()))
    assert ServiceClient(url, options=QueryOptions(retries=0)).info["round"] == 3


def test_cached_rows_must_be_answers_the_service_could_give(tmp_path):
    probs = {**GOOD_INFO, "classes": ["a", "b"], "output": "probs"}
    keys = [bytes([i]) * 32 for i in range(4)]
    cache = AnswerCache(tmp_path / "p.sqlite", probs)
    cache.put(keys, [[5.0, 5.0], [0.3, 0.7], [-0.5, 1.5], [float("nan"), 1.0]])  # forged, true, negative, NaN
    assert list(cache.get(keys, 2)) == [keys[1]]
    cache.close()
    labels = AnswerCache(tmp_path / "l.sqlite", {**GOOD_INFO, "output": "label"})
    labels.put(keys, [[7.0], [2.5], [10.0], [-1.0]])
    assert list(labels.get(keys, 1)) == [keys[0]]
    labels.close()
    top = AnswerCache(tmp_path / "t.sqlite", {**GOOD_INFO, "output": "topk:2"})
    top.put(keys, [[3, 1, 0.5, 0.2], [3, 3, 0.5, 0.2], [3, 1.5, 0.5, 0.2], [3, 1, 0.9, 0.9]])
    assert list(top.get(keys, 4)) == [keys[0]]  # repeated index, fractional index, probabilities over 1
    top.close()


OTHER_FORM = {  # a query cache whose tables are not the ones distillab makes
    "answers-a-view": "CREATE TABLE service (fingerprint TEXT NOT NULL); "
                      "CREATE VIEW answers AS SELECT 1 AS key, 2 AS row",
    "answers-third-column": "CREATE TABLE service (fingerprint TEXT NOT NULL); "
                            "CREATE TABLE answers (key BLOB PRIMARY KEY, row BLOB, x INT)",
    "service-second-column": "CREATE TABLE service (fingerprint TEXT, other TEXT); "
                             "CREATE TABLE answers (key BLOB PRIMARY KEY, row BLOB)",
}


@pytest.mark.parametrize("schema", [pytest.param(v, id=k) for k, v in OTHER_FORM.items()])
def test_a_cache_of_another_form_is_refused_in_one_line(tmp_path, schema):
    db = sqlite3.connect(tmp_path / "c.sqlite")
    db.executescript(schema)
    db.close()
    with pytest.raises(DistillabError, match="its tables have another form") as e:
        AnswerCache(tmp_path / "c.sqlite", GOOD_INFO)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("schema", [pytest.param(v, id=k) for k, v in OTHER_FORM.items()])
def test_kd_with_a_cache_of_another_form_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, loopback_server,
                                                                               schema):
    url, asked = loopback_server(_answering(json.dumps(GOOD_INFO).encode()))
    cache = tmp_path / "c.sqlite"
    db = sqlite3.connect(cache)
    db.executescript(schema)
    db.close()
    before = cache.read_bytes()
    r = cli("kd", "--data", "digits", "--student", "mlp:hidden=16", "--epochs", "1", "--teacher-url", url,
            "--retries", "0", "--query-cache", cache, "--out", tmp_path / "run")
    assert_one_line_error(r, str(cache), "its tables have another form")
    assert "internal error" not in r.err and asked == [("GET", "/info", None)]  # nothing was asked to predict
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.sqlite"] and cache.read_bytes() == before


def _forge_every_row(cache_path, row):
    db = sqlite3.connect(cache_path)
    db.execute("UPDATE answers SET row = ?", (row.tobytes(),))
    db.commit()
    db.close()


@pytest.mark.parametrize("options", [{}, {"round": 2}, {"noise": 0.5, "seed": 3}, {"output": "topk:3"},
                                     {"output": "topk:3", "noise": 0.5}, {"output": "label"}],
                         ids=["probs", "round", "noise", "topk", "topk-noise", "label"])
def test_a_cache_of_valid_but_forged_rows_is_refused_an_honest_one_passes(cli, service, tmp_path, options):
    """Rows the service could give (every row "class 7") but does not: a spot check asks a few again."""
    import numpy as np

    url = service(**options).url
    args = ["kd", "--data", "digits", "--student", "mlp:hidden=16", "--epochs", "1", "--teacher-url", url,
            "--query-cache", tmp_path / "q.sqlite", "--quiet"]
    assert cli(*args, "--out", tmp_path / "a").code == 0
    r = cli(*args, "--out", tmp_path / "b")  # the honest cache passes its check (with noise: by majority)
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["cache_rows_checked"] == 16
    output = options.get("output", "probs")
    row = {"probs": np.eye(10)[7], "label": np.array([7.0]),
           "topk:3": np.array([7.0, 1.0, 2.0, 0.98, 0.01, 0.01])}[output]
    _forge_every_row(tmp_path / "q.sqlite", row)
    r = cli(*args, "--out", tmp_path / "c")
    assert_one_line_error(r, "holds answers the teacher service does not give")
    assert not (tmp_path / "c").exists()
    assert cli(*args, "--out", tmp_path / "d", "--cache-checks", "0").code == 0  # the user trusts it


def test_a_cache_of_rows_no_service_gives_is_asked_again_and_teaches_the_same_student(cli, service, tmp_path):
    """Every cached row forged to 5.0 (not probabilities): each is asked again, none is trained on, and the student
    is bit for bit the one the honest answers made."""
    import numpy as np
    from safetensors.torch import load_file

    args = ["kd", "--data", "digits", "--student", "mlp:hidden=16", "--epochs", "1", "--teacher-url", service().url,
            "--query-cache", tmp_path / "q.sqlite", "--quiet"]
    honest = cli(*args, "--out", tmp_path / "a")
    assert honest.code == 0, honest.err
    _forge_every_row(tmp_path / "q.sqlite", np.full(10, 5.0))
    forged = cli(*args, "--out", tmp_path / "b")
    assert forged.code == 0 and forged.err == "", forged.err
    assert forged.json["teacher_queries"] == DISTINCT and forged.json["cache_hits"] == 0
    assert forged.json["test_accuracy"] == honest.json["test_accuracy"]
    a, b = (load_file(str(tmp_path / run / "model.safetensors")) for run in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cache_checks_is_bounded():
    with pytest.raises(DistillabError, match="--cache-checks"):
        QueryOptions(cache_checks=-1).check()
    with pytest.raises(DistillabError, match="--cache-checks"):
        QueryOptions(cache_checks=1.5).check()
