"""A process killed (SIGKILL) while it writes the registry leaves a registry that works.

Each trial forks a writer that dies at a named point (``duckreg.faults``) or after a random delay, then
reopens the database and checks: (a) the catalog and the artifact folders agree and every listed
version loads and runs, from Python and SQL; (b) a retry of the same write succeeds; (c) after that
write no leftover (staging or deleting folder, orphaned version folder) remains.
"""

from __future__ import annotations

import random

import pytest
import tiny_models
from test_lifetimes import run_forked

from duckreg import faults

pytestmark = pytest.mark.process


SETUP = """
import json, os, random, signal, tempfile, time
from pathlib import Path
import pandas as pd, transformers
import duckreg, duckreg.tasks
from duckreg import Registry, faults
from transformers import pipeline, BertForSequenceClassification, BertTokenizerFast
transformers.utils.logging.set_verbosity_error()
"""

PRELUDE = """
work = Path(tempfile.mkdtemp(prefix="kill-"))
db = str(work / "shop.duckdb")
root = work / "artifacts"

def pipe():
    return transformers.pipeline("text-classification", model=MODEL)

def prepare():
    registry = Registry(db, artifact_location=root)
    registry.log_model(pipe(), model_name="clf", version_name="v1")
    registry.log_model(pipe(), model_name="clf", version_name="v2")
    registry.log_model(pipe(), model_name="fresh", version_name="v1")
    registry.connection.close()

OPERATIONS = {
    "log_version": lambda r: r.log_model(pipe(), model_name="clf", version_name="v3"),
    "log_model": lambda r: r.log_model(pipe(), model_name="newcomer", version_name="v1"),
    "delete_version": lambda r: r.get_model("clf").delete_version("v2"),
    "delete_model": lambda r: r.delete_model("fresh"),
    "set_engine": lambda r: r.get_model("clf").version("v1").set_engine("onnxruntime"),
}

def retry(registry, operation):
    # A delete whose commit happened before the kill has nothing left to do; then the name is free again.
    names = {m.name for m in registry.models()}
    if operation == "set_engine":
        OPERATIONS[operation](registry)  # whether or not the killed change committed, it can be made again
        assert registry.get_model("clf").version("v1")._handle().manifest.options == {"engine": "onnxruntime"}
        return
    if operation == "delete_version":
        if "v2" in [v.version_name for v in registry.get_model("clf").versions()]:
            OPERATIONS[operation](registry)
        registry.log_model(pipe(), model_name="clf", version_name="v2")
    elif operation == "delete_model":
        if "fresh" in names:
            OPERATIONS[operation](registry)
        registry.log_model(pipe(), model_name="fresh", version_name="v1")
    else:
        if operation == "log_version" and "v3" in [v.version_name for v in registry.get_model("clf").versions()]:
            registry.get_model("clf").delete_version("v3")
        if operation == "log_model" and "newcomer" in names:
            registry.delete_model("newcomer")
        OPERATIONS[operation](registry)

def check_consistent(registry):
    referenced = set()
    con = registry.register_functions()
    for model in registry.models():
        for mv in model.versions():
            folder = mv._handle().artifact_dir
            manifest = json.loads((folder / "manifest.json").read_text())
            for relative in manifest["files"]:
                assert (folder / "model" / relative).is_file(), (folder, relative)
            assert len(mv.run(pd.DataFrame({"text": ["good movie"]}))) == 1
            sql_name = f"{model.name}__{mv.version_name}"
            assert con.execute(f"SELECT {sql_name}('good movie').label").fetchone()[0] in ("NEGATIVE", "POSITIVE")
            referenced.add(folder.resolve())
    return referenced

def leftovers(referenced):
    found = [p.name for p in root.iterdir() if p.name.startswith(".")]
    for model_dir in root.iterdir():
        if model_dir.is_dir() and not model_dir.name.startswith("."):
            found += [str(f) for f in model_dir.iterdir() if f.resolve() not in referenced]
    return found

def trial(operation, point=None, delay=None):
    prepare()
    pid = os.fork()
    if pid == 0:
        if point:
            os.environ[faults.ENV] = point
        registry = Registry(db)
        if delay is not None:
            os.kill(os.getppid(), signal.SIGUSR1)
        OPERATIONS[operation](registry)
        os._exit(0)
    if delay is not None:
        # Start the clock once the writer is about to write, then kill it.
        signal.sigwait({signal.SIGUSR1})
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    if point:
        assert killed, f"the writer was not killed at {point}: status {status}"
    registry = Registry(db)
    before = leftovers(check_consistent(registry))
    retry(registry, operation)
    after = leftovers(check_consistent(registry))
    assert after == [], after
    registry.connection.close()
    print(json.dumps({"killed": killed, "leftovers_before_retry": len(before)}))
"""

LOG_POINTS = [p for p in faults.POINTS if p.startswith("log_model:")]
DELETE_POINTS = [p for p in faults.POINTS if p.startswith("delete:")]
ENGINE_POINTS = [p for p in faults.POINTS if p.startswith("set_engine:")]


def _cases() -> dict[str, str]:
    cases = {}
    for operation in ("log_version", "log_model"):
        for point in LOG_POINTS:
            cases[f"{operation} killed at {point}"] = f"trial({operation!r}, point={point!r})"
    for operation in ("delete_version", "delete_model"):
        for point in DELETE_POINTS:
            cases[f"{operation} killed at {point}"] = f"trial({operation!r}, point={point!r})"
    for point in ENGINE_POINTS:
        cases[f"set_engine killed at {point}"] = f"trial('set_engine', point={point!r})"
    rng = random.Random(9)
    for number in range(12):
        operation = ("log_version", "log_model", "delete_version", "delete_model")[number % 4]
        delay = round(rng.uniform(0.0, 0.25 if operation.startswith("log") else 0.03), 4)
        cases[f"{operation} killed after {delay} s"] = f"trial({operation!r}, delay={delay!r})"
    for _ in range(3):
        delay = round(rng.uniform(0.0, 0.6), 4)
        cases[f"set_engine killed after {delay} s"] = f"trial('set_engine', delay={delay!r})"
    signal_block = "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\n"
    return {name: signal_block + code for name, code in cases.items()}


CASES = _cases()


@pytest.fixture(scope="module")
def kill_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    model = tiny_models.bert_text_classification(tmp_path_factory.mktemp("kills") / "model")
    return run_forked(CASES, prelude=f"MODEL = {str(model)!r}\n" + PRELUDE, setup=SETUP)


@pytest.mark.parametrize("case", list(CASES))
def test_registry_works_after_a_killed_write(kill_results: dict, case: str) -> None:
    result = kill_results[case]
    assert result["exit"] == 0, f"exit {result['exit']}\n{result['output']}"


def test_kill_trials_cover_every_point_and_leave_leftovers_that_get_reclaimed(kill_results: dict, capsys) -> None:
    outcomes = [
        __import__("json").loads(r["output"].strip().splitlines()[-1]) for r in kill_results.values() if r["exit"] == 0
    ]
    assert len(outcomes) == len(CASES) >= 20
    killed = sum(o["killed"] for o in outcomes)
    with_leftovers = sum(o["leftovers_before_retry"] > 0 for o in outcomes)
    with capsys.disabled():
        print(
            f"\nkill trials: {len(outcomes)} ({killed} killed mid-write), {with_leftovers} left leftovers, "
            "all reclaimed by the next write"
        )
    assert killed >= len(LOG_POINTS) * 2 + len(DELETE_POINTS) * 2 + len(ENGINE_POINTS)
    assert with_leftovers > 0
