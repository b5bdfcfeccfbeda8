-- A semantic index over the quickstart's documents, kept in the database and searched by meaning:
--   .venv/bin/duckreg run sql/semantic_index.sql --db examples/quickstart/quickstart.duckdb
-- The first run embeds every document; a later run embeds only documents that are new or changed
-- (if_exists := 'refresh' keeps the index), and drops vectors of documents that were deleted.
-- The quickstart's documents are unique, so the text is its own key; a real table would use an id column.
FROM create_index('docs_idx', 'docs', 'body', 'body', 'minilm', if_exists := 'refresh');
SELECT body, round(score, 3) AS score
FROM docs_idx_search('something to eat', k := 3);
