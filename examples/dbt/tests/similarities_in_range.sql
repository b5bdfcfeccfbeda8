-- Cosine similarities are within [-1, 1]; the obviously happy reviews read as positive.
select review_id
from {{ ref('review_sentiment') }}
where positive_similarity not between -1 and 1
   or negative_similarity not between -1 and 1
   or (review_id in (1, 3, 5) and polarity != 'positive')
