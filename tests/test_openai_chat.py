"""OpenAI-compatible chat on a text-generation model, and other pipelines logged with user signatures."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
import transformers

from duckreg.model_signature import DataType, FeatureSpec, ModelSignature
from duckreg.openai_signatures import (
    OPENAI_CHAT_SIGNATURE,
    OPENAI_CHAT_SIGNATURE_WITH_CONTENT_FORMAT_STRING,
    OPENAI_CHAT_WITH_PARAMS_SIGNATURE,
)


def _greedy(folder, prompt: str, max_new_tokens: int) -> tuple[list[int], list[int]]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    return ids, out[0][len(ids) :].tolist()


@pytest.fixture
def chat(registry, model_dirs):
    pipe = transformers.pipeline("text-generation", model=str(model_dirs["text-generation"]))
    return registry.log_model(pipe, model_name="chat", version_name="v1", signatures=OPENAI_CHAT_SIGNATURE)


def test_chat_completion_shape_and_greedy_text(chat, model_dirs) -> None:
    assert chat.show_functions()[0]["signature"] == OPENAI_CHAT_SIGNATURE["__call__"]
    messages = [{"role": "system", "content": "You are fine."}, {"role": "user", "content": "Hello world"}]
    out = chat.run(pd.DataFrame({"messages": [messages], "temperature": [0.0], "max_completion_tokens": [4]}))
    assert list(out.columns) == ["id", "object", "created", "model", "choices", "usage"]
    row = out.iloc[0]
    assert row["id"].startswith("chatcmpl-") and row["object"] == "chat.completion"
    assert row["model"] == "chat/v1" and isinstance(row["created"], float)
    # No chat template on this tokenizer: ChatML.
    prompt = (
        "<|im_start|>system\nYou are fine.<|im_end|>\n<|im_start|>user\nHello world<|im_end|>\n<|im_start|>assistant\n"
    )
    prompt_ids, new_ids = _greedy(model_dirs["text-generation"], prompt, 4)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dirs["text-generation"]))
    eos = tokenizer.eos_token_id
    used = new_ids[: new_ids.index(eos) + 1] if eos in new_ids else new_ids
    choice = row["choices"][0]
    assert choice["message"] == {"content": tokenizer.decode(used, skip_special_tokens=True), "name": None,
                                 "role": "assistant"}  # fmt: skip
    assert choice["index"] == 0
    assert choice["finish_reason"] == ("stop" if eos in new_ids else "length")
    assert row["usage"] == {
        "completion_tokens": len(used),
        "prompt_tokens": len(prompt_ids),
        "total_tokens": len(prompt_ids) + len(used),
    }


def test_length_limit_stop_strings_and_n(chat) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "I like you very much and"}]}]
    long = chat.run(pd.DataFrame({"messages": [messages], "temperature": [0.0], "max_completion_tokens": [1]}))
    choice = long["choices"][0][0]
    assert long["usage"][0]["completion_tokens"] == 1 and choice["message"]["content"]
    assert choice["finish_reason"] == "length"
    longer = chat.run(pd.DataFrame({"messages": [messages], "temperature": [0.0], "max_completion_tokens": [12]}))
    text = longer["choices"][0][0]["message"]["content"]
    # The answer ends just before the first occurrence of a stop string (its last two characters here).
    assert len(text) >= 2, text
    stop = text[-2:]
    cut = chat.run(
        pd.DataFrame({"messages": [messages], "temperature": [0.0], "max_completion_tokens": [12], "stop": [[stop]]})
    )
    content = cut["choices"][0][0]["message"]["content"]
    assert text.startswith(content) and stop not in content and len(content) < len(text)
    assert cut["choices"][0][0]["finish_reason"] == "stop"
    several = chat.run(pd.DataFrame({"messages": [messages], "n": [3], "max_completion_tokens": [3]}))
    assert [c["index"] for c in several["choices"][0]] == [0, 1, 2]
    assert several["usage"][0]["completion_tokens"] <= 9


def test_chat_from_sql_with_string_content(chat, registry) -> None:
    con = registry.register_functions()
    row = con.execute("SELECT chat([{'role': 'user', 'content': 'Hello world'}], 0.0, 3) AS r").fetchone()[0]
    again = chat.run(
        pd.DataFrame(
            {
                "messages": [[{"role": "user", "content": "Hello world"}]],
                "temperature": [0.0],
                "max_completion_tokens": [3],
            }
        )
    )
    assert row["choices"][0]["message"]["content"] == again["choices"][0][0]["message"]["content"]
    assert row["usage"] == again["usage"][0]
    assert con.execute("SELECT typeof(chat([{'role': 'user', 'content': 'x'}], 0.0, 1).usage)").fetchone()[0] == (
        "STRUCT(completion_tokens INTEGER, prompt_tokens INTEGER, total_tokens INTEGER)"
    )


def test_chat_with_params_signature_takes_named_parameters(registry, model_dirs) -> None:
    pipe = transformers.pipeline("text-generation", model=str(model_dirs["chat-template"]))
    mv = registry.log_model(
        pipe, model_name="assistant", version_name="v1", signatures=OPENAI_CHAT_WITH_PARAMS_SIGNATURE
    )
    messages = [[{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]]
    out = mv.run(pd.DataFrame({"messages": messages}), params={"temperature": 0.0, "max_completion_tokens": 3})
    # The tokenizer's chat template builds the prompt.
    prompt_ids, _ = _greedy(model_dirs["chat-template"], "user: Hello\nassistant: ", 3)
    assert out["usage"][0]["prompt_tokens"] == len(prompt_ids)
    con = registry.register_functions()
    sql = con.execute(
        "SELECT assistant([{'role': 'user', 'content': [{'type': 'text', 'text': 'Hello'}]}], "
        "temperature := 0.0, max_completion_tokens := 3)"
    ).fetchone()[0]
    assert sql["choices"][0]["message"]["content"] == out["choices"][0][0]["message"]["content"]
    with pytest.raises(ValueError, match="Unknown parameter"):
        mv.run(pd.DataFrame({"messages": messages}), params={"max_tokens": 3})


def test_string_content_signature(registry, model_dirs) -> None:
    pipe = transformers.pipeline("text-generation", model=str(model_dirs["text-generation"]))
    mv = registry.log_model(pipe, model_name="plain_chat", signatures=OPENAI_CHAT_SIGNATURE_WITH_CONTENT_FORMAT_STRING)
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hello world"}]}]
    text = [{"role": "user", "content": "Hello world"}]
    a = mv.run(pd.DataFrame({"messages": [parts], "temperature": [0.0], "max_completion_tokens": [3]}))
    b = mv.run(pd.DataFrame({"messages": [text], "temperature": [0.0], "max_completion_tokens": [3]}))
    assert a["choices"][0][0]["message"] == b["choices"][0][0]["message"]
    with pytest.raises(ValueError, match="column 'messages'"):
        mv.run(pd.DataFrame({"messages": [[{"content": "no role"}]]}))


def test_other_pipeline_with_user_signature(registry, model_dirs) -> None:
    """audio-classification is not a seed task: a signature maps its input and output by name."""
    pipe = transformers.pipeline("audio-classification", model=str(model_dirs["audio-classification"]))
    signature = ModelSignature(
        inputs=[FeatureSpec("audio", DataType.FLOAT, shape=(-1,))], outputs=[FeatureSpec("labels", DataType.STRING)]
    )
    with pytest.raises(NotImplementedError, match="Cannot auto infer"):
        registry.log_model(pipe, model_name="sounds")
    mv = registry.log_model(pipe, model_name="sounds", version_name="v1", signatures={"__call__": signature})
    waves = [np.sin(np.linspace(0, 100, 1600)).astype(np.float32), np.zeros(3200, dtype=np.float32)]
    out = mv.run(pd.DataFrame({"audio": [w.tolist() for w in waves]}))
    expected = [json.loads(json.dumps(r)) for r in pipe(waves)]
    got = [json.loads(v) for v in out["labels"]]
    for g, e in zip(got, expected, strict=True):
        assert [x["label"] for x in g] == [x["label"] for x in e]
        assert [x["score"] for x in g] == pytest.approx([x["score"] for x in e], rel=1e-4)
    con = registry.register_functions()
    con.execute(
        "CREATE TABLE clips AS SELECT [0.0, 0.5, 1.0, 0.5]::FLOAT[] "
        "|| list_transform(range(1600), lambda i: 0.0::FLOAT) AS audio"
    )
    assert json.loads(con.execute("SELECT sounds(audio) FROM clips").fetchone()[0])[0]["label"] in {"speech", "music"}


def test_answers_stop_at_the_models_context(chat, registry) -> None:
    """Without max_completion_tokens the answer is capped by the model's context (256 positions here)."""
    out = chat.run(pd.DataFrame({"messages": [[{"role": "user", "content": "Hello world"}]], "temperature": [0.0]}))
    usage = out["usage"][0]
    # The tiny model never emits its end token for this prompt, so it runs to the end of its context.
    assert usage["total_tokens"] == 256
    assert out["choices"][0][0]["finish_reason"] == "length"
    too_long = [{"role": "user", "content": "hello " * 300}]
    with pytest.raises(
        ValueError,
        match=r"column 'messages', row 1: the prompt has (at least )?\d+ tokens; the model reads at most 256",
    ):
        chat.run(pd.DataFrame({"messages": [too_long]}))


SCHEMA = {
    "type": "object",
    "properties": {"mood": {"enum": ["good", "bad"]}, "score": {"enum": [1, 2, 3]}},
    "required": ["mood", "score"],
    "additionalProperties": False,
}


def test_response_format_holds_every_answer_to_the_schema_from_mv_run_and_sql(registry, model_dirs) -> None:
    pipe = transformers.pipeline("text-generation", model=str(model_dirs["chat-template"]))
    mv = registry.log_model(pipe, model_name="assistant", signatures=OPENAI_CHAT_WITH_PARAMS_SIGNATURE)
    messages = [[{"role": "user", "content": [{"type": "text", "text": f"Hello {i}"}]}] for i in range(6)]
    schema_format = {"type": "json_schema", "json_schema": {"name": "mood", "schema": json.dumps(SCHEMA)}}
    greedy = {"temperature": 0.0, "max_completion_tokens": 40, "response_format": schema_format}
    out = mv.run(pd.DataFrame({"messages": messages}), params=greedy)
    answers = [json.loads(c[0]["message"]["content"]) for c in out["choices"]]
    assert all(set(a) == {"mood", "score"} and a["mood"] in ("good", "bad") and a["score"] in (1, 2, 3)
               for a in answers), answers  # fmt: skip
    # Sampled answers are held to it too.
    sampled = mv.run(pd.DataFrame({"messages": messages}), params={**greedy, "temperature": 1.0})
    assert all(json.loads(c[0]["message"]["content"])["mood"] in ("good", "bad") for c in sampled["choices"])
    con = registry.register_functions()
    sql = con.execute(
        "SELECT assistant([{'role': 'user', 'content': [{'type': 'text', 'text': 'Hello 0'}]}], temperature := 0.0, "
        "max_completion_tokens := 40, response_format := {'type': 'json_schema', 'json_schema': {'name': 'mood', "
        "'schema': ?}}).choices[1].message.content",
        [json.dumps(SCHEMA)],
    ).fetchone()[0]
    assert json.loads(sql) == answers[0]
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": '{"type": "object", "properties": {"a": 1}}'}}
    with pytest.raises(
        ValueError, match=r"Model assistant version \w+, function __CALL__, column 'response_format', row 1: the"
    ):
        mv.run(pd.DataFrame({"messages": messages[:1]}), params={"temperature": 0.0, "response_format": bad})


@pytest.mark.parametrize("stop", [(), ("in",), ("\n", "ab")])
def test_streamed_text_only_grows_and_ends_as_the_finished_answer(model_dirs, stop: tuple[str, ...]) -> None:
    from duckreg.tasks.openai_chat import AnswerText, finish_text

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dirs["qwen2-chat"]))
    rng = np.random.default_rng(7)
    for _ in range(20):
        # Random tokens: split multi-byte characters, spaces, newlines and stop words all turn up.
        ids = rng.integers(0, len(tokenizer) - 10, size=40).tolist()
        heard: list[str] = []
        following = AnswerText(tokenizer, stop, lambda choice, text, heard=heard: heard.append(text))
        if rng.random() < 0.3:  # an answer that ends before its last tokens
            ids[int(rng.integers(5, 40))] = tokenizer.eos_token_id
        start = 0
        while start < len(ids):  # vLLM hands over several tokens at a time, transformers one
            size = int(rng.integers(1, 4))
            following.add(0, ids[start : start + size])
            start += size
        final = finish_text(tokenizer, ids, stop, 40)[0]
        assert all(final.startswith(text) for text in heard), (heard, final)
        assert all(len(a) <= len(b) for a, b in itertools.pairwise(heard))
        assert not any(word in text for word in stop for text in heard)
