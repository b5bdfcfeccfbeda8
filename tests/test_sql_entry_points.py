"""SQL everywhere: Snowflake model-call syntax, the duckreg CLI (shell, sql, run, registry
commands) and the dbt-duckdb plugin with the example project."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import transformers

import duckreg
from duckreg.shell import split_statements

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("duckreg"))


@pytest.fixture
def shop(registry, model_dirs):
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    registry.log_model(pipe, model_name="sentiment", version_name="v1")
    top2 = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]), top_k=2)
    registry.log_model(top2, model_name="sentiment", version_name="v2")
    registry.get_model("sentiment").version("v2").set_alias("latest_try")
    registry.connection.execute(
        "CREATE TABLE reviews AS SELECT * FROM (VALUES (1, 'I like you.'), (2, 'The food was bad.')) t(id, text)"
    )
    return registry


SNOWFLAKE_FORMS = [
    ("SELECT id, MODEL(sentiment, v1)!__call__(text) FROM reviews ORDER BY id",
     "SELECT id, sentiment__v1(text) FROM reviews ORDER BY id"),
    ("SELECT id, MODEL(sentiment, LAST)!__call__(text) FROM reviews ORDER BY id",
     "SELECT id, sentiment__v2(text) FROM reviews ORDER BY id"),
    ("SELECT id, MODEL(sentiment, latest_try)!__CALL__(text) FROM reviews ORDER BY id",
     "SELECT id, sentiment__v2(text) FROM reviews ORDER BY id"),
    ("SELECT id, sentiment!__call__(text) FROM reviews ORDER BY id",
     "SELECT id, sentiment(text) FROM reviews ORDER BY id"),
    ("SELECT id, sentiment!__call__(*) FROM reviews ORDER BY id",
     "SELECT id, sentiment(text) FROM reviews ORDER BY id"),
    ("SELECT id, sentiment!__call__(text):label AS label FROM reviews ORDER BY id",
     "SELECT id, sentiment(text).label AS label FROM reviews ORDER BY id"),
    ("WITH mv AS MODEL sentiment VERSION v1 SELECT id, mv!__call__(text):score FROM reviews ORDER BY id",
     "SELECT id, sentiment__v1(text).score FROM reviews ORDER BY id"),
    ("WITH r AS (SELECT * FROM reviews WHERE id = 2), mv AS MODEL sentiment VERSION v2 "
     "SELECT id, mv!__call__(text) FROM r",
     "SELECT id, sentiment__v2(text) FROM reviews WHERE id = 2"),
]  # fmt: skip


@pytest.mark.parametrize(("snowflake", "native"), SNOWFLAKE_FORMS)
def test_snowflake_forms_give_the_native_rows(shop, snowflake: str, native: str) -> None:
    con = shop.connection
    assert duckreg.sql(con, snowflake).fetchall() == duckreg.sql(con, native).fetchall()


def test_plain_sql_passes_through_and_bad_forms_fail_clearly(shop) -> None:
    con = shop.connection
    # DuckDB's 1-based list indexing, '!=' and '!' inside strings are left exactly as written.
    assert duckreg.sql(con, "SELECT [10, 20, 30][2], 1 != 2, 'wow!look(' AS s").fetchall() == [(20, True, "wow!look(")]
    for bad, message in [
        ("SELECT sentiment!predict(text) FROM reviews", "no method with name predict"),
        ("SELECT nope!__call__(text) FROM reviews", "nope"),
        ("SELECT (SELECT 1)!f(x)", "Unsupported model call syntax"),
        ("SELECT MODEL(sentiment, v1, v2)!__call__(text) FROM reviews", "MODEL\\(\\) takes a model name"),
        ("SELECT main.sentiment!__call__(text) FROM reviews", "qualified model names"),
        ("SELECT sentiment!__call__ FROM reviews", "expected !method"),
    ]:
        with pytest.raises(ValueError, match=message):
            duckreg.sql(con, bad)


def test_split_statements_keeps_lines_quotes_and_comments() -> None:
    script = "SELECT 'a;b';\n-- a comment; with a semicolon\n\nSELECT 2\n  + 3;\n/* block; */ SELECT 4"
    assert list(split_statements(script)) == [
        (1, "SELECT 'a;b'"),
        (4, "SELECT 2\n  + 3"),
        (6, "SELECT 4"),
    ]


def _cli(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([CLI, *args], input=stdin, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_shell_runs_statements_and_dot_commands(shop, db_path) -> None:
    shop.connection.close()
    script = (
        "SELECT id,\n  sentiment(text).label AS label\nFROM reviews ORDER BY id;\n"
        ".models\n"
        ".functions sentiment v1\n"
        "SELECT MODEL(sentiment, v1)!__call__(text):label AS snow FROM reviews ORDER BY id;\n"
        "SELECT missing_column FROM reviews;\n"
        ".quit\n"
    )
    done = _cli("shell", str(db_path), stdin=script)
    assert done.returncode == 1, done.stderr  # one statement failed
    assert "missing_column" in done.stderr
    out = done.stdout
    assert "label" in out and "snow" in out and ("POSITIVE" in out or "NEGATIVE" in out)
    assert "sentiment__v1" in out and re.search(r"__CALL__\s*│\s*input\s*│\s*text\s*│\s*VARCHAR", out), out
    assert "FeatureSpec(" not in out  # DuckDB types, not Python reprs
    ok = _cli("shell", str(db_path), stdin="SELECT 41 + 1 AS answer;\n")
    assert ok.returncode == 0 and "42" in ok.stdout


def test_shell_takes_db_like_every_command_and_says_when_nothing_is_kept(shop, db_path, tmp_path) -> None:
    shop.connection.close()
    by_option = _cli("shell", "--db", str(db_path), stdin="SELECT count(*) AS models FROM duckreg.models;\n")
    assert by_option.returncode == 0, by_option.stderr
    assert "1" in by_option.stdout and "in-memory" not in by_option.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    transient = _cli("shell", stdin="SELECT 41 + 1 AS answer;\n", cwd=elsewhere)
    assert transient.returncode == 0 and "42" in transient.stdout
    assert "transient in-memory database: nothing is kept" in transient.stderr
    assert list(elsewhere.iterdir()) == []
    both = _cli("shell", str(db_path), "--db", str(tmp_path / "other.duckdb"), stdin="")
    assert both.returncode == 2 and "Two databases given" in both.stderr


def test_sql_and_run_commands(shop, db_path, tmp_path) -> None:
    expected = shop.register_functions().execute("SELECT sentiment(text).label FROM reviews ORDER BY id").fetchall()
    shop.connection.close()
    done = _cli("sql", "SELECT sentiment!__call__(text):label AS label FROM reviews ORDER BY id", "--db", str(db_path),
                "--format", "csv")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["label", *(row[0] for row in expected)]
    # Every statement runs, not only the one whose rows are printed.
    earlier = _cli("sql", "SELECT error('boom') FROM range(3); SELECT 1 AS one", "--db", str(db_path))
    assert earlier.returncode == 1 and "boom" in earlier.stderr
    script = tmp_path / "score.sql"
    script.write_text(
        "CREATE TABLE scored AS SELECT id, sentiment(text).label AS label FROM reviews;\n"
        "-- the next statement fails\n"
        "SELECT no_such_column\nFROM scored;\n"
        "CREATE TABLE never AS SELECT 1;\n"
    )
    failed = _cli("run", str(script), "--db", str(db_path))
    assert failed.returncode == 1
    assert f"{script}:3:" in failed.stderr and "no_such_column" in failed.stderr
    with duckreg.connect(str(db_path), read_only=True) as con:
        assert con.execute("SELECT label FROM scored ORDER BY id").fetchall() == expected
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert "never" not in tables


def test_registry_commands(shop, db_path, model_dirs, tmp_path) -> None:
    shop.connection.close()
    from click.testing import CliRunner

    from duckreg.cli import main

    top = _cli("--help")  # the installed command
    assert top.returncode == 0 and "shell" in top.stdout
    for command in ["shell", "sql", "run", "models", "versions", "functions", "log", "default", "alias", "unalias",
                    "delete", "jobs", "stages"]:  # fmt: skip
        shown = CliRunner().invoke(main, [command, "--help"])  # each command's help, in this process
        assert shown.exit_code == 0 and f"Usage: main {command}" in shown.output, shown.output
    listed = _cli("models", "--db", str(db_path))
    assert listed.returncode == 0 and "sentiment" in listed.stdout
    assert "latest_try" in _cli("versions", "sentiment", "--db", str(db_path)).stdout
    as_csv = _cli("versions", "sentiment", "--db", str(db_path), "--format", "csv").stdout.splitlines()
    assert as_csv[0] == "name,aliases,comment,created_on" and as_csv[1].startswith("v1,")
    logged = _cli("log", str(model_dirs["text-classification"]), "--task", "text-classification", "--name", "mood",
                  "--version", "v1", "--set", "top_k=2", "--db", str(db_path))  # fmt: skip
    assert logged.returncode == 0, logged.stderr
    assert "Logged mood version v1" in logged.stdout
    assert "\x1b[" not in logged.stdout + logged.stderr and "Loading weights" not in logged.stderr
    functions = _cli("functions", "mood", "--db", str(db_path), "--format", "csv")
    assert "__CALL__,output,outputs,JSON," in functions.stdout, functions.stdout
    assert "__CALL__,input,text,VARCHAR," in functions.stdout
    # Log options from the command line: an embedding model's pooling, made the default at once.
    embedded = _cli("log", str(model_dirs["feature-extraction"]), "--task", "feature-extraction", "--name", "mood",
                    "--version", "emb", "--option", "pooling=mean", "--default", "--db", str(db_path))  # fmt: skip
    assert embedded.returncode == 0, embedded.stderr
    vector = _cli("sql", "SELECT len(mood('hi')) AS n", "--db", str(db_path), "--format", "csv")
    assert vector.stdout == "n\n32\n", vector.stderr
    typo = _cli("log", str(model_dirs["feature-extraction"]), "--task", "feature-extration", "--name", "x",
                "--db", str(db_path))  # fmt: skip
    assert typo.returncode == 2 and "did you mean 'feature-extraction'?" in typo.stderr
    assert "question-answering" in typo.stderr and "Traceback" not in typo.stderr
    # Default versions and aliases from the command line.
    assert _cli("default", "mood", "v1", "--db", str(db_path)).stdout.strip() == "mood: default version v1"
    assert _cli("alias", "mood", "emb", "vectors", "--db", str(db_path)).returncode == 0
    by_alias = "SELECT len(MODEL(mood, vectors)!__call__('hi')) AS n"
    assert _cli("sql", by_alias, "--db", str(db_path), "--format", "csv").stdout == "n\n32\n"
    assert _cli("unalias", "mood", "vectors", "--db", str(db_path)).returncode == 0
    assert "vectors" not in _cli("versions", "mood", "--db", str(db_path)).stdout
    missing = _cli("versions", "nope", "--db", str(db_path))
    assert missing.returncode == 1 and "nope" in missing.stderr
    assert _cli("delete", "mood", "--yes", "--db", str(db_path)).returncode == 0
    assert "mood" not in _cli("models", "--db", str(db_path)).stdout
    assert _cli("models").returncode != 0  # no database given
    # Stages from the command line.
    created = _cli("stages", "create", "lake", str(tmp_path / "lake"), "--db", str(db_path))
    assert created.returncode == 0 and (tmp_path / "lake").is_dir(), created.stderr
    assert "lake," in _cli("stages", "--db", str(db_path), "--format", "csv").stdout
    # A mistyped --db is refused, not made into a new, empty registry.
    typo_db = tmp_path / "shpo.duckdb"
    refused = _cli("sql", "SELECT 1", "--db", str(typo_db))
    assert refused.returncode == 1 and f"No database file {typo_db}" in refused.stderr and not typo_db.exists()
    shell = _cli("shell", str(typo_db), stdin="SELECT 1;\n")
    assert shell.returncode == 0 and f"Creating a new database file {typo_db}" in shell.stderr


def test_an_empty_registry_lists_text_columns_and_the_shell_has_duckdbs_dot_commands(tmp_path) -> None:
    db = tmp_path / "empty.duckdb"
    duckreg.Registry(str(db)).connection.close()
    listed = _cli("models", "--db", str(db))
    assert listed.returncode == 0 and "double" not in listed.stdout and "varchar" in listed.stdout
    other = tmp_path / "other.duckdb"
    script = (
        "CREATE TABLE t (id INTEGER, body VARCHAR);\nCREATE VIEW v AS SELECT id FROM t;\n.schema\n"
        "INSERT INTO t SELECT i, 'x' FROM range(100) r(i);\n.maxrows 6\nSELECT id FROM t ORDER BY id;\n"
        f".open {other}\nSELECT count(*) AS tables_here FROM duckdb_tables() WHERE table_name = 't';\n"
    )
    done = _cli("shell", str(db), stdin=script)
    assert done.returncode == 0, done.stderr
    assert (
        "CREATE TABLE t(id INTEGER, body VARCHAR);" in done.stdout
        and "CREATE VIEW v AS SELECT id FROM t;" in done.stdout
    )
    assert "100 rows" in done.stdout and re.search(r"│\s+99 │", done.stdout) and not re.search(r"│\s+50 │", done.stdout)
    assert f"Opened {other}" in done.stdout and other.exists()


def test_dbt_build_on_the_example_project(tmp_path) -> None:
    pytest.importorskip("dbt.adapters.duckdb")
    project = tmp_path / "dbt"
    shutil.copytree(ROOT / "examples" / "dbt", project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*"))
    db = project / "shop.duckdb"
    python = sys.executable
    setup = subprocess.run([python, str(project / "log_models.py"), "--db", str(db)], capture_output=True, text=True)
    assert setup.returncode == 0, setup.stderr
    dbt = str(Path(python).with_name("dbt"))
    env = {**os.environ, "DUCKREG_DBT_DB": str(db), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    done = subprocess.run(
        [dbt, "build", "--project-dir", str(project), "--profiles-dir", str(project)],
        capture_output=True,
        text=True,
        env=env,
        cwd=project,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "PASS=11" in done.stdout
    with duckreg.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT review_id, polarity FROM review_sentiment ORDER BY review_id").fetchall()
        assert con.execute("SELECT typeof(embedding) FROM review_embeddings LIMIT 1").fetchone() == ("FLOAT[384]",)
        missing = con.execute("SELECT review_id FROM review_embeddings WHERE embedding IS NULL ORDER BY 1").fetchall()
        # The good rows' embeddings equal the model's answer for those reviews alone.
        alone = con.execute(
            "SELECT bool_and(array_cosine_similarity(embedding, minilm(review)) > 0.99999) "
            "FROM review_embeddings WHERE review_id <= 6"
        ).fetchone()
    assert missing == [(7,), (8,)] and alone == (True,)
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r[1] for r in rows if r[0] in (1, 3, 5)] == ["positive"] * 3


def test_dbt_plugin_reads_only_its_namespaced_config(shop) -> None:
    plugin_module = pytest.importorskip("duckreg.dbt")
    plugin = plugin_module.Plugin("duckreg", {"threads": 4, "memory_limit": "1GB", "duckreg_models": "sentiment"})
    assert plugin.models == ["sentiment"] and plugin.schema_name is None
    with pytest.raises(ValueError, match="Unknown duckreg plugin config keys \\['duckreg_modles'\\]"):
        plugin_module.Plugin("duckreg", {"duckreg_modles": ["sentiment"]})
    con = shop.connection
    plugin.configure_connection(con)
    cursor = con.cursor()
    plugin.configure_cursor(cursor)
    # The cursor gets the table macros too; the UDFs stay with the connection that made them.
    assert cursor.execute("SELECT count(*) FROM sentiment_table('reviews')").fetchall() == [(2,)]
    assert (
        con.execute("SELECT sentiment('I like you.').label").fetchall()
        == cursor.execute("SELECT sentiment('I like you.').label").fetchall()
    )
