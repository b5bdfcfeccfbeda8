-- Every embedding has 384 dimensions and unit length (mean pooling + L2 normalisation).
select review_id
from {{ ref('review_embeddings') }}
where len(embedding) != 384
   or abs(sqrt(list_sum(list_transform(embedding::float[], lambda x: x * x))) - 1) > 1e-3
