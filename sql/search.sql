-- The three documents closest in meaning to a phrase, with the quickstart's minilm model:
--   .venv/bin/duckreg run sql/search.sql --db examples/quickstart/quickstart.duckdb
SELECT body, round(similarity, 3) AS similarity
FROM (SELECT body, array_cosine_similarity(minilm(body), minilm('something to eat')) AS similarity FROM docs)
ORDER BY similarity DESC
LIMIT 3;
