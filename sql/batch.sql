-- Every document embedded by a batch job into parquet files under the stage @lake. Create the stage once:
--   .venv/bin/duckreg stages create lake ./lake --db examples/quickstart/quickstart.duckdb
--   .venv/bin/duckreg run sql/batch.sql --db examples/quickstart/quickstart.duckdb
-- mode := 'overwrite' replaces an earlier run's output; on_error := 'continue' writes a row that fails with its
-- message in the _error column instead of failing the job, and counts it in rows_failed.
SELECT job_name, status, rows, rows_failed, files
FROM run_batch('minilm', 'SELECT body AS inputs FROM docs', '@lake/doc_embeddings/',
               mode := 'overwrite', on_error := 'continue');
