"""Threads and processes using one registry at once.

Threads run in a forked child (``forked.py``) so a crash fails the test; processes are real ones,
since DuckDB's file lock is between processes.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import transformers
from conftest import logged_database
from test_lifetimes import SETUP, run_forked

import duckreg

pytestmark = pytest.mark.process


@pytest.fixture
def logged(tmp_path: Path, model_dirs) -> Path:
    return logged_database(tmp_path / "shop.duckdb", model_dirs["text-classification"])


THREADS = """
import random
texts = [f"text number {i} is {'good' if i % 2 else 'bad'}" for i in range(40)]
con = duckreg.connect(db)
con.execute("CREATE TABLE texts AS SELECT unnest(?) AS t", [texts])
reference = {t: con.execute("SELECT clf(?)", [t]).fetchone()[0] for t in texts}
whole = con.execute("SELECT t, clf(t) FROM texts ORDER BY t").fetchall()
errors, answered = [], []

def work(connection, seed):
    rng = random.Random(seed)
    for _ in range(30):
        if rng.random() < 0.2:
            assert connection.execute("SELECT t, clf(t) FROM texts ORDER BY t").fetchall() == whole
        else:
            text = rng.choice(texts)
            assert connection.execute("SELECT clf(?)", [text]).fetchone()[0] == reference[text]
        answered.append(1)

def on_cursor(seed):
    try:
        work(con.cursor(), seed)
    except BaseException as exc:
        errors.append(exc)

def on_connection(seed):
    try:
        own = duckreg.connect(db)
        work(own, seed)
        own.close()
    except BaseException as exc:
        errors.append(exc)

con.execute("SET threads = 4")
threads = [threading.Thread(target=on_cursor, args=(i,)) for i in range(4)]
threads += [threading.Thread(target=on_connection, args=(10 + i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
assert not errors, errors
assert len(answered) == 240, len(answered)
"""


def test_eight_threads_on_cursors_and_connections_answer_as_one_thread_does(logged: Path) -> None:
    db = logged
    result = run_forked({"threads": THREADS}, prelude=f"db = {str(db)!r}\n", setup=SETUP)["threads"]
    assert result["exit"] == 0, f"exit {result['exit']}\n{result['output']}"


def _python(code: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_logging_while_another_process_queries_says_what_to_do(logged: Path, model_dirs) -> None:
    querying = _python(f"""
        import sys, duckreg
        con = duckreg.connect({str(logged)!r})
        print(con.execute("SELECT clf('good').label").fetchone()[0], flush=True)
        sys.stdin.read()
        print(con.execute("SELECT clf('good').label").fetchone()[0], flush=True)
    """)
    try:
        assert querying.stdout.readline().strip() in ("POSITIVE", "NEGATIVE")
        logging = _python(f"""
            import transformers, duckreg
            try:
                registry = duckreg.Registry({str(logged)!r})
            except duckreg.DatabaseLocked as exc:
                print(exc)
            else:
                raise SystemExit("opened a database another process writes")
        """)
        out, err = logging.communicate(timeout=120)
        assert logging.returncode == 0, err
        assert f"open for writing in process {querying.pid}" in out and "Close the database in that process" in out
        assert "Traceback" not in err
    finally:
        out, _ = querying.communicate("", timeout=120)
    assert out.strip() in ("POSITIVE", "NEGATIVE")
    # Once the querying process is gone, the writer gets in.
    registry = duckreg.Registry(str(logged))
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    registry.log_model(pipe, model_name="clf", version_name="v2")
    registry.connection.close()


def test_readers_open_a_snapshot_while_the_writer_keeps_writing(logged: Path, model_dirs, tmp_path: Path) -> None:
    registry = duckreg.Registry(str(logged))
    snapshot = registry.snapshot(tmp_path / "readers.duckdb")
    expected = registry.get_model("clf").default.run(pd.DataFrame({"text": ["good"]}))["label"].iloc[0]
    readers = [
        _python(f"""
            import duckreg
            con = duckreg.connect({str(snapshot)!r}, read_only=True)
            print(con.execute("SELECT clf('good').label").fetchone()[0])
        """)
        for _ in range(3)
    ]
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    registry.log_model(pipe, model_name="clf", version_name="v2")  # the writer goes on meanwhile
    for reader in readers:
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0, err
        assert out.strip() == expected
    registry.snapshot(snapshot)  # a new snapshot replaces the old one
    con = duckreg.connect(snapshot, read_only=True)
    assert [v.version_name for v in duckreg.Registry(con).get_model("clf").versions()] == ["v1", "v2"]
    con.close()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    registry.connection.close()
