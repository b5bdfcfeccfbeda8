"""Every script in ``sql/`` runs with ``duckreg run`` against a registry shaped like the quickstart's.

The registry holds ``minilm`` (a tiny mean-pooled embedding model standing in for all-MiniLM-L6-v2), the
quickstart's ``docs`` and ``doc_vectors`` tables and a stage ``@lake``, as a user has after the quickstart and
``duckreg stages create lake ./lake``. A new script in ``sql/`` is run here without being listed.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import transformers

import duckreg

SCRIPTS = Path(__file__).resolve().parents[1] / "sql"
CLI = str(Path(sys.executable).with_name("duckreg"))
DOCUMENTS = ["A man is eating food.", "A man is eating a piece of bread.", "A monkey is playing drums.",
             "Someone in a gorilla costume is playing a set of drums.", "A woman is playing violin."]  # fmt: skip


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory, model_dirs) -> Path:
    tmp_path = tmp_path_factory.mktemp("sql-scripts")
    db = tmp_path / "quickstart.duckdb"
    registry = duckreg.Registry(str(db))
    embedder = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    registry.log_model(embedder, model_name="minilm", version_name="v1", options={"pooling": "mean"})
    registry.create_stage("lake", str(tmp_path / "lake"))
    con = registry.register_functions()
    con.execute("CREATE TABLE docs AS SELECT unnest(?) AS body", [DOCUMENTS])
    con.execute("CREATE TABLE doc_vectors AS SELECT body, minilm(body) AS embedding FROM docs")
    con.close()
    registry.connection.close()
    return db


LAST_HEADERS = {"semantic_index.sql": "body,score"}
"""The header of the last result a script prints, for a script that prints more than one."""


def _run(script: Path, db: Path) -> list[dict[str, str]]:
    """The rows the script's last statement prints, read back from ``--format csv``."""
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([CLI, "run", str(script), "--db", str(db), "--format", "csv"], capture_output=True,
                          text=True, env=env, timeout=300, cwd=db.parent)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = LAST_HEADERS.get(script.name)
    start = len(lines) - 1 - lines[::-1].index(header) if header else 0
    return list(csv.DictReader(io.StringIO("\n".join(lines[start:]))))


@pytest.mark.parametrize("script", sorted(SCRIPTS.glob("*.sql")), ids=lambda path: path.name)
def test_every_sql_script_runs_against_a_quickstart_registry(script: Path, quickstart: Path) -> None:
    rows = _run(script, quickstart)
    assert rows, f"{script.name} printed no rows"
    with duckreg.connect(str(quickstart), read_only=True) as con:
        if script.name == "search.sql":
            # The tiny model's similarities lie close together; each printed one is checked, and their order.
            scores = dict(con.execute(
                "SELECT body, array_cosine_similarity(minilm(body), minilm('something to eat')) FROM docs"
            ).fetchall())  # fmt: skip
            printed = [float(row["similarity"]) for row in rows]
            assert len(rows) == 3 and printed == sorted(printed, reverse=True)
            assert all(abs(scores[row["body"]] - float(row["similarity"])) < 2e-3 for row in rows)
            assert min(printed) >= max(v for b, v in scores.items() if b not in {r["body"] for r in rows}) - 2e-3
        elif script.name == "ask.sql":
            assert sorted(row["question"] for row in rows) == ["What is the man eating?", "Who is playing music?"]
            assert {row["dimensions"] for row in rows} == {str(con.execute("SELECT len(minilm('x'))").fetchone()[0])}
            assert {row["body"] for row in rows} <= set(DOCUMENTS)
        elif script.name == "batch.sql":
            ((row,),) = [rows]
            assert (row["status"], row["rows"], row["rows_failed"]) == ("DONE", str(len(DOCUMENTS)), "0")
            written = pq.read_table(quickstart.parent / "lake" / "doc_embeddings").to_pandas()
            assert sorted(written["inputs"]) == sorted(DOCUMENTS) and written["_error"].isna().all()
            assert (quickstart.parent / "lake" / "doc_embeddings" / "_SUCCESS").exists()
        elif script.name == "semantic_index.sql":
            scores = dict(con.execute(
                "SELECT body, array_cosine_similarity(minilm(body), minilm('something to eat')) FROM docs"
            ).fetchall())  # fmt: skip
            ranked = sorted(scores, key=lambda body: -scores[body])
            assert [row["body"] for row in rows] == ranked[:3]
            assert all(abs(scores[row["body"]] - float(row["score"])) < 2e-3 for row in rows)
        else:
            pytest.fail(f"{script.name} has no expectations here: say what it must print")
    if script.name == "batch.sql":
        assert _run(script, quickstart)[0]["status"] == "DONE"  # mode := 'overwrite': it runs again
    if script.name == "semantic_index.sql":
        assert _run(script, quickstart) == rows  # if_exists := 'refresh': it runs again, embedding nothing new
