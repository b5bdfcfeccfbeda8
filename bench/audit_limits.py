"""Oversized inputs, one per task and input class, and how long duckreg takes to answer or refuse each.

Every case feeds one tiny local model (``tests/tiny_models.py``) one input far beyond what it reads: a
megabyte of text where a model reads 512 tokens, a 40,000 x 40,000 picture, an hour of audio, a chat history
of thousands of turns. Each case runs in its own process (a case that allocated without bound would only end
its own run) with a time limit, its model loaded before the clock starts, through ``mv.run`` under
``on_error="raise"``, and prints the outcome: the error duckreg gave, or that it answered (a pipeline that
truncates, as the reference one does, or reads in chunks).

    .venv/bin/python bench/audit_limits.py            # every case
    .venv/bin/python bench/audit_limits.py --case qa_question tqa_cell
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_description

TESTS = Path(__file__).resolve().parent.parent / "tests"
MEGABYTE_TEXT = "expr = ('the cat sat on the mat and ate an apple ' * 24000)[:1_000_000]"

# name -> (model folder builder, pipeline task, how it is logged, code that sets ``frame`` and ``params``)
CASES: dict[str, tuple[str, str, dict | None, str]] = {
    "text_classification_text": ("bert_text_classification", "text-classification", None,
                                 f"{MEGABYTE_TEXT}; frame = pd.DataFrame({{'text': [expr]}})"),
    "text_classification_pair": ("bert_text_classification", "text-classification", None,
                                 f"{MEGABYTE_TEXT}; frame = pd.DataFrame({{'text': ['fine'], 'text_pair': [expr]}})"),
    "token_classification_text": ("bert_token_classification", "token-classification", None,
                                  f"{MEGABYTE_TEXT}; frame = pd.DataFrame({{'inputs': [expr]}})"),
    "fill_mask_text": ("bert_fill_mask", "fill-mask", None,
                       f"{MEGABYTE_TEXT}; frame = pd.DataFrame({{'inputs': [expr + ' [MASK].']}})"),
    "feature_extraction_text": ("bert_feature_extraction", "feature-extraction", None,
                                f"{MEGABYTE_TEXT}; frame = pd.DataFrame({{'inputs': [expr]}})"),
    "zero_shot_sequence": ("bert_zero_shot", "zero-shot-classification", None,
                           f"{MEGABYTE_TEXT}; frame = pd.DataFrame({{'sequences': [expr], "
                           "'candidate_labels': [['cats', 'dogs']]})"),
    "zero_shot_label": ("bert_zero_shot", "zero-shot-classification", None,
                        f"{MEGABYTE_TEXT}; frame = pd.DataFrame({{'sequences': ['a cat'], "
                        "'candidate_labels': [['cats', expr]]})"),
    "zero_shot_many_labels": ("bert_zero_shot", "zero-shot-classification", None,
                              "frame = pd.DataFrame({'sequences': ['a cat'], "
                              "'candidate_labels': [[f'label {i}' for i in range(100_000)]]})"),
    "qa_question": ("bert_question_answering", "question-answering", None,
                    f"{MEGABYTE_TEXT}; frame = pd.DataFrame({{'question': [expr], 'context': ['Bob ate.']}})"),
    "qa_context": ("bert_question_answering", "question-answering", None,
                   f"{MEGABYTE_TEXT}; frame = pd.DataFrame({{'question': ['Who ate?'], 'context': [expr]}})"),
    "tqa_question": ("tapas_table_qa", "table-question-answering", None,
                     f"{MEGABYTE_TEXT}; frame = pd.DataFrame({{'query': [expr], "
                     "'table': [json.dumps({'a': ['1', '2']})]})"),
    "tqa_cell": ("tapas_table_qa", "table-question-answering", None,
                 f"{MEGABYTE_TEXT}; frame = pd.DataFrame({{'query': ['how many?'], "
                 "'table': [json.dumps({'a': [expr, '2']})]})"),
    "tqa_rows": ("tapas_table_qa", "table-question-answering", None,
                 "frame = pd.DataFrame({'query': ['how many?'], "
                 "'table': [json.dumps({'a': [str(i) for i in range(200_000)]})]})"),
    "tqa_columns": ("tapas_table_qa", "table-question-answering", None,
                    "frame = pd.DataFrame({'query': ['how many?'], "
                    "'table': [json.dumps({f'c{i}': ['1'] for i in range(50_000)})]})"),
    "summarization_text": ("bart_seq2seq", "summarization", None,
                           f"{MEGABYTE_TEXT}; frame = pd.DataFrame({{'documents': [expr]}})"),
    "translation_text": ("t5_translation", "translation_en_to_fr", None,
                         f"{MEGABYTE_TEXT}; frame = pd.DataFrame({{'inputs': [expr]}})"),
    "text_generation_prompt": ("gpt2_text_generation", "text-generation", None,
                               f"{MEGABYTE_TEXT}; frame = pd.DataFrame({{'inputs': [expr]}})"),
    "text_generation_max_new_tokens": ("gpt2_text_generation", "text-generation", None,
                                       "frame = pd.DataFrame({'inputs': ['hello']}); "
                                       "params = {'max_new_tokens': 10_000_000}"),
    "conversational_history": ("gpt2_chat", "conversational", None,
                               "frame = pd.DataFrame({'user_inputs': [['hello there my friend'] * 20_000], "
                               "'generated_responses': [['hi'] * 19_999]})"),
    "chat_message": ("gpt2_chat", "text-generation", {"signatures": "openai"},
                     f"{MEGABYTE_TEXT}; frame = pd.DataFrame({{'messages': [[{{'role': 'user', 'content': expr}}]], "
                     "'max_completion_tokens': [4]})"),
    "chat_history": ("gpt2_chat", "text-generation", {"signatures": "openai"},
                     "frame = pd.DataFrame({'messages': [[{'role': 'user', 'content': 'hello there'}] * 50_000], "
                     "'max_completion_tokens': [4]})"),
    "chat_max_completion_tokens": ("gpt2_chat", "text-generation", {"signatures": "openai"},
                                   "frame = pd.DataFrame({'messages': [[{'role': 'user', 'content': 'hi'}]], "
                                   "'max_completion_tokens': [10_000_000]})"),
    "image_dimensions": ("vit_image_classification", "image-classification", None,
                         "frame = pd.DataFrame({'images': [tiny_models.decompression_bomb_png(40_000, 40_000)]})"),
    "image_text_dimensions": ("llava_chat", "image-text-to-text", None,
                              "bomb = tiny_models.decompression_bomb_png(40_000, 40_000); "
                              "url = 'data:image/png;base64,' + base64.b64encode(bomb).decode(); "
                              "frame = pd.DataFrame({'messages': [[{'role': 'user', 'content': ["
                              "{'type': 'text', 'text': 'what?'}, "
                              "{'type': 'image_url', 'image_url': {'url': url}}]}]]}); "
                              "params = {'max_completion_tokens': 2}"),
    "speech_recognition_hour": ("wav2vec2_ctc", "automatic-speech-recognition", None,
                                "frame = pd.DataFrame({'audio': [tiny_models.silent_wav(3600)]})"),
    "speech_recognition_hour_chunked": ("wav2vec2_ctc", "automatic-speech-recognition", {"chunk_length_s": 10},
                                        "frame = pd.DataFrame({'audio': [tiny_models.silent_wav(3600)]})"),
}  # fmt: skip

CHILD = r"""
import base64, json, sys, time
sys.path.insert(0, {tests!r})
import pandas as pd, transformers
import tiny_models
transformers.utils.logging.set_verbosity_error()
import duckreg

params = None
{setup}
registry = duckreg.Registry({db!r})
mv = registry.get_model({name!r}).version("v1")
mv._handle().shared_model()  # loaded first: the time below is the input's alone
start = time.perf_counter()
try:
    out = mv.run(frame, params=params)
    outcome = "answered: " + json.dumps(out.iloc[0].to_dict(), default=str)[:160]
except Exception as exc:
    outcome = f"refused ({{type(exc).__name__}}): {{str(exc)[:400]}}"
print(json.dumps({{"seconds": time.perf_counter() - start, "outcome": outcome}}))
"""

LOG = r"""
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
import transformers
transformers.utils.logging.set_verbosity_error()
import tiny_models, duckreg
from duckreg.huggingface import TransformersPipeline
from duckreg.openai_signatures import OPENAI_CHAT_SIGNATURE
registry = duckreg.Registry({db!r})
for name, (builder, task, how) in {models!r}.items():
    how = dict(how or {{}})
    signatures = OPENAI_CHAT_SIGNATURE if how.pop("signatures", None) == "openai" else None
    folder = getattr(tiny_models, builder)(Path({root!r}) / builder)
    pipe = TransformersPipeline(model=str(folder), task=task, **how)
    registry.log_model(pipe, model_name=name, version_name="v1", signatures=signatures,
                       options={{"pooling": "mean"}} if task == "feature-extraction" else None)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one case may run")
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="audit-limits-"))
    db = str(root / "audit.duckdb")
    models = {case: CASES[case][:3] for case in args.case}
    logged = subprocess.run([sys.executable, "-c", LOG.format(tests=str(TESTS), db=db, models=models, root=str(root))],
                            capture_output=True, text=True, check=False)  # fmt: skip
    if logged.returncode != 0:
        sys.exit(f"logging the models failed:\n{logged.stderr[-3000:]}")
    print("| case | seconds | outcome |\n|---|---|---|")
    for case in args.case:
        code = CHILD.format(tests=str(TESTS), setup=CASES[case][3], db=db, name=case)
        start = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  timeout=args.timeout, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            print(f"| {case} | >{args.timeout:.0f} | still running, killed |", flush=True)
            continue
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
            print(f"| {case} | {time.perf_counter() - start:.1f} (process) | crashed: {tail[0][:300]} |", flush=True)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        outcome = result["outcome"].replace("|", "/").replace("\n", " ")
        print(f"| {case} | {result['seconds']:.2f} | {outcome} |", flush=True)


if __name__ == "__main__":
    main()
