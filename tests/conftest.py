"""Shared fixtures: tiny offline models built when first used, and a registry on a real file."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tiny_models
import transformers

import duckreg
from duckreg.model_signature import ModelSignature

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()


TINY_MODELS: dict[str, Callable[[Path], Path]] = {
    "text-classification": tiny_models.bert_text_classification,
    "zero-shot-classification": tiny_models.bert_zero_shot,
    "token-classification": tiny_models.bert_token_classification,
    "fill-mask": tiny_models.bert_fill_mask,
    "feature-extraction": tiny_models.bert_feature_extraction,
    "text-generation": tiny_models.gpt2_text_generation,
    "table-question-answering": tiny_models.tapas_table_qa,
    "question-answering": tiny_models.bert_question_answering,
    "bart": tiny_models.bart_seq2seq,
    "t5": tiny_models.t5_translation,
    "chat-template": tiny_models.gpt2_chat,
    "qwen2-chat": tiny_models.qwen2_chat,
    "llava-chat": tiny_models.llava_chat,
    "qwen2-vl-chat": tiny_models.qwen2_vl_chat,
    "audio-classification": tiny_models.wav2vec2_audio_classification,
    "image-classification": tiny_models.vit_image_classification,
    "speech-recognition": tiny_models.wav2vec2_ctc,
    "roberta-classification": tiny_models.roberta_text_classification,
}


class TinyModelDirs(dict):
    """Tiny model folders by name, each built the first time a test asks for it (once per session)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> Path:
        self[name] = TINY_MODELS[name](self.root / name)
        return self[name]


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> TinyModelDirs:
    return TinyModelDirs(tmp_path_factory.mktemp("tiny-models"))


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """A real HTTP server on loopback serving ``folder``; yields its base URL."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def picture(seed: int, size: int = 40, image_format: str = "PNG") -> bytes:
    """A random ``size``x``size`` RGB picture, encoded as ``image_format``; the same bytes for the same seed."""
    import io

    from PIL import Image

    pixels = (np.random.RandomState(seed).rand(size, size, 3) * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def ask_about_picture(url: str, question: str = "What breed of cat is this?") -> list[dict]:
    """Seed 004's chat messages about a picture: a system message, then a question with an image_url part."""
    return [
        {"role": "system", "content": [{"type": "text", "text": "You are an expert on cats and kitchens."}]},
        {"role": "user", "content": [{"type": "text", "text": question},
                                     {"type": "image_url", "image_url": {"url": url}}]},
    ]  # fmt: skip


def kill_when_parts_written(worker: subprocess.Popen, folder: Path, parts: int) -> int:
    """SIGKILL ``worker`` (running a batch job into ``folder``) once it has written ``parts`` part files;
    the number of part files left behind."""
    import os
    import signal
    import time

    deadline = time.monotonic() + 120
    while len(list(folder.glob("part-*.parquet"))) < parts:
        assert worker.poll() is None, "the worker finished before it could be killed"
        assert time.monotonic() < deadline, f"the worker wrote fewer than {parts} parts in 120 s"
        time.sleep(0.02)
    os.kill(worker.pid, signal.SIGKILL)
    assert worker.wait() == -signal.SIGKILL
    assert not (folder / "_SUCCESS").exists()
    return len(list(folder.glob("part-*.parquet")))


def logged_database(path: Path, model_dir: Path, model_name: str = "clf") -> Path:
    """A registry file at ``path`` holding one text-classification model (version v1), closed again."""
    registry = duckreg.Registry(str(path))
    pipe = transformers.pipeline("text-classification", model=str(model_dir))
    registry.log_model(pipe, model_name=model_name, version_name="v1")
    registry.connection.close()
    return path


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "registry.duckdb"


@pytest.fixture
def registry(db_path: Path):
    reg = duckreg.Registry(str(db_path))
    yield reg
    reg.connection.close()


class NumpyEncoder(json.JSONEncoder):
    """The encoder the seed documents describe: numpy numbers become plain ints and floats."""

    def default(self, o):
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        return super().default(o)


def seed_json(value) -> str:
    return json.dumps(value, cls=NumpyEncoder)


def run_in_new_process(db_path: Path, query: str) -> list:
    """Open the database file in a fresh interpreter (read-only) and run ``query`` there."""
    script = (
        "import json, sys, duckreg\n"
        f"con = duckreg.connect({str(db_path)!r}, read_only=True)\n"
        "con.execute('SET enable_progress_bar = false')\n"
        f"rows = con.execute({query!r}).fetchall()\n"
        "print(json.dumps(rows, default=str))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclass
class Case:
    """One logged model in a task conformance test: how it is built and what it must show."""

    model_name: str
    task: str
    model_dir: str
    kwargs: dict[str, Any]
    signature: ModelSignature
    frame: pd.DataFrame
    direct: Callable[[Any, pd.DataFrame], list[dict[str, Any]]] | None = None
    options: dict[str, Any] | None = None
