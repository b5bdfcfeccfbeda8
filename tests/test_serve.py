"""duckreg serve: the real DuckDB CLI, in its own process, calls models served by another process over Quack.

The CLI tests need the DuckDB CLI and the quack extension for the DuckDB this suite runs on; PyPI has
both for DuckDB 1.5.5, so they run in the DuckDB 1.5 leg of ``scripts/test``. The main suite (DuckDB
2.0, where quack cannot be had offline) checks what a user sees when the extension is missing.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
import transformers

import duckreg
from duckreg.duckdb_ext.extensions import extension_file

pytestmark = pytest.mark.process
DUCKREG = str(Path(sys.executable).with_name("duckreg"))
TOKEN = "serve-test-token"


def _quack_loadable() -> bool:
    con = duckdb.connect()
    try:
        con.execute("LOAD quack")
        return True
    except duckdb.Error:
        return extension_file("quack") is not None
    finally:
        con.close()


def _cli() -> Path | None:
    try:
        import duckdb_cli
    except ImportError:
        return None
    return Path(duckdb_cli.__file__).with_name("duckdb")


needs_quack = pytest.mark.skipif(
    _cli() is None or not _quack_loadable(),
    reason="needs the DuckDB CLI and the quack extension for this DuckDB (the DuckDB 1.5 leg of scripts/test)",
)


def test_serving_another_address_needs_a_token(tmp_path: Path) -> None:
    done = subprocess.run(
        [DUCKREG, "serve", str(tmp_path / "shop.duckdb"), "--host", "0.0.0.0"], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "needs a token" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(_quack_loadable(), reason="the quack extension is available here")
def test_missing_extension_says_how_to_install_it(registry, db_path: Path) -> None:
    registry.connection.close()
    done = subprocess.run([DUCKREG, "serve", str(db_path)], capture_output=True, text=True)
    assert done.returncode == 1
    assert f"The DuckDB extension 'quack' is not available for DuckDB {duckdb.__version__}" in done.stderr
    assert "INSTALL quack" in done.stderr or "pip install duckdb-extension-quack" in done.stderr
    assert "Traceback" not in done.stderr


@dataclass
class Served:
    """A running ``duckreg serve`` process and how a CLI reaches it."""

    process: subprocess.Popen
    port: int
    init: Path
    banner: str

    def cli(self, sql: str, *, init: Path | None = None) -> subprocess.CompletedProcess:
        """Run the real DuckDB CLI with the server's client init file and ``sql``; JSON rows on stdout."""
        return subprocess.run(
            [str(_cli()), "-init", str(init or self.init), "-json", "-c", sql],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def rows(self, sql: str) -> list[dict]:
        done = self.cli(sql)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if done.stdout.strip() else []

    def stop(self) -> str:
        """SIGTERM, as a service manager stops it; the server's remaining output."""
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, out
        return out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(db: Path, tmp_path: Path, *extra: str) -> Served:
    port = _free_port()
    (tmp_path / "token").write_text(TOKEN + "\n")
    init = tmp_path / "reg.sql"
    process = subprocess.Popen(
        [DUCKREG, "serve", str(db), "--port", str(port), "--token-file", str(tmp_path / "token"),
         "--client-init", str(init), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    banner = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        banner.append(line)
        if line.startswith("Ctrl-C stops the server"):
            return Served(process, port, init, "".join(banner))
    process.kill()
    raise AssertionError("duckreg serve did not start:\n" + "".join(banner) + process.stdout.read())


@pytest.fixture
def shop_db(registry, db_path: Path, model_dirs) -> tuple[Path, list[tuple]]:
    """A registry with two versions of a sentiment model, a table, and a view that calls the model."""
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    registry.log_model(pipe, model_name="sentiment", version_name="v1")
    registry.log_model(pipe, model_name="sentiment", version_name="v2")
    registry.log_model(pipe, model_name="critic", version_name="v1")
    con = registry.connection
    registry.register_functions()
    con.execute(
        "CREATE TABLE reviews AS SELECT * FROM (VALUES (1, 'I like you.'), (2, 'The food was bad.')) t(id, text)"
    )
    con.execute("CREATE VIEW scored AS SELECT id, sentiment(text).label AS label FROM reviews")
    expected = con.execute(
        "SELECT id, sentiment(text, function_to_apply := 'none') FROM reviews ORDER BY id"
    ).fetchall()
    con.close()
    return db_path, expected


@pytest.fixture
def served(shop_db, tmp_path: Path) -> Iterator[Served]:
    server = _serve(shop_db[0], tmp_path)
    yield server
    if server.process.poll() is None:
        assert "Server stopped." in server.stop()


@needs_quack
def test_cli_calls_a_model_with_a_parameter(served: Served, shop_db) -> None:
    rows = served.rows(
        "FROM reg.query('SELECT id, models.sentiment(text, function_to_apply := ''none'') AS s "
        "FROM reviews ORDER BY id')"
    )
    expected = shop_db[1]
    assert [r["id"] for r in rows] == [1, 2]
    assert [r["s"]["label"] for r in rows] == [e[1]["label"] for e in expected]
    assert [r["s"]["score"] for r in rows] == pytest.approx([e[1]["score"] for e in expected], rel=1e-12)


@needs_quack
def test_cli_calls_a_table_macro_and_a_view(served: Served) -> None:
    table = served.rows("FROM reg.query('FROM models.sentiment__v2_table(''reviews'') ORDER BY id')")
    assert [sorted(r) for r in table] == [["id", "label", "score", "text"]] * 2
    assert [r["text"] for r in table] == ["I like you.", "The food was bad."]
    view = served.rows("FROM reg.scored ORDER BY id")
    assert [r["label"] for r in view] == [r["label"] for r in table]


@needs_quack
def test_quack_query_without_attach(served: Served) -> None:
    rows = served.rows(
        f"FROM quack_query('quack:127.0.0.1:{served.port}', 'SELECT sentiment__v1(''so good'').label AS label', "
        f"token := '{TOKEN}')"
    )
    assert rows[0]["label"] in ("POSITIVE", "NEGATIVE")


@needs_quack
def test_models_are_registered_as_statements_name_them(served: Served) -> None:
    def functions(prefix: str) -> set[str]:
        # The pattern is cut short so the listing itself names no model.
        sql = f"SELECT function_name FROM duckdb_functions() WHERE function_name LIKE ''{prefix}%''"
        return {r["function_name"] for r in served.rows(f"FROM reg.query('{sql}')")}

    assert "sentiment__v2" in functions("senti")  # named by the view, so registered at start
    assert functions("criti") == set()
    assert served.rows("FROM reg.query('SELECT critic(text).label AS label FROM reviews')")[0]["label"]
    assert {"critic", "critic__v1", "critic_table"} <= functions("criti")


@needs_quack
def test_model_errors_reach_the_client(served: Served) -> None:
    done = served.cli("FROM reg.query('SELECT models.sentiment(text, function_to_apply := ''bogus'') FROM reviews')")
    assert done.returncode == 1
    assert "Model sentiment version v1, function __CALL__ failed" in done.stderr
    assert "function_to_apply" in done.stderr


@needs_quack
def test_wrong_token_is_refused(served: Served, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.sql"
    wrong.write_text(served.init.read_text().replace(TOKEN, "not-the-token"))
    done = served.cli("FROM reg.query('SELECT 1')", init=wrong)
    assert done.returncode == 1
    assert "Authentication failed" in done.stderr


@needs_quack
def test_stopped_server_is_reported(served: Served) -> None:
    assert "Server stopped." in served.stop()
    done = served.cli("SELECT 1")
    assert done.returncode == 1
    assert "Could not connect to server" in done.stderr


@needs_quack
def test_read_only_server_leaves_the_file_unchanged(shop_db, tmp_path: Path) -> None:
    before = shop_db[0].read_bytes()
    server = _serve(shop_db[0], tmp_path, "--read-only")
    try:
        assert server.rows("FROM reg.query('SELECT count(*) AS n FROM reviews')") == [{"n": 2}]
        done = server.cli("FROM reg.query('CREATE TABLE t AS SELECT 1')")
        assert done.returncode == 1
        assert "read-only" in done.stderr
    finally:
        server.stop()
    assert shop_db[0].read_bytes() == before
    assert duckreg.Registry(str(shop_db[0])).model_keys() == ["critic", "sentiment"]


@needs_quack
def test_banner_names_the_address_and_start_time(served: Served) -> None:
    assert f"at quack:127.0.0.1:{served.port}, ready in " in served.banner
    assert "(2 models)" in served.banner
    assert TOKEN not in served.banner  # a token the user chose is not echoed
    # The call shown is this DuckDB's way, with one of this database's models and its input.
    assert re.search(r"FROM reg\.query\('SELECT (critic|sentiment)\(text\) FROM your_table'\);", served.banner)
    assert "CONNECT" not in served.banner


MAIN_VENV_DUCKREG = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "duckreg"


@needs_quack
@pytest.mark.skipif(not MAIN_VENV_DUCKREG.exists(), reason="needs the DuckDB 2.0 environment (.venv) beside this one")
def test_a_registry_written_by_duckdb_2_is_served_to_the_duckdb_15_cli_through_a_snapshot(tmp_path: Path) -> None:
    # The README's recipe: the registry lives in DuckDB 2.0's format; a 1.5-format snapshot is what 1.5 serves.
    (tmp_path / "main").mkdir()
    (tmp_path / "serve").mkdir()
    source = tmp_path / "main" / "shop.duckdb"
    made = subprocess.run(
        [str(MAIN_VENV_DUCKREG.with_name("python")), "-c", (
            "import sys, transformers, duckreg\n"
            f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "import tiny_models\n"
            f"folder = tiny_models.bert_text_classification(__import__('pathlib').Path({str(tmp_path / 'model')!r}))\n"
            f"registry = duckreg.Registry({str(source)!r})\n"
            "registry.log_model(transformers.pipeline('text-classification', model=str(folder)), model_name='mood')\n"
            "registry.connection.execute(\"CREATE TABLE notes AS SELECT 'I like you.' AS text\")\n"
        )], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    copy = tmp_path / "serve" / "shop15.duckdb"
    snap = subprocess.run([str(MAIN_VENV_DUCKREG), "snapshot", str(source), str(copy), "--storage-version", "v1.5.0"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert snap.returncode == 0, snap.stderr
    with pytest.raises(duckdb.Error, match="version number"):
        duckdb.connect(str(source), read_only=True)  # this DuckDB cannot read the original
    server = _serve(copy, tmp_path / "serve")
    try:
        assert "FROM reg.query('SELECT mood(text) FROM your_table');" in server.banner
        rows = server.rows("FROM reg.query('SELECT mood(text).label AS label FROM notes')")
        assert rows[0]["label"] in ("POSITIVE", "NEGATIVE")
    finally:
        assert "Server stopped." in server.stop()


@needs_quack
def test_serve_also_serves_the_ui_over_the_same_database(shop_db, tmp_path: Path) -> None:
    pytest.importorskip("starlette", reason="needs duckreg[ui]")
    ui_port = _free_port()
    server = _serve(shop_db[0], tmp_path, "--ui-port", str(ui_port))
    try:
        assert f"UI at http://127.0.0.1:{ui_port}/?token=..." in server.banner  # the user's token is not echoed
        page = f"http://127.0.0.1:{ui_port}/models/sentiment/versions/v2"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(page, timeout=30)
        assert refused.value.code == 401
        request = urllib.request.Request(page, headers={"Authorization": f"Bearer {TOKEN}"})
        html = urllib.request.urlopen(request, timeout=30).read().decode()
        assert "sentiment__v2(text)" in html and "VARCHAR" in html
        # The Quack side still answers while the UI runs.
        assert [r["id"] for r in server.rows("FROM reg.query('SELECT id FROM reviews ORDER BY id')")] == [1, 2]
    finally:
        assert "Server stopped." in server.stop()
