-- Reviews 7 and 8 are longer than the 512 tokens MiniLM reads: their embeddings are NULL (not the
-- embedding of their start), and every other review has one.
select review_id
from {{ ref('review_embeddings') }}
where (embedding is null) != (review_id in (7, 8))
