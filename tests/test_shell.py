"""``duckreg shell`` as a DuckDB user types it: through a pseudo terminal (pexpect), with ``-c``, and piped.

The interactive tests drive the real shell process in a terminal 100 columns wide: prompt_toolkit's
line editing, Tab completion, history, dot-commands, output modes, and Ctrl-C as real SIGINTs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import transformers

pexpect = pytest.importorskip("pexpect")

pytestmark = pytest.mark.process
DUCKREG = str(Path(sys.executable).with_name("duckreg"))
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1b[=>]|[\x08\r]")


@pytest.fixture
def shop(registry, db_path: Path, model_dirs) -> Path:
    """A registry file with one model and a table whose names complete uniquely; closed again."""
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    registry.log_model(pipe, model_name="sentiment", version_name="v1")
    registry.connection.execute(
        "CREATE TABLE critiques AS SELECT * FROM (VALUES (1, 'I like you.'), (2, 'The food was bad.')) t(id, text)"
    )
    registry.connection.close()
    return db_path


def _env(tmp_path: Path, columns: int = 100) -> dict[str, str]:
    return {**os.environ, "DUCKREG_HISTORY": str(tmp_path / "history"), "COLUMNS": str(columns),
            "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm"}  # fmt: skip


def _box_lines(text: str) -> list[str]:
    """The lines of the tables in ``text`` (the echo of what was typed left out)."""
    return [line for line in text.splitlines() if line.startswith(("┌", "│", "├", "└"))]


class Terminal:
    """The shell in a pseudo terminal, and what it has printed so far (without terminal escapes)."""

    def __init__(self, db: Path, tmp_path: Path, columns: int = 100) -> None:
        self.child = pexpect.spawn(DUCKREG, ["shell", str(db)], env=_env(tmp_path, columns), encoding="utf-8",
                                   timeout=60, dimensions=(50, columns))  # fmt: skip
        self.child.expect("ready in")

    def type(self, text: str) -> None:
        self.child.send(text)

    def enter(self, line: str) -> None:
        self.child.send(line + "\r")

    def expect(self, pattern: str) -> str:
        """Wait for ``pattern`` (a regular expression) and return everything printed before it, cleaned."""
        self.child.expect(pattern)
        return ANSI.sub("", self.child.before)

    def quit(self) -> int:
        """Ctrl-D at the next prompt (a Ctrl-D typed while a statement runs is the terminal's, not the shell's)."""
        self.child.expect("D\x08")
        self.child.sendeof()
        self.child.expect(pexpect.EOF)
        self.child.close()
        return self.child.exitstatus


def test_terminal_modes_floats_timer_and_dot_commands(shop: Path, tmp_path: Path) -> None:
    term = Terminal(shop, tmp_path)
    term.enter("SELECT round(0.7351::FLOAT, 3) AS x, range(300)::FLOAT[] AS wide;")
    shown = term.expect("┘")
    assert "0.735" in shown and "0.7350000143" not in shown
    assert "…" in shown  # a list wider than the terminal is abbreviated on its line
    assert max(len(line) for line in _box_lines(shown)) <= 100
    term.enter(".mode line")
    term.enter("SELECT 1 AS a, 'two' AS bb;")
    assert " a = 1" in term.expect("bb = two")
    term.enter(".mode csv")
    term.enter("SELECT id, text FROM critiques ORDER BY id;")
    assert "id,text" in term.expect("2,The food was bad.")
    term.enter(".mode json")
    term.enter("SELECT id FROM critiques ORDER BY id;")
    term.expect(re.escape('[{"id":1},'))
    term.enter(".mode markdown")
    term.enter("SELECT 7 AS seven;")
    assert "| seven |" in term.expect(r"\| 7 \|")
    term.enter(".mode duckbox")
    term.enter(".timer on")
    term.enter("SELECT 42 AS answer;")
    term.expect(r"Run Time \(s\): real \d+\.\d+")
    term.enter(".timer off")
    term.enter(".tables")
    term.enter("SELECT 'end of tables' AS marker;")
    tables = term.expect("end of tables")
    assert "critiques" in tables and "versions" not in tables and "aliases" not in tables
    assert term.quit() == 0


def test_terminal_completes_model_functions_tables_and_keywords(shop: Path, tmp_path: Path) -> None:
    term = Terminal(shop, tmp_path)
    term.type("SELEC\t")
    time.sleep(0.5)
    term.type(" * FROM sentiment__v1_t\t")
    time.sleep(0.5)
    term.type("('criti\t")
    time.sleep(0.5)
    term.type("') ORDER BY id;\r")
    shown = term.expect("┘")
    assert "label" in shown and "score" in shown and "I like you." in shown
    assert term.quit() == 0
    history = (tmp_path / "history").read_text()
    assert "select * FROM sentiment__v1_table('critiques') ORDER BY id;" in history


def test_ctrl_c_during_the_first_model_call_leaves_the_shell_working(shop: Path, tmp_path: Path) -> None:
    term = Terminal(shop, tmp_path)
    # The first model call of the session: it loads the model, then scores far more rows than 0.5 s allows.
    term.enter("SELECT count(sentiment('row ' || i)) FROM range(100000) t(i);")
    time.sleep(0.5)
    term.child.sendintr()
    assert "INTERRUPT" in term.expect("Interrupted")
    term.enter("SELECT sentiment(text).label AS label FROM critiques ORDER BY id;")
    shown = term.expect("┘")
    assert re.search("POSITIVE|NEGATIVE", shown)
    assert "partially initialized" not in shown and "Error" not in shown
    term.type("SELECT 1")
    term.child.sendintr()  # at the prompt, Ctrl-C clears the line
    term.enter("SELECT 'still here' AS s;")
    assert "still here" in term.expect("┘")
    assert term.quit() == 0


def test_models_listing_fits_80_columns(shop: Path, tmp_path: Path) -> None:
    term = Terminal(shop, tmp_path, columns=80)
    term.enter(".models")
    shown = term.expect("┘")
    assert "sentiment" in shown and "default_version" in shown and "object" not in shown
    assert max(len(line) for line in _box_lines(shown)) <= 80
    assert term.quit() == 0


def _run(*args: str, tmp_path: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([DUCKREG, *args], input=stdin, capture_output=True, text=True, env=_env(tmp_path),
                          timeout=300)  # fmt: skip


def test_c_option_read_and_modes_without_a_terminal(shop: Path, tmp_path: Path) -> None:
    script = tmp_path / "score.sql"
    script.write_text(".mode csv\nSELECT id, sentiment(text).label AS label\nFROM critiques ORDER BY id;\n")
    done = _run("shell", str(shop), "-c", f".read {script}", "-c", "SELECT 3 AS three", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "id,label" and lines[1].startswith("1,") and lines[3:] == ["three", "3"]
    as_json = _run("shell", str(shop), "--mode", "json", "-c", "SELECT 0.5::FLOAT AS half", tmp_path=tmp_path)
    assert json.loads(as_json.stdout) == [{"half": 0.5}]
    failed = _run("shell", str(shop), "-c", "SELECT nope FROM critiques", tmp_path=tmp_path)
    assert failed.returncode == 1 and "nope" in failed.stderr and "Traceback" not in failed.stderr


def test_commands_exit_without_leak_reports(shop: Path, tmp_path: Path) -> None:
    for args in (["models"], ["versions", "sentiment"], ["functions", "sentiment"], ["sql", "SELECT 1"]):
        done = _run(*args, "--db", str(shop), tmp_path=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "leaked" not in done.stderr, args
    missing = _run("models", "--db", str(tmp_path / "nosuch.duckdb"), tmp_path=tmp_path)
    assert missing.returncode == 1 and "nosuch.duckdb" in missing.stderr and "Traceback" not in missing.stderr
    unclosed = subprocess.run(
        [sys.executable, "-c", f"import duckreg; con = duckreg.connect({str(shop)!r}); "
         "print(con.sql(\"SELECT sentiment('good').label\").fetchall())"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert unclosed.returncode == 0, unclosed.stderr
    assert "leaked" not in unclosed.stderr


def test_a_locked_database_is_one_clear_line(shop: Path, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys; con = duckdb.connect({str(shop)!r}); print('open', flush=True); "
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        done = _run("shell", str(shop), "-c", "SELECT 1", tmp_path=tmp_path)
        assert done.returncode == 1
        assert f"is open for writing in process {holder.pid}" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        holder.communicate("", timeout=60)
