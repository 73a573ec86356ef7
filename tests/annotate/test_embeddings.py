"""Embedding cache (keys, hits, corruption) and tiling of large images."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from annotate.embeddings import (EmbeddingCache, ImageEmbedding, EmbeddingTile, embed_image, embed_images,
                                 image_key, tile_grid, tile_starts)


class _EncoderCalls:
    """Counts image-encoder forward passes (a real hook, not a mock)."""

    def __init__(self, model):
        self.n = 0
        self.handle = model.sam.image_encoder.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.n += 1


@pytest.fixture
def image():
    return np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8)


def test_embedding_sizes_and_cache_hit(tiny_sam, image, tmp_path):
    cache = EmbeddingCache(tmp_path / "emb")
    calls = _EncoderCalls(tiny_sam)
    try:
        first = embed_image(tiny_sam, image, cache)
        (tile,) = first.tiles
        assert tile.embedding.shape == (1, 256, 64, 64) and tile.embedding.dtype == torch.float32
        assert tile.original_size == (300, 400) and tile.input_size == (768, 1024) and tile.offset == (0, 0)
        assert first.key in cache and calls.n == 1
        second = embed_image(tiny_sam, image, cache)
        assert calls.n == 1, "a cache hit must not run the encoder"
        assert torch.equal(first.tiles[0].embedding, second.tiles[0].embedding)
        assert second.tiles[0].input_size == (768, 1024)
        # A new cache object on the same folder (another run, the napari plugin) hits too.
        embed_image(tiny_sam, image, EmbeddingCache(tmp_path / "emb"))
        assert calls.n == 1
    finally:
        calls.handle.remove()


def test_cache_key_is_content_model_and_checkpoint(image):
    k = image_key(image, "vit_b", "abc")
    assert k == image_key(image.copy(), "vit_b", "abc")
    assert k != image_key(image, "vit_l", "abc")
    assert k != image_key(image, "vit_b", "abd")
    changed = image.copy()
    changed[0, 0, 0] ^= 1
    assert k != image_key(changed, "vit_b", "abc")
    assert k != image_key(image.astype(np.uint16), "vit_b", "abc")
    assert k != image_key(image.reshape(400, 300, 3), "vit_b", "abc")


def test_default_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MARSAM_CACHE_DIR", str(tmp_path))
    assert EmbeddingCache().root == tmp_path / "embeddings"


def test_corrupt_entry_is_detected_and_recomputed(tiny_sam, image, tmp_path, caplog):
    cache = EmbeddingCache(tmp_path)
    good = embed_image(tiny_sam, image, cache)
    path = cache.path(good.key)
    original = path.read_bytes()
    for damage in ("truncate", "flip", "garbage"):
        data = bytearray(original)
        if damage == "truncate":
            data = data[: len(data) // 2]
        elif damage == "flip":
            data[-1000] ^= 0xFF  # inside the tensor bytes: only the checksum notices
        else:
            data = bytearray(b"\x00" * 64)
        path.write_bytes(bytes(data))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="annotate.embeddings"):
            assert cache.get(good.key) is None, damage
        assert "corrupt" in caplog.text and not path.exists(), damage
    path.write_bytes(original[:-10])
    again = embed_image(tiny_sam, image, cache)  # detected on read, recomputed, stored again
    assert torch.equal(again.tiles[0].embedding, good.tiles[0].embedding)
    assert cache.get(good.key) is not None


def test_tile_grid_covers_with_overlap():
    assert tile_starts(900) == [0]
    assert tile_starts(1300) == [0, 276]
    assert tile_starts(3000) == [0, 768, 1536, 1976]
    grid = tile_grid(1300, 2100)
    covered = np.zeros((1300, 2100), int)
    for x, y, w, h in grid:
        assert w == h == 1024
        covered[y:y + h, x:x + w] += 1
    assert covered.min() >= 1
    assert tile_grid(500, 700) == [(0, 0, 700, 500)]


def test_tile_for_box_rule():
    def tile(x, y):
        return EmbeddingTile(embedding=None, input_size=(1024, 1024), original_size=(1024, 1024), offset=(x, y))
    emb = ImageEmbedding(tiles=[tile(0, 0), tile(768, 0), tile(1076, 0)], image_size=(1024, 2100),
                         model_type="t", checkpoint_id="c", key="k")
    assert emb.tile_for_box((10, 10, 100, 100)) == 0
    # inside tiles 0 and 1: the one whose centre is nearest the box centre
    assert emb.tile_for_box((800, 10, 1000, 100)) == 1
    assert emb.tile_for_box((2000, 10, 2090, 100)) == 2
    # in no tile entirely (wider than the overlap): the largest overlap wins
    assert emb.tile_for_box((600, 10, 1900, 100)) == 1
    assert emb.tile_for_box((100, 10, 1500, 100)) == 0


def test_large_image_is_tiled_and_batched(tiny_sam, tmp_path):
    img = np.random.default_rng(2).integers(0, 65535, (700, 1300), dtype=np.uint16)  # 16-bit grey
    emb = embed_images(tiny_sam, [img], EmbeddingCache(tmp_path), batch_size=2)[0]
    assert [t.offset for t in emb.tiles] == [(0, 0), (276, 0)]
    assert all(t.original_size == (700, 1024) and t.input_size == (700, 1024) for t in emb.tiles)
    assert emb.image_size == (700, 1300)
    assert not torch.equal(emb.tiles[0].embedding, emb.tiles[1].embedding)
