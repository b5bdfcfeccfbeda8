"""image-text-to-text: OpenAI chat messages with image parts, on a tiny LLaVA, through mv.run and run_batch."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import transformers
from conftest import ask_about_picture as ask
from conftest import picture, serve_folder
from PIL import Image

from duckreg.batch import InputSpec, JobSpec, OutputSpec

GREEDY = {"temperature": 0.0, "max_completion_tokens": 8}


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@pytest.fixture
def vision(registry, model_dirs, tmp_path: Path):
    pipe = transformers.pipeline("image-text-to-text", model=str(model_dirs["llava-chat"]))
    mv = registry.log_model(pipe, model_name="cat_vision", version_name="v1")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        (images / f"cat{i}.png").write_bytes(picture(i))
    registry.create_stage("imgs", str(images))
    registry.create_stage("out", str(tmp_path / "out"))
    return mv


def _direct_answer(folder: Path, data: bytes, question: str) -> str:
    processor = transformers.AutoProcessor.from_pretrained(str(folder))
    model = transformers.AutoModelForImageTextToText.from_pretrained(str(folder)).eval()
    image = Image.open(io.BytesIO(data)).convert("RGB")
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "You are an expert on cats and kitchens."}]},
        {"role": "user", "content": [{"type": "text", "text": question}, {"type": "image", "image": image}]},
    ]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")  # fmt: skip
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    return processor.decode(out[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_inferred_signature_and_answer_equal_the_model(vision, model_dirs) -> None:
    signature = vision.show_functions()[0]["signature"]
    assert [s.name for s in signature.inputs] == ["messages"]
    assert [o.name for o in signature.outputs] == ["id", "object", "created", "model", "choices", "usage"]
    out = vision.run(pd.DataFrame({"messages": [json.dumps(ask(_data_url(picture(0))))]}), params=GREEDY)
    expected = _direct_answer(model_dirs["llava-chat"], picture(0), "What breed of cat is this?")
    assert out["choices"][0][0]["message"]["content"] == expected
    assert out["usage"][0]["completion_tokens"] <= 8 and out["object"][0] == "chat.completion"


def test_run_batch_reads_images_from_the_stage(vision, tmp_path: Path) -> None:
    # Seed 004's image-text-to-text example, names adapted: stage paths in image_url parts.
    messages = [ask(f"@imgs/cat{i}.png") for i in range(3)]
    input_df = pd.DataFrame([json.dumps(m) for m in messages], columns=["messages"])
    job = vision.run_batch(X=input_df, output_spec=OutputSpec(stage_location="@out/path/"),
                           input_spec=InputSpec(params=GREEDY), job_spec=JobSpec(block=True))  # fmt: skip
    assert job.status == "DONE", job.message
    got = pq.read_table(tmp_path / "out" / "path").to_pandas()
    inline = vision.run(pd.DataFrame({"messages": [ask(_data_url(picture(i))) for i in range(3)]}), params=GREEDY)
    assert [c[0]["message"]["content"] for c in got["choices"]] == [
        c[0]["message"]["content"] for c in inline["choices"]
    ]
    assert list(got["messages"]) == list(input_df["messages"])  # the input is written as it was given


def test_a_missing_image_fails_the_job_naming_row_and_path(vision, tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "messages": [
                json.dumps(ask("@imgs/cat0.png")),
                json.dumps(ask("@imgs/missing.png")),
            ]
        }
    )
    with pytest.raises(ValueError, match=r"Model cat_vision version v1.*column 'messages'.*row 2.*@imgs/missing.png"):
        vision.run_batch(frame, output_spec=OutputSpec("@out/miss/"), input_spec=InputSpec(params=GREEDY),
                         job_spec=JobSpec(block=True))  # fmt: skip
    assert not (tmp_path / "out" / "miss" / "_SUCCESS").exists()


def test_web_urls_and_escaping_paths_are_refused(vision, registry) -> None:
    cases = [
        ("https://example.com/cat.png", r"media are read from stages .*'allowed_media_domains': \['example.com'\]"),
        ("ftp://example.com/cat.png", "media are read from stages only"),
        ("@imgs/../../etc/passwd", "leaves the stage"),
    ]
    for position, (url, message) in enumerate(cases):
        with pytest.raises(ValueError, match=message):
            vision.run_batch(pd.DataFrame({"messages": [json.dumps(ask(url))]}),
                             output_spec=OutputSpec(f"@out/w{position}/"), input_spec=InputSpec(params=GREEDY),
                             job_spec=JobSpec(block=True))  # fmt: skip
    with pytest.raises(ValueError, match=r"column 'messages', row 1: image_url 'https://example.com/cat.png': media"):
        vision.run(pd.DataFrame({"messages": [ask("https://example.com/cat.png")]}), params=GREEDY)
    con = registry.register_functions()
    with pytest.raises(duckdb.Error, match=r"cat_vision.*column 'messages', row 1: image_url 'https://example.com/cat"):
        con.execute("SELECT cat_vision([{'role': 'user', 'content': [{'type': 'image_url', "
                    "'image_url': {'url': 'https://example.com/cat.png'}}]}])").fetchall()  # fmt: skip


def _sql_answers(con: duckdb.DuckDBPyConnection, url: str, source: str) -> list[str]:
    """cat_vision's greedy answers to the breed question about the picture at ``url`` (SQL), for each row."""
    return [row[0] for row in con.execute(
        "SELECT cat_vision([{'role': 'user', 'content': [{'type': 'text', 'text': 'What breed of cat is this?'}, "
        f"{{'type': 'image_url', 'image_url': {{'url': {url}}}}}]}}], temperature := 0.0, "
        f"max_completion_tokens := 8).choices[1].message.content FROM {source}"
    ).fetchall()]  # fmt: skip


def _mv_run_answers(vision, pictures: list[bytes]) -> list[str]:
    """The same question about each picture, through mv.run with data URLs."""
    question = {"type": "text", "text": "What breed of cat is this?"}
    images = [{"type": "image_url", "image_url": {"url": _data_url(data)}} for data in pictures]
    out = vision.run(pd.DataFrame({"messages": [[{"role": "user", "content": [question, image]}] for image in images]}),
                     params=GREEDY)  # fmt: skip
    return [c[0]["message"]["content"] for c in out["choices"]]


def test_sql_reads_stage_pictures_as_mv_run_does(vision, registry) -> None:
    con = registry.register_functions()
    texts = _sql_answers(con, "'@imgs/cat' || i || '.png'", "range(2) t(i) ORDER BY i")
    assert texts == _mv_run_answers(vision, [picture(0), picture(1)])
    with pytest.raises(duckdb.Error, match=r"column 'messages', row 1: cannot read @imgs/no.png"):
        con.execute("SELECT cat_vision([{'role': 'user', 'content': [{'type': 'image_url', "
                    "'image_url': {'url': '@imgs/no.png'}}]}])").fetchall()  # fmt: skip


def test_sql_builds_the_data_url_from_a_stage_file(vision, registry) -> None:
    con = registry.register_functions()
    url = "'data:image/png;base64,' || base64(read_stage_file('@imgs/cat1.png'))"
    text = con.execute(
        "SELECT cat_vision([{'role': 'user', 'content': [{'type': 'text', 'text': 'What breed of cat is this?'}, "
        f"{{'type': 'image_url', 'image_url': {{'url': {url}}}}}]}}], temperature := 0.0, "
        "max_completion_tokens := 8).choices[1].message.content"
    ).fetchone()[0]
    question = {"type": "text", "text": "What breed of cat is this?"}
    image = {"type": "image_url", "image_url": {"url": _data_url(picture(1))}}
    out = vision.run(pd.DataFrame({"messages": [[{"role": "user", "content": [question, image]}]]}), params=GREEDY)
    assert text == out["choices"][0][0]["message"]["content"]


def test_mv_run_reads_stage_pictures_as_run_batch_does(vision) -> None:
    staged = vision.run(pd.DataFrame({"messages": [json.dumps(ask(f"@imgs/cat{i}.png")) for i in range(2)]}),
                        params=GREEDY)  # fmt: skip
    inline = vision.run(pd.DataFrame({"messages": [ask(_data_url(picture(i))) for i in range(2)]}), params=GREEDY)
    assert [c[0]["message"]["content"] for c in staged["choices"]] == [
        c[0]["message"]["content"] for c in inline["choices"]
    ]
    with pytest.raises(
        ValueError, match=r"Model cat_vision version v1.*column 'messages', row 2: cannot read @imgs/no"
    ):
        vision.run(
            pd.DataFrame({"messages": [ask("@imgs/cat0.png"), ask("@imgs/no.png")]}),
            params=GREEDY,
        )


def test_sql_answers_about_pictures_in_a_blob_column(vision, registry) -> None:
    con = registry.register_functions()
    con.execute("CREATE TABLE pictures (id INTEGER, img BLOB)")
    con.executemany("INSERT INTO pictures VALUES (?, ?)", [(i, picture(i)) for i in range(2)])
    texts = _sql_answers(con, "'data:image/png;base64,' || base64(img)", "pictures ORDER BY id")
    assert texts == _mv_run_answers(vision, [picture(0), picture(1)])
    assert texts[0] != texts[1]


@pytest.fixture
def web_images(tmp_path: Path):
    with serve_folder(tmp_path / "images") as url:
        yield url


def test_run_batch_fetches_web_pictures_only_from_allowed_hosts(vision, web_images, tmp_path: Path) -> None:
    frame = pd.DataFrame({"messages": [json.dumps(ask(f"{web_images}/cat{i}.png")) for i in range(2)]})
    allowed = {"engine": "local", "allowed_media_domains": ["127.0.0.1"]}
    job = vision.run_batch(frame, output_spec=OutputSpec("@out/web/"), input_spec=InputSpec(params=GREEDY),
                           job_spec=JobSpec(block=True), inference_engine_options=allowed)  # fmt: skip
    assert job.status == "DONE", job.message
    got = pq.read_table(tmp_path / "out" / "web").to_pandas()
    inline = vision.run(pd.DataFrame({"messages": [ask(_data_url(picture(i))) for i in range(2)]}), params=GREEDY)
    assert [c[0]["message"]["content"] for c in got["choices"]] == [
        c[0]["message"]["content"] for c in inline["choices"]
    ]
    with pytest.raises(ValueError, match=r"row 1: image_url .*'allowed_media_domains': \['127.0.0.1'\]"):
        vision.run_batch(frame, output_spec=OutputSpec("@out/web2/"), job_spec=JobSpec(block=True))
    missing = pd.DataFrame({"messages": [json.dumps(ask(f"{web_images}/gone.png"))]})
    with pytest.raises(ValueError, match=r"row 1: image_url cannot fetch http://127.*/gone.png: HTTP 404 File not"):
        vision.run_batch(missing, output_spec=OutputSpec("@out/web3/"), job_spec=JobSpec(block=True),
                         inference_engine_options=allowed)  # fmt: skip
    one_string = {"engine": "local", "allowed_media_domains": "127.0.0.1"}
    with pytest.raises(ValueError, match="allowed_media_domains must be a list of host names"):
        vision.run_batch(frame, output_spec=OutputSpec("@out/web4/"), inference_engine_options=one_string)


@pytest.fixture
def unsteady_web():
    """A real HTTP server on loopback: ``/flaky/<n>.png`` answers 503 twice and then picture n, ``/down/...``
    always 503, ``/hop/<n>.png`` redirects to ``/flaky/<n>.png`` and ``/away/...`` to another host name."""
    import http.server
    import threading

    asked: dict[str, int] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            asked[self.path] = asked.get(self.path, 0) + 1
            kind, name = self.path.strip("/").split("/")
            port = self.server.server_address[1]
            if kind == "down" or (kind == "flaky" and asked[self.path] <= 2):
                self.send_response(503)
                self.end_headers()
            elif kind in ("hop", "away"):
                host = "127.0.0.1" if kind == "hop" else "localhost"
                self.send_response(302)
                self.send_header("Location", f"http://{host}:{port}/flaky/{name}")
                self.end_headers()
            else:
                body = picture(int(name.split(".")[0]))
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def test_a_web_picture_that_fails_for_a_moment_is_fetched_again_and_redirects_stay_on_allowed_hosts(
    vision, unsteady_web, registry, tmp_path: Path
) -> None:
    web, asked = unsteady_web
    urls = [f"{web}/flaky/0.png", f"{web}/down/2.png", f"{web}/hop/1.png", f"{web}/away/3.png"]
    frame = pd.DataFrame({"pic": range(4), "messages": [json.dumps(ask(url)) for url in urls]})
    allowed = {"engine": "local", "allowed_media_domains": ["127.0.0.1"]}
    job = vision.run_batch(frame, output_spec=OutputSpec("@out/unsteady/"), input_spec=InputSpec(params=GREEDY),
                           job_spec=JobSpec(block=True, on_error="continue", job_name="unsteady"),
                           inference_engine_options=allowed)  # fmt: skip
    assert job.status == "DONE", job.message
    got = pq.read_table(tmp_path / "out" / "unsteady").to_pandas().sort_values("pic").reset_index(drop=True)
    assert got["_error"].isna().tolist() == [True, False, True, False]
    inline = vision.run(pd.DataFrame({"messages": [ask(_data_url(picture(i))) for i in (0, 1)]}), params=GREEDY)
    assert [got["choices"][i][0]["message"]["content"] for i in (0, 2)] == [
        c[0]["message"]["content"] for c in inline["choices"]
    ]
    assert asked["/flaky/0.png"] == 3 and asked["/down/2.png"] == 4  # three retries, then the row's error
    assert re.search(r"row 2: image_url cannot fetch http://127.*/down/2.png: .*503.* \(tried 4 times\)",
                     got["_error"][1])  # fmt: skip
    assert "/flaky/3.png" not in asked  # the redirect to another host was refused, not followed
    assert re.search(r"row 4: image_url 'http://localhost:\d+/flaky/3.png': media are read from stages .*"
                     r"'allowed_media_domains': \['localhost'\]", got["_error"][3])  # fmt: skip
