"""Signatures that make a text-generation model answer OpenAI chat-completion requests.

Log a text-generation pipeline with ``signatures=OPENAI_CHAT_SIGNATURE`` (each constant is
``{"__call__": signature}``, as in Snowflake) and every row becomes one request: ``messages``
(role + content) plus the usual controls, answered with an OpenAI ``chat.completion`` object. The
``_WITH_PARAMS`` variants take the controls as runtime parameters instead of columns.
"""

from __future__ import annotations

from duckreg.model_signature import DataType, FeatureGroupSpec, FeatureSpec, ModelSignature, ParamGroupSpec, ParamSpec

S = DataType.STRING

_CONTENT_PARTS = FeatureGroupSpec(
    "content",
    [
        FeatureSpec("type", S),
        FeatureSpec("text", S),
        FeatureGroupSpec("image_url", [FeatureSpec("url", S), FeatureSpec("detail", S)]),
        FeatureGroupSpec("video_url", [FeatureSpec("url", S)]),
        FeatureGroupSpec("input_audio", [FeatureSpec("data", S), FeatureSpec("format", S)]),
    ],
    shape=(-1,),
)


def _messages(content: FeatureSpec | FeatureGroupSpec) -> FeatureGroupSpec:
    return FeatureGroupSpec(
        "messages", [content, FeatureSpec("name", S), FeatureSpec("role", S), FeatureSpec("title", S)], shape=(-1,)
    )


_CONTROLS = [
    FeatureSpec("temperature", DataType.DOUBLE),
    FeatureSpec("max_completion_tokens", DataType.INT64),
    FeatureSpec("stop", S, shape=(-1,)),
    FeatureSpec("n", DataType.INT32),
    FeatureSpec("stream", DataType.BOOL),
    FeatureSpec("top_p", DataType.DOUBLE),
    FeatureSpec("frequency_penalty", DataType.DOUBLE),
    FeatureSpec("presence_penalty", DataType.DOUBLE),
    # Accepted as in the OpenAI API; transformers generation cannot hold an answer to a schema, so it is
    # ignored with a warning. The schema itself is JSON text.
    FeatureGroupSpec(
        "response_format",
        [
            FeatureSpec("type", S),
            FeatureGroupSpec(
                "json_schema",
                [
                    FeatureSpec("name", S),
                    FeatureSpec("description", S),
                    FeatureSpec("schema", S),
                    FeatureSpec("strict", DataType.BOOL),
                ],
            ),
        ],
    ),
]

_PARAMS = [
    ParamSpec("temperature", DataType.DOUBLE, 1.0),
    ParamSpec("max_completion_tokens", DataType.INT64, 250),
    ParamSpec("stop", S, [], shape=(-1,)),
    ParamSpec("n", DataType.INT32, 1),
    ParamSpec("stream", DataType.BOOL, False),
    ParamSpec("top_p", DataType.DOUBLE, 1.0),
    ParamSpec("frequency_penalty", DataType.DOUBLE, 0.0),
    ParamSpec("presence_penalty", DataType.DOUBLE, 0.0),
    ParamGroupSpec(
        "response_format",
        [
            ParamSpec("type", S, "json_schema"),
            ParamGroupSpec(
                "json_schema",
                [
                    ParamSpec("name", S, ""),
                    ParamSpec("description", S, None),
                    ParamSpec("schema", S, None),
                    ParamSpec("strict", DataType.BOOL, None),
                ],
            ),
        ],
    ),
]

_OUTPUTS = [
    FeatureSpec("id", S),
    FeatureSpec("object", S),
    # Seconds since the epoch; DOUBLE rather than FLOAT, which would round it to 128 s steps.
    FeatureSpec("created", DataType.DOUBLE),
    FeatureSpec("model", S),
    FeatureGroupSpec(
        "choices",
        [
            FeatureSpec("index", DataType.INT32),
            FeatureGroupSpec("message", [FeatureSpec("content", S), FeatureSpec("name", S), FeatureSpec("role", S)]),
            FeatureSpec("logprobs", S),
            FeatureSpec("finish_reason", S),
        ],
        shape=(-1,),
    ),
    FeatureGroupSpec(
        "usage",
        [
            FeatureSpec("completion_tokens", DataType.INT32),
            FeatureSpec("prompt_tokens", DataType.INT32),
            FeatureSpec("total_tokens", DataType.INT32),
        ],
    ),
]


def _signatures(content: FeatureSpec | FeatureGroupSpec, *, with_params: bool) -> dict[str, ModelSignature]:
    """``{"__call__": signature}``, as Snowflake's constants are, to pass as ``signatures=``."""
    if with_params:
        return {"__call__": ModelSignature(inputs=[_messages(content)], outputs=_OUTPUTS, params=_PARAMS)}
    return {"__call__": ModelSignature(inputs=[_messages(content), *_CONTROLS], outputs=_OUTPUTS)}


# Content is a list of parts ({"type": "text", "text": ...}); a plain string is accepted too.
OPENAI_CHAT_SIGNATURE = _signatures(_CONTENT_PARTS, with_params=False)
# Content is a string.
OPENAI_CHAT_SIGNATURE_WITH_CONTENT_FORMAT_STRING = _signatures(FeatureSpec("content", S), with_params=False)
OPENAI_CHAT_WITH_PARAMS_SIGNATURE = _signatures(_CONTENT_PARTS, with_params=True)
OPENAI_CHAT_WITH_PARAMS_SIGNATURE_WITH_CONTENT_FORMAT_STRING = _signatures(FeatureSpec("content", S), with_params=True)

__all__ = [
    "OPENAI_CHAT_SIGNATURE",
    "OPENAI_CHAT_SIGNATURE_WITH_CONTENT_FORMAT_STRING",
    "OPENAI_CHAT_WITH_PARAMS_SIGNATURE",
    "OPENAI_CHAT_WITH_PARAMS_SIGNATURE_WITH_CONTENT_FORMAT_STRING",
]
