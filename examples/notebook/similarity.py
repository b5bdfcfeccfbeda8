"""A marimo notebook: the quickstart's documents ranked against a question by a model called from SQL, and a chart.

Run the quickstart first (it writes examples/quickstart/quickstart.duckdb), then either

    marimo edit examples/notebook/similarity.py      # interactive, in the browser
    python examples/notebook/similarity.py           # as a script: prints the table, writes similarity.png

``DUCKREG_NOTEBOOK_DB`` and ``DUCKREG_NOTEBOOK_PLOT`` override the database and the image path.
"""

import marimo

app = marimo.App()


@app.cell
def _():
    import os
    from pathlib import Path

    import marimo as mo

    import duckreg

    here = Path(__file__).resolve().parent
    database = os.environ.get("DUCKREG_NOTEBOOK_DB", str(here.parent / "quickstart" / "quickstart.duckdb"))
    plot_path = os.environ.get("DUCKREG_NOTEBOOK_PLOT", str(here / "similarity.png"))
    con = duckreg.connect(database, read_only=True)
    question = "Who is playing music?"
    return con, mo, plot_path, question


@app.cell
def _(con, mo, question):
    # A SQL cell: the model is an ordinary function of the connection.
    ranked = mo.sql(
        f"""
        SELECT body, array_cosine_similarity(embedding, minilm('{question}'))::DOUBLE AS similarity
        FROM doc_vectors
        ORDER BY similarity DESC
        """,
        engine=con,
    )
    print(ranked)
    return (ranked,)


@app.cell
def _(plot_path, question, ranked):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bodies = list(ranked["body"])
    similarities = list(ranked["similarity"])
    figure, axes = plt.subplots(figsize=(8, 4))
    axes.barh(bodies[::-1], similarities[::-1])
    axes.set_xlabel("cosine similarity")
    axes.set_title(question)
    figure.tight_layout()
    figure.savefig(plot_path)
    return (figure,)


if __name__ == "__main__":
    app.run()
