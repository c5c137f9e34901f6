"""custom/bge embeddings on transformers with the bundled all-MiniLM-L6-v2: similarity, order, CLI."""

import json

import pytest

pytestmark = pytest.mark.slow


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5)


def test_embeddings_rank_similar_higher_and_keep_order(ray_cluster, cli):
    from byzer_like import Client
    from byzer_like.pool import list_aliases

    out = cli("deploy", "--pretrained_model_type", "custom/bge", "--infer_backend", "transformers",
              "--num_workers", "1", "--model", "emb")
    assert out.returncode == 0, out.stderr
    try:
        texts = ["The cat sits on the mat.", "A feline rests on a rug.", "Stock markets fell sharply today."]
        client = Client("emb", timeout=60)
        vectors = client.embed(texts)
        assert len(vectors) == 3 and len(vectors[0]) == 384
        assert _cos(vectors[0], vectors[1]) > _cos(vectors[0], vectors[2]) + 0.3
        reordered = client.embed(texts[::-1])  # batch input keeps order
        for got, want in zip(reordered, vectors[::-1]):
            assert _cos(got, want) > 0.999
        single = cli("embed", "emb", texts[0], texts[2])
        assert single.returncode == 0, single.stderr
        lines = [json.loads(line) for line in single.stdout.splitlines()]
        assert len(lines) == 2 and _cos(lines[0], vectors[0]) > 0.999 and _cos(lines[1], vectors[2]) > 0.999
        from byzer_like.errors import UnsupportedError

        with pytest.raises(UnsupportedError, match="embed"):
            client.chat("hi")
    finally:
        cli("undeploy", "--model", "emb", "--force")
    assert "emb" not in list_aliases()
