"""Custom model classes logged by the tests (a module of their own, as custom model code must be)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd

from duckreg.custom import CustomModel, ModelContext, inference_api


class CustomTranscriber(CustomModel):
    """The seed's transcriber: base64 audio in, the ASR pipeline's ``{text, chunks}`` out."""

    def __init__(self, context: ModelContext) -> None:
        super().__init__(context)
        self.model = self.context.model_ref("my_model")

    @inference_api
    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        import soundfile

        audio_bytes = [base64.b64decode(b64) for b64 in df["audio"].tolist()]
        rate = self.model.feature_extractor.sampling_rate
        waves = [soundfile.read(io.BytesIO(data), dtype="float32")[0] for data in audio_bytes]
        results = [self.model({"raw": np.asarray(w), "sampling_rate": rate}) for w in waves]
        return pd.DataFrame({"outputs": [{"text": r["text"], "chunks": []} for r in results]})


class Greeter(CustomModel):
    """A model with a file artifact and two methods."""

    @inference_api
    def greet(self, df: pd.DataFrame) -> pd.DataFrame:
        with open(self.context.path("greeting")) as handle:
            greeting = handle.read().strip()
        return pd.DataFrame({"greeting": [f"{greeting}, {name}!" for name in df["name"]]})

    @inference_api
    def shout(self, df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"greeting": [name.upper() for name in df["name"]]})


class SlowDoubler(CustomModel):
    """Doubles numbers, slowly: long enough for a test to kill the process running it half-way."""

    @inference_api
    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        import time

        time.sleep(0.05)
        return pd.DataFrame({"doubled": [None if x is None else 2 * x for x in df["x"]]})


class Sampler(CustomModel):
    """Declares runtime parameters as keyword arguments, as Snowflake's custom models do."""

    @inference_api
    def predict(self, df: pd.DataFrame, *, temperature: float = 1.0, top_k: int = 50) -> pd.DataFrame:
        return pd.DataFrame({"setting": [f"{text}:{temperature}:{top_k}" for text in df["text"]]})


class RowCounter(CustomModel):
    """Counts the rows it is asked to compute (read back from the process's loaded copy)."""

    rows_seen = 0

    @inference_api
    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        self.rows_seen += len(df)
        return pd.DataFrame({"length": df["text"].str.len()})


class Gate(CustomModel):
    """Answers each row once the file its ``path`` names exists (a test opens the gate when it is ready)."""

    @inference_api
    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        import os
        import time

        deadline = time.monotonic() + 120
        for path in df["path"]:
            while not os.path.exists(path) and time.monotonic() < deadline:
                time.sleep(0.02)
        return pd.DataFrame({"opened": [os.path.exists(path) for path in df["path"]]})


class Plodder(CustomModel):
    """Doubles numbers at 50 ms a row, and touches the file ``$PLODDER_STARTED`` names when it starts working."""

    @inference_api
    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        import os
        import pathlib
        import time

        if os.environ.get("PLODDER_STARTED"):
            pathlib.Path(os.environ["PLODDER_STARTED"]).touch()
        time.sleep(0.05 * len(df))
        return pd.DataFrame({"doubled": [2 * x for x in df["x"]]})


class Fragile(CustomModel):
    """The length of each text, but a batch holding "boom" fails as a whole, as a model fails on one bad row."""

    rows_seen = 0

    @inference_api
    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        self.rows_seen += len(df)
        if any("boom" in text for text in df["text"]):
            raise RuntimeError("the model could not read a row")
        return pd.DataFrame({"length": df["text"].str.len()})


class SlowFragile(Fragile):
    """``Fragile``, slowly: long enough for a test to kill the process running it half-way."""

    @inference_api
    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        import time

        time.sleep(0.02)
        return super().predict(df)
