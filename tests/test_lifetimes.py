"""Model functions stay valid while any connection of a database instance is open, whoever registered them.

Every pattern runs in its own child process (``forked.py``): a segfault fails that pattern's test
instead of killing the suite. Each child works on its own copy of a registry holding one
text-classification model ``clf``; ``check(con)`` asserts the answer a fresh process computes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import tiny_models
import transformers
from conftest import logged_database

import duckreg

pytestmark = pytest.mark.process


FORKED = Path(__file__).with_name("forked.py")
TESTS = Path(__file__).parent

SETUP = """
import gc, os, shutil, sys, tempfile, threading
import duckdb, pandas as pd, torch, transformers
import duckreg, duckreg.tasks
from duckreg import Registry
from transformers import pipeline, BertForSequenceClassification, BertTokenizerFast  # the slow lazy imports, once
transformers.utils.logging.set_verbosity_error()
"""

PRELUDE = """
work = tempfile.mkdtemp(prefix="lifetime-")
db = os.path.join(work, "shop.duckdb")
shutil.copy(TEMPLATE_DB, db)
shutil.copytree(TEMPLATE_DB + ".artifacts", os.path.join(work, "template.duckdb.artifacts"))  # travels with it

def check(con, name="clf", expected=None):
    got = con.execute(f"SELECT {name}('good movie')").fetchone()[0]
    assert got == (expected or EXPECTED), (got, expected or EXPECTED)
"""

CASES = {
    "second connection closed": """
c1 = duckreg.connect(db)
c2 = duckreg.connect(db)
c2.close()
check(c1)
""",
    "helper connection closed": """
def helper():
    c = duckreg.connect(db)
    check(c)
    c.close()
con = duckreg.connect(db)
helper()
check(con)
helper()
check(con)
""",
    "with block": """
con = duckreg.connect(db)
with duckreg.connect(db) as c:
    check(c)
check(con)
""",
    "registry connection closed": """
con = duckreg.connect(db)
reg = Registry(db)
reg.register_functions()
reg.connection.close()
check(con)
""",
    "registered cursor closed": """
registry = Registry(db)
con = registry.register_functions()
cursor = con.cursor()
registry.register_functions(cursor)
check(cursor)
cursor.close()
check(con)
""",
    "cursor closed then another cursor": """
registry = Registry(db)
con = registry.connection
cur1 = con.cursor()
registry.register_functions(cur1)
check(cur1)
cur1.close()
gc.collect()
cur2 = con.cursor()
registry.register_functions(cur2)
check(cur2)
""",
    "other connection logs a default and closes": """
c1 = duckreg.connect(db)
c2 = duckreg.connect(db)
reg2 = Registry(c2, artifact_location=os.path.join(work, "artifacts"))
pipe = transformers.pipeline("text-classification", model=OTHER_MODEL)
mv2 = reg2.log_model(pipe, model_name="clf", version_name="v2")
reg2.get_model("clf").default = "v2"
v2 = mv2.run(pd.DataFrame({"text": ["good movie"]})).iloc[0]
expected = {"label": v2["label"], "score": v2["score"]}
assert expected != EXPECTED
c2.close()
check(c1, expected=expected)
check(c1, "clf__v2", expected)
check(c1, "clf__v1")
""",
    "threads connect, query and close": """
main = duckreg.connect(db)
errors = []
def worker():
    try:
        c = duckreg.connect(db)
        check(c)
        c.close()
    except BaseException as exc:
        errors.append(exc)
for _ in range(10):
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
assert not errors, errors
check(main)
""",
    "cli session in process": """
from duckreg.shell import Session
con = duckreg.connect(db)
session = Session(db)
assert session.execute("SELECT clf('good movie')").fetchall()[0][0] == EXPECTED
session.close()
check(con)
""",
    "first connection garbage collected": """
con = duckreg.connect(db)
check(con)
con = duckreg.connect(db)
gc.collect()
check(con)
con.close()
con = None
gc.collect()
con = duckreg.connect(db)
check(con)
""",
    "connect while other threads query": """
main = duckreg.connect(db)
main.execute("CREATE TABLE texts AS SELECT 'good movie number ' || i AS t FROM range(3000) r(i)")
reference = main.execute("SELECT clf(t) FROM texts ORDER BY t").fetchall()
errors, stop = [], threading.Event()
def query():
    try:
        cur = main.cursor()
        while not stop.is_set():
            assert cur.execute("SELECT clf(t) FROM texts ORDER BY t").fetchall() == reference
    except BaseException as exc:
        errors.append(exc)
threads = [threading.Thread(target=query) for _ in range(3)]
for t in threads: t.start()
for _ in range(10):
    c = duckreg.connect(db)
    check(c)
stop.set()
for t in threads: t.join()
assert not errors, errors
""",
    "eight threads each with its own connection": """
errors, results = [], []
def worker():
    try:
        c = duckreg.connect(db)
        for _ in range(5):
            results.append(c.execute("SELECT clf('good movie')").fetchone()[0])
    except BaseException as exc:
        errors.append(exc)
threads = [threading.Thread(target=worker) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
assert not errors, errors
assert results == [EXPECTED] * 40
""",
    "writes after a bound connection closed": """
con = duckreg.connect(db)
con.close()
registry = Registry(db, artifact_location=os.path.join(work, "artifacts"))
pipe = transformers.pipeline("text-classification", model=OTHER_MODEL)
registry.log_model(pipe, model_name="clf", version_name="v2")
registry.get_model("clf").delete_version("v2")
assert [v.version_name for v in registry.get_model("clf").versions()] == ["v1"]
check(registry.register_functions())
""",
    "cursor without macros": """
con = duckreg.connect(db)
cursor = con.cursor()
check(cursor)
for bad in ("clf('good movie', 'pair')", "clf('good movie', foo := 'bad film')"):
    try:
        cursor.execute(f"SELECT {bad}").fetchall()
    except duckdb.Error as exc:
        assert "takes 1 argument(s) (text) here, got 2" in str(exc), exc
        assert "register_functions" in str(exc), exc
    else:
        raise AssertionError(bad + " was accepted")
""",
    "deleted model on another thread's connection": """
registry = Registry(db, artifact_location=os.path.join(work, "artifacts"))
registry.log_model(transformers.pipeline("text-classification", model=OTHER_MODEL), model_name="fresh")
con = registry.register_functions()
other = {}
def open_other():
    other["con"] = duckreg.connect(db)
t = threading.Thread(target=open_other); t.start(); t.join()
other["con"].execute("SELECT fresh('good movie')").fetchall()
registry.delete_model("fresh")
for connection, error in ((other["con"], "model fresh was deleted"), (con, "does not exist")):
    try:
        connection.execute("SELECT fresh('good movie')").fetchall()
    except duckdb.Error as exc:
        assert error in str(exc), exc
    else:
        raise AssertionError("a deleted model answered")
check(con)
check(other["con"])
""",
    "another thread's connection after the default changed its signature": """
registry = Registry(db, artifact_location=os.path.join(work, "artifacts"))
con = registry.register_functions()
other = {}
t = threading.Thread(target=lambda: other.update(con=duckreg.connect(db))); t.start(); t.join()
check(other["con"])
pipe = transformers.pipeline("text-classification", model=OTHER_MODEL, top_k=2)
registry.log_model(pipe, model_name="clf", version_name="v2")
registry.get_model("clf").default = "v2"
assert con.execute("SELECT typeof(clf('good movie'))").fetchone()[0] == "JSON"
try:
    other["con"].execute("SELECT clf('good movie')").fetchall()
except duckdb.Error as exc:
    assert "now has another signature than when this connection was bound to it" in str(exc), exc
else:
    raise AssertionError("a stale macro answered")
check(other["con"], "clf__v1")
Registry(other["con"]).register_functions(other["con"])
assert other["con"].execute("SELECT typeof(clf('good movie'))").fetchone()[0] == "JSON"
""",
    "reopen after every connection closed": """
for _ in range(3):
    con = duckreg.connect(db)
    check(con)
    cur = con.cursor()
    duckreg.Registry(con).register_functions(cur)
    check(cur)
    con.close()
""",
    "in-memory databases stay apart": """
a = duckreg.connect()
b = duckreg.connect()
ra, rb = Registry(a), Registry(b)
ra.log_model(transformers.pipeline("text-classification", model=MODEL), model_name="clf", version_name="v1")
rb.log_model(transformers.pipeline("text-classification", model=OTHER_MODEL), model_name="clf", version_name="v1")
check(a)
assert b.execute("SELECT clf('good movie')").fetchone()[0] != EXPECTED
a.close()
assert b.execute("SELECT clf('good movie')").fetchone()[0] != EXPECTED
""",
}


@pytest.fixture(scope="module")
def lifetime_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("lifetimes")
    model = tiny_models.bert_text_classification(root / "model", seed=0)
    other = tiny_models.bert_text_classification(root / "other", seed=21)
    db = root / "template.duckdb"
    registry = duckreg.Registry(str(db))
    mv = registry.log_model(transformers.pipeline("text-classification", model=str(model)), model_name="clf",
                            version_name="v1")  # fmt: skip
    row = mv.run(pd.DataFrame({"text": ["good movie"]})).iloc[0]
    registry.connection.close()
    constants = (
        f"TEMPLATE_DB = {str(db)!r}\nMODEL = {str(model)!r}\nOTHER_MODEL = {str(other)!r}\n"
        f"EXPECTED = {{'label': {row['label']!r}, 'score': {float(row['score'])!r}}}\n"
    )
    return run_forked(CASES, prelude=constants + PRELUDE, setup=SETUP)


def run_forked(cases: dict[str, str], *, prelude: str, setup: str, timeout: float = 120) -> dict:
    """Each case in its own forked child of one interpreter (see ``forked.py``): name -> exit and output."""
    request = json.dumps({"setup": setup, "prelude": prelude, "cases": cases, "timeout": timeout})
    done = subprocess.run(
        [sys.executable, str(FORKED)],
        input=request,
        capture_output=True,
        text=True,
        cwd=TESTS,
        timeout=timeout * len(cases) + 60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("pattern", list(CASES))
def test_pattern_runs_and_answers_correctly(lifetime_results: dict, pattern: str) -> None:
    result = lifetime_results[pattern]
    assert result["exit"] == 0, f"exit {result['exit']}\n{result['output']}"


def test_forked_runner_reports_a_segfault_as_a_signal() -> None:
    results = run_forked({"crash": "import ctypes; ctypes.string_at(0)"}, prelude="", setup="")
    assert results["crash"]["exit"] == -11


def test_memory_stays_flat_over_a_thousand_connections(tmp_path: Path, model_dirs) -> None:
    db = logged_database(tmp_path / "shop.duckdb", model_dirs["text-classification"])
    script = f"""
import gc, resource, duckreg
db = {str(db)!r}
def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
keep = duckreg.connect(db)
keep.execute("SELECT clf('warm up')").fetchall()
samples = {{}}
# A new in-memory database builds its catalog (about twice a file connection's time): fewer of those.
for kind, open_one, cycles in (("file", lambda: duckreg.connect(db), 1000), ("memory", lambda: duckreg.connect(), 500)):
    for i in range(1, cycles + 1):
        con = open_one()
        con.execute("SELECT clf('good movie')" if kind == "file" else "SELECT 1").fetchall()
        con.close()
        if i in (cycles // 5, cycles):
            gc.collect()
            samples[kind, i] = rss_mib()
print(*(samples[k] for k in sorted(samples)))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    file_200, file_1000, memory_100, memory_500 = map(float, done.stdout.split())
    assert file_1000 - file_200 < 25, f"RSS grew from {file_200:.0f} to {file_1000:.0f} MiB over 800 connections"
    assert memory_500 - memory_100 < 25, f"RSS grew from {memory_100:.0f} to {memory_500:.0f} MiB over 400 databases"
