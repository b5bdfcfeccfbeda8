"""Batch runs from SQL, jobs from the CLI, and Ctrl-C: what a SQL user sees in the shell and in scripts.

``run_batch(...)`` is a table function that runs the job and returns its summary; ``run_batch_async``
starts a job that lives as long as its process. Nothing is registered or written before the request
is checked, no process exit leaves a RUNNING job behind, and Ctrl-C stops model work within one
forward batch. Processes get real signals.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import transformers
from custom_models import Fragile, Plodder

import duckreg
from duckreg.jobs import get_job
from duckreg.model_signature import DataType, FeatureSpec, ModelSignature

CLI = str(Path(sys.executable).with_name("duckreg"))
TESTS = Path(__file__).parent


@pytest.fixture
def shop(registry, model_dirs, tmp_path) -> duckreg.Registry:
    """A registry with a classifier, a slow model (50 ms a row), a stage and two tables."""
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    registry.log_model(pipe, model_name="sentiment", version_name="v1")
    signature = ModelSignature(
        inputs=[FeatureSpec("x", DataType.INT64)], outputs=[FeatureSpec("doubled", DataType.INT64)]
    )
    registry.log_model(
        Plodder(), model_name="plodder", version_name="v1", signatures={"predict": signature},
        options={"max_batch_size": 2},
    )  # fmt: skip
    registry.create_stage("out", str(tmp_path / "out"))
    registry.connection.execute(
        "CREATE TABLE reviews AS SELECT i AS id, 'review number ' || i AS text FROM range(120) t(i)"
    )
    registry.connection.execute("CREATE TABLE numbers AS SELECT range AS x FROM range(2048)")
    return registry


def _parts(folder: Path) -> pd.DataFrame:
    return duckdb.sql(f"SELECT * FROM read_parquet('{folder}/*.parquet') ORDER BY id").df()


def test_run_batch_in_sql_runs_the_job_and_returns_its_summary(shop, tmp_path) -> None:
    con = shop.register_functions()
    result = con.execute(
        "SELECT * FROM run_batch('sentiment/v1', 'SELECT * FROM reviews', '@out/scored/', max_batch_rows := 50)"
    )
    assert [d[0] for d in result.description] == ["job_name", "status", "rows", "rows_failed", "output_location",
                                                  "files"]  # fmt: skip
    ((name, status, rows, failed, location, files),) = result.fetchall()
    assert name.startswith("BATCH_INFERENCE_") and (status, rows, failed, location) == ("DONE", 120, 0, "@out/scored/")
    assert files == [f"@out/scored/part-00000{i}.parquet" for i in range(3)]
    assert (tmp_path / "out" / "scored" / "_SUCCESS").exists()
    scored = _parts(tmp_path / "out" / "scored")
    assert len(scored) == 120 and set(scored["label"]) <= {"POSITIVE", "NEGATIVE"}
    assert get_job(shop, name).status == "DONE"
    # Named jobs and another version by alias; the default version when none is named.
    shop.get_model("sentiment").version("v1").set_alias("prod")
    ((named, *_),) = con.execute(
        "SELECT * FROM run_batch('sentiment/prod', 'SELECT * FROM reviews WHERE id < 5', '@out/named/', "
        "job_name := 'nightly')"
    ).fetchall()
    assert named == "nightly" and len(_parts(tmp_path / "out" / "named")) == 5


@pytest.mark.parametrize(
    ("call", "error"),
    [
        ("'sentiment', 'SELECT id, text AS body FROM reviews', '@out/x/'",
         r"Model sentiment version v1, function __CALL__, column 'text': .*feature text does not exist in data\. "
         r"Available columns are \['id', 'body'\]"),
        ("'sentiment', 'SELECT * FROM reviews', '@nowhere/x/'", r"Stage nowhere does not exist"),
        ("'nosuch', 'SELECT * FROM reviews', '@out/x/'", r"Unable to find model nosuch"),
        ("'sentiment/v9', 'SELECT * FROM reviews', '@out/x/'", r"v9"),
        ("'sentiment', 'SELECT * FROM missing_table', '@out/x/'", r"missing_table does not exist"),
        ("'sentiment', 'SELECT * FROM reviews', '@out/x/', mode := 'append'", r"mode 'append': use 'error' or"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("form", ["SELECT * FROM run_batch({})", "SELECT run_batch_async({})"])
def test_a_bad_request_fails_the_statement_before_any_job_or_file_exists(shop, tmp_path, form, call, error) -> None:
    con = shop.register_functions()
    with pytest.raises(duckdb.Error, match=error):
        con.execute(form.format(call)).fetchall()
    assert con.execute("SELECT count(*) FROM duckreg.jobs").fetchall() == [(0,)]
    assert not (tmp_path / "out" / "x").exists()


def test_run_batch_async_returns_at_once_and_the_job_finishes_in_the_background(shop, tmp_path) -> None:
    con = shop.register_functions()
    (job_id,) = con.execute(
        "SELECT run_batch_async('sentiment', 'SELECT * FROM reviews', '@out/bg/', max_batch_rows := 40)"
    ).fetchone()
    job = get_job(shop, job_id)  # registered before the call returned
    assert job_id.startswith("registry.duckreg.BATCH_INFERENCE_")
    assert job.wait(timeout=120) == "DONE", job.message
    assert len(_parts(tmp_path / "out" / "bg")) == 120


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=300, **kwargs)


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(TESTS), **extra}


def test_a_process_that_exits_cancels_its_async_jobs_and_leaves_none_running(shop, db_path, tmp_path) -> None:
    shop.connection.close()
    query = "SELECT run_batch_async('plodder', 'SELECT * FROM numbers', '@out/async/', job_name := 'exits')"
    done = _cli("sql", query, "--db", str(db_path), "--format", "csv", env=_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].endswith(".duckreg.exits")
    assert "stopping batch job exits" in done.stderr
    assert "nanobind" not in done.stderr and "terminate called" not in done.stderr
    shown = _cli("jobs", "show", "exits", "--db", str(db_path))
    assert shown.returncode == 0, shown.stderr
    assert "status: CANCELLED" in shown.stdout
    assert "the process that ran it exited" in shown.stdout and "run_batch_async" in shown.stdout
    assert not (tmp_path / "out" / "async" / "_SUCCESS").exists()
    listed = _cli("jobs", "--db", str(db_path), "--format", "csv")
    assert listed.returncode == 0 and "exits,CANCELLED,plodder,v1" in listed.stdout, listed.stdout
    logs = _cli("jobs", "logs", "exits", "--db", str(db_path))
    assert "starting in this process: 2048 rows" in logs.stdout and "cancelled" in logs.stdout
    assert "status: CANCELLED" in _cli("jobs", "show", "exi…", "--db", str(db_path)).stdout  # as a narrow table cuts it
    refused = _cli("jobs", "cancel", "exits", "--db", str(db_path))
    assert refused.returncode == 0 and "exits: CANCELLED" in refused.stdout  # nothing left to cancel


def test_quitting_the_shell_while_an_async_job_runs_cancels_it_cleanly(shop, db_path, tmp_path) -> None:
    shop.connection.close()
    script = (
        "SELECT run_batch_async('plodder', 'SELECT * FROM numbers', '@out/quit/', job_name := 'quitter');\n"
        ".jobs\n.quit\n"
    )
    done = subprocess.run(
        [CLI, "shell", str(db_path)], input=script, capture_output=True, text=True, timeout=300, env=_env()
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"quitter\s*│\s*(PENDING|RUNNING)", done.stdout), done.stdout
    assert "terminate called" not in done.stderr and "nanobind" not in done.stderr
    con = duckreg.connect(str(db_path), read_only=True)
    assert get_job(duckreg.Registry(con), "quitter").status == "CANCELLED"
    con.close()


def _interrupt_when_started(args: list[str], marker: Path) -> subprocess.CompletedProcess:
    """Run the CLI and send it SIGINT once the slow model is working."""
    process = subprocess.Popen(
        [CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(PLODDER_STARTED=str(marker)),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)  # a 2,048-row chunk takes 100 s: stopping means between batches
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_ctrl_c_stops_a_model_call_between_forward_batches(shop, db_path, tmp_path) -> None:
    shop.connection.close()
    marker = tmp_path / "started"
    done = _interrupt_when_started(["sql", "SELECT sum(plodder(x)) FROM numbers", "--db", str(db_path)], marker)
    assert done.returncode == 1
    assert "Interrupted" in done.stderr and "Traceback" not in done.stderr


def test_ctrl_c_cancels_a_run_batch_it_waits_for(shop, db_path, tmp_path) -> None:
    shop.connection.close()
    marker = tmp_path / "started"
    query = "SELECT * FROM run_batch('plodder', 'SELECT * FROM numbers', '@out/ctrl_c/', job_name := 'ctrl_c')"
    done = _interrupt_when_started(["sql", query, "--db", str(db_path)], marker)
    assert done.returncode == 1 and "Interrupted" in done.stderr, done.stderr
    assert not (tmp_path / "out" / "ctrl_c" / "_SUCCESS").exists()
    con = duckreg.connect(str(db_path), read_only=True)
    job = get_job(duckreg.Registry(con), "ctrl_c")
    assert job.status == "CANCELLED" and "Interrupted (Ctrl-C)" in job.message
    con.close()


def test_run_batch_in_sql_continues_past_bad_rows_with_on_error_continue(shop, tmp_path) -> None:
    signature = ModelSignature(inputs=[FeatureSpec("text", DataType.STRING)],
                               outputs=[FeatureSpec("length", DataType.INT64)])  # fmt: skip
    shop.log_model(Fragile(), model_name="fragile", version_name="v1", signatures={"predict": signature},
                   options={"max_batch_size": 8})  # fmt: skip
    shop.connection.execute(
        "CREATE TABLE notes AS SELECT i AS id, CASE WHEN i IN (3, 40) THEN 'boom' ELSE 'note ' || i END AS text "
        "FROM range(50) t(i)"
    )
    con = shop.register_functions()
    query = "SELECT * FROM notes"
    with pytest.raises(duckdb.Error, match=r"run_batch job raised FAILED: .*could not read a row \(row 4\)"):
        con.execute(f"SELECT * FROM run_batch('fragile', '{query}', '@out/raised/', job_name := 'raised')").fetchall()
    ((status, rows, failed),) = con.execute(
        f"SELECT status, rows, rows_failed FROM run_batch('fragile', '{query}', '@out/kept/', job_name := 'kept', "
        "on_error := 'continue')"
    ).fetchall()
    assert (status, rows, failed) == ("DONE", 50, 2)
    kept = _parts(tmp_path / "out" / "kept")
    assert kept["_error"].notna().tolist() == [i in (3, 40) for i in range(50)]
    assert kept.loc[kept["_error"].isna(), "length"].tolist() == [
        len(f"note {i}") for i in range(50) if i not in (3, 40)
    ]
    with pytest.raises(duckdb.Error, match=r"on_error must be 'raise' or 'continue', got 'null'"):
        con.execute(f"SELECT * FROM run_batch('fragile', '{query}', '@out/x/', on_error := 'null')").fetchall()
