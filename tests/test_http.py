"""Every model version over HTTP: the official ``openai`` client and ``httpx`` against a real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pandas as pd
import pytest
import transformers

from duckreg import http_server
from duckreg.openai_signatures import OPENAI_CHAT_SIGNATURE

TOKEN = "sesame-1234"


@pytest.fixture
def served(registry, model_dirs):
    """An embedding model, a classifier and a chat model, served over HTTP with a token."""
    embedder = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    registry.log_model(embedder, model_name="emb", version_name="v1", options={"pooling": "mean"})
    classifier = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    registry.log_model(classifier, model_name="clf", version_name="v1")
    chat = transformers.pipeline("text-generation", model=str(model_dirs["text-generation"]))
    registry.log_model(chat, model_name="chat", version_name="v1", signatures=OPENAI_CHAT_SIGNATURE)
    registry.get_model("emb").version("v1").set_alias("prod")
    server = http_server.start(registry, settings=http_server.HttpSettings(token=TOKEN, max_body_bytes=200_000))
    try:
        yield registry, server.url
    finally:
        server.stop()


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)


def test_the_openai_client_lists_models_and_gets_embeddings_equal_to_mv_run(served, model_dirs) -> None:
    registry, url = served
    client = _client(url)
    listed = {m.id: m for m in client.models.list().data}
    assert {"emb", "emb/v1", "clf", "clf/v1", "chat", "chat/v1"} <= set(listed)
    assert listed["emb/v1"].model_extra["task"] == "feature-extraction"
    assert listed["emb"].model_extra["sql_names"] == {"__CALL__": "emb"}
    assert listed["emb/v1"].model_extra["sql_names"] == {"__CALL__": "emb__v1"}
    texts = ["good food in the city", "a river in the mountains", "good food in the city"]
    expected = registry.get_model("emb").version("v1").run(pd.DataFrame({"inputs": texts}))["embedding"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dirs["feature-extraction"]))
    tokens = sum(len(ids) for ids in tokenizer(texts)["input_ids"])  # [CLS] and [SEP] included
    for model in ("emb", "emb/v1", "emb/prod"):
        answer = client.embeddings.create(model=model, input=texts)  # the client asks for base64 by default
        assert [d.index for d in answer.data] == [0, 1, 2]
        for got, want in zip(answer.data, expected, strict=True):
            np.testing.assert_allclose(got.embedding, want, rtol=1e-6)
        assert answer.model == "emb/v1" and answer.usage.prompt_tokens == tokens
    single = client.embeddings.create(model="emb", input="good food in the city", encoding_format="float")
    np.testing.assert_allclose(single.data[0].embedding, expected[0], rtol=1e-6)


def test_the_openai_client_chats_with_and_without_streaming_as_mv_run_answers(served) -> None:
    registry, url = served
    client = _client(url)
    messages = [{"role": "user", "content": "Hello there"}]
    row = pd.DataFrame({"messages": [messages], "max_completion_tokens": [5], "temperature": [0.0]})
    expected = registry.get_model("chat").default.run(row)["choices"][0][0]["message"]["content"]
    answer = client.chat.completions.create(model="chat", messages=messages, max_tokens=5, temperature=0.0)
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.content == expected and answer.choices[0].message.role == "assistant"
    assert answer.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model="chat/v1", messages=messages, max_completion_tokens=5, temperature=0.0, stream=True
    )
    pieces = list(stream)
    assert all(p.object == "chat.completion.chunk" for p in pieces)
    assert "".join(p.choices[0].delta.content or "" for p in pieces if p.choices) == expected
    assert [p.choices[0].finish_reason for p in pieces if p.choices][-1] in ("length", "stop")


def test_invocations_take_mlflow_bodies_and_answer_rows_equal_to_mv_run(served) -> None:
    registry, url = served
    texts = ["great movie", "terrible plot", "great movie"]
    expected = registry.get_model("clf").version("v1").run(pd.DataFrame({"text": texts}))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    bodies = [
        {"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}},
        {"dataframe_records": [{"text": t} for t in texts]},
        {"inputs": {"text": texts}},
        {"inputs": texts},  # a list of values: the function's one required input
    ]
    for body in bodies:
        answer = httpx.post(f"{url}/models/clf/versions/v1/invocations", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert [p["label"] for p in predictions] == expected["label"].tolist()
        np.testing.assert_allclose([p["score"] for p in predictions], expected["score"], rtol=1e-6)
    bare = httpx.post(f"{url}/invocations", json={"model": "clf", "inputs": texts}, headers=headers)
    assert [p["label"] for p in bare.json()["predictions"]] == expected["label"].tolist()


def test_bad_requests_get_json_errors_with_the_right_status(served) -> None:
    _, url = served
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
    assert httpx.get(f"{url}/health").json()["status"] == "ok"  # health checks need no token
    # A bad row is named, with model, version, function and column, in a 400.
    body = {"dataframe_records": [{"text": "fine"}, {"text": 42}]}
    answer = httpx.post(f"{url}/models/clf/versions/v1/invocations", json=body, headers=headers)
    assert answer.status_code == 400
    message = answer.json()["message"]
    assert "Model clf version v1, function __CALL__, column 'text'" in message
    assert "row 2" in message
    with pytest.raises(openai.NotFoundError, match="nope"):
        _client(url).embeddings.create(model="nope", input="x")
    with pytest.raises(openai.BadRequestError, match="no function from one text to one vector"):
        _client(url).embeddings.create(model="clf", input="x")
    # A body over the limit is refused before it is read whole.
    huge = {"inputs": ["word " * 50_000]}
    answer = httpx.post(f"{url}/models/clf/versions/v1/invocations", json=huge, headers=headers)
    assert answer.status_code == 413 and "limit of 200,000" in answer.json()["message"]
    answer = httpx.post(f"{url}/models/clf/versions/v1/invocations", content=b"{not json", headers=headers)
    assert answer.status_code == 400 and "not valid JSON" in answer.json()["message"]
    for bad in ({"model": ["emb"], "input": "x"}, {"model": {"name": "emb"}, "input": "x"}):
        answer = httpx.post(f"{url}/v1/embeddings", json=bad, headers=headers)
        assert answer.status_code == 400 and "model must be a string" in answer.json()["error"]["message"]
    body = {"model": "clf", "function": ["__CALL__"], "inputs": ["fine"]}
    answer = httpx.post(f"{url}/invocations", json=body, headers=headers)
    assert answer.status_code == 400 and "function must be a string" in answer.json()["message"]


def test_concurrent_requests_share_forward_batches_and_metrics_count_them(served) -> None:
    registry, _ = served
    # A window long enough that 32 clients in this one process (one GIL) reach it together.
    settings = http_server.HttpSettings(token=TOKEN, batch_window=0.3)
    server = http_server.start(registry, settings=settings)
    try:
        _ask_concurrently(registry, server.url)
    finally:
        server.stop()


def _ask_concurrently(registry, url: str) -> None:
    client = _client(url)
    texts = [f"text number {i} about food" for i in range(32)]
    expected = registry.get_model("emb").version("v1").run(pd.DataFrame({"inputs": texts}))["embedding"]
    results: dict[int, list[float]] = {}
    barrier = threading.Barrier(32)

    def ask(i: int) -> None:
        barrier.wait()
        results[i] = client.embeddings.create(model="emb", input=texts[i], encoding_format="float").data[0].embedding

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(32):
        np.testing.assert_allclose(results[i], expected[i], rtol=1e-5)
    metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    batches = _sample(metrics, "duckreg_http_batch_requests_count")
    requests = _sample(metrics, "duckreg_http_batch_requests_sum")
    assert requests >= 32 and batches < requests  # fewer forward batches than requests
    assert _sample(metrics, 'duckreg_http_requests_total{endpoint="/v1/embeddings",status="200"}') >= 32
    assert 'duckreg_http_rows_total{function="__CALL__",model="emb",version="v1"} 32.0' in metrics


def _sample(metrics: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(name + " "))


@pytest.mark.process
def test_sigterm_lets_requests_in_flight_finish_then_stops(served, db_path: Path) -> None:
    registry, _ = served
    registry.connection.close()
    port = http_server.free_port("127.0.0.1")
    server = subprocess.Popen(
        [sys.executable, "-m", "duckreg.cli", "serve", str(db_path), "--no-quack", "--http", str(port),
         "--batch-window-ms", "3000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
            time.sleep(0.2)
        answers: list[int] = []
        body = {"inputs": ["a long wait for a batch"]}

        def ask() -> None:
            answers.append(httpx.post(f"{url}/models/clf/versions/v1/invocations", json=body, timeout=60).status_code)

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        # Once all eight wait in the batch window (the metrics request is the ninth in flight), stop the server.
        while _sample(httpx.get(f"{url}/metrics").text, "duckreg_http_requests_in_flight") < 9:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join()
        assert answers == [200] * 8
        assert server.wait(60) == 0
        log = server.stderr.read()
        assert '"POST /models/clf/versions/v1/invocations" 200' in log  # the access log
    finally:
        if server.poll() is None:
            server.kill()


def test_the_serve_command_needs_a_token_off_loopback(db_path: Path, registry) -> None:
    registry.connection.close()
    done = subprocess.run(
        [sys.executable, "-m", "duckreg.cli", "serve", str(db_path), "--no-quack", "--http", "8999",
         "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != "DUCKREG_TOKEN"},
    )  # fmt: skip
    assert done.returncode == 1 and "needs a token" in done.stderr


def test_a_streamed_chat_answer_is_sent_as_it_is_generated_and_joins_to_the_answer(served, model_dirs) -> None:
    registry, url = served
    talker = transformers.pipeline("text-generation", model=str(model_dirs["qwen2-chat"]))
    registry.log_model(talker, model_name="talk", version_name="v1", signatures=OPENAI_CHAT_SIGNATURE)
    client = _client(url)
    messages = [{"role": "user", "content": "a b c d"}]  # its random weights answer with words, not blanks
    controls = {"max_completion_tokens": 24, "temperature": 0.0}
    pieces = list(client.chat.completions.create(model="talk", messages=messages, stream=True, **controls,
                                                 stream_options={"include_usage": True}))  # fmt: skip
    contents = [p.choices[0].delta.content for p in pieces if p.choices and p.choices[0].delta.content]
    assert len(contents) >= 3  # each piece as the model made it, not the whole answer at the end
    assert pieces[0].choices[0].delta.role == "assistant"
    registry.result_cache.clear("talk")  # compute it again, without streaming
    row = pd.DataFrame({"messages": [messages], **{k: [v] for k, v in controls.items()}})
    expected = registry.get_model("talk").default.run(row)["choices"][0]
    assert "".join(contents) == expected[0]["message"]["content"]
    assert [p.choices[0].finish_reason for p in pieces if p.choices][-1] == expected[0]["finish_reason"]
    assert pieces[-1].choices == [] and pieces[-1].usage.completion_tokens > 0
    # Now kept in the result cache: the answer comes whole, in one piece.
    again = list(client.chat.completions.create(model="talk", messages=messages, stream=True, **controls))
    assert [p.choices[0].delta.content for p in again if p.choices and p.choices[0].delta.content] == [
        expected[0]["message"]["content"]
    ]
    # Two sampled choices are streamed side by side, each ending with its finish reason.
    both = list(client.chat.completions.create(model="talk", messages=messages, stream=True, n=2, temperature=1.0,
                                               max_completion_tokens=12))  # fmt: skip
    finished = {c.index: c.finish_reason for p in both for c in p.choices if c.finish_reason}
    assert set(finished) == {0, 1}
    assert {c.index for p in both for c in p.choices if c.delta.role == "assistant"} == {0, 1}


def test_a_moved_alias_and_a_deleted_version_are_followed_at_once(served, model_dirs) -> None:
    registry, url = served
    client = _client(url)
    assert client.embeddings.create(model="emb/prod", input="good food").model == "emb/v1"
    embedder = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    model = registry.get_model("emb")
    registry.log_model(embedder, model_name="emb", version_name="v2", options={"pooling": "mean"})
    model.version("v1").unset_alias("prod")
    model.version("v2").set_alias("prod")
    assert client.embeddings.create(model="emb/prod", input="good food").model == "emb/v2"
    model.default = "v2"
    model.delete_version("v1")
    assert client.embeddings.create(model="emb", input="good food").model == "emb/v2"
    with pytest.raises(openai.NotFoundError, match="v1"):
        client.embeddings.create(model="emb/v1", input="good food")
