"""Checkpoint discovery, safe loading, model-type checks and the atomic, verified download."""
from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest
import torch

from annotate import sam_loading
from annotate.sam_loading import (build_tiny_sam, download_file, find_checkpoint, load_sam,
                                  load_state_dict)
from segmodels.errors import MarsamError


def _fake_state(width: int) -> dict:
    return {"image_encoder.patch_embed.proj.weight": torch.zeros(width, 3, 16, 16)}


def test_tiny_sam_is_real_segment_anything(tiny_sam):
    from segment_anything.modeling import Sam
    assert isinstance(tiny_sam.sam, Sam)
    assert tiny_sam.sam.image_encoder.img_size == 1024
    with torch.no_grad():
        out = tiny_sam.sam.image_encoder(torch.zeros(1, 3, 1024, 1024))
    assert out.shape == (1, 256, 64, 64)
    # Same seed, same weights: cache keys built on checkpoint_id stay valid across runs.
    again = build_tiny_sam(seed=0)
    assert again.checkpoint_id == tiny_sam.checkpoint_id
    assert torch.equal(next(again.sam.parameters()), next(tiny_sam.sam.parameters()))


def test_checkpoint_of_another_model_type_is_named(tmp_path):
    path = tmp_path / "sam_vit_l.pth"
    torch.save(_fake_state(1024), path)
    with pytest.raises(MarsamError, match="is a vit_l checkpoint, not vit_b; pass --sam-model-type vit_l"):
        load_sam("vit_b", path, device="cpu")
    assert load_state_dict(path, "vit_l")  # the right type passes the check


def test_bad_checkpoints_are_refused(tmp_path):
    not_sam = tmp_path / "unet.pth"
    torch.save({"conv.weight": torch.zeros(2)}, not_sam)
    with pytest.raises(MarsamError, match="not a Segment Anything checkpoint"):
        load_sam("vit_b", not_sam)
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(b"not a zip file at all")
    with pytest.raises(MarsamError, match="cannot load SAM checkpoint"):
        load_sam("vit_b", damaged)
    pickled = tmp_path / "code.pth"
    torch.save({"x": functools.partial(print, "pwned")}, pickled)  # unpickling would need code objects
    with pytest.raises(MarsamError, match="cannot load SAM checkpoint"):
        load_sam("vit_b", pickled)
    with pytest.raises(MarsamError, match="does not exist"):
        load_sam("vit_b", tmp_path / "missing.pth")
    with pytest.raises(MarsamError, match="unknown SAM model type"):
        load_sam("vit_x")


def test_no_checkpoint_offline_says_where_to_put_it(monkeypatch, tmp_path):
    monkeypatch.delenv("MARSAM_SAM_CHECKPOINT", raising=False)
    monkeypatch.setenv("MARSAM_OFFLINE", "1")
    monkeypatch.setenv("MARSAM_CACHE_DIR", str(tmp_path))
    with pytest.raises(MarsamError, match=r"put it at .*sam_vit_b_01ec64\.pth"):
        find_checkpoint("vit_b")
    ckpt = tmp_path / "mine.pth"
    torch.save(_fake_state(768), ckpt)
    monkeypatch.setenv("MARSAM_SAM_CHECKPOINT", str(ckpt))
    assert find_checkpoint("vit_b") == ckpt


@pytest.fixture
def local_server(tmp_path):
    """A tiny HTTP server on 127.0.0.1 serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_verifies_sha256_and_is_atomic(local_server, tmp_path):
    www, url = local_server
    payload = bytes(range(256)) * 4000
    (www / "w.pth").write_bytes(payload)
    good = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "cache" / "w.pth"
    download_file(f"{url}/w.pth", dest, sha256=good, progress=False)
    assert dest.read_bytes() == payload
    dest2 = tmp_path / "cache" / "bad.pth"
    with pytest.raises(MarsamError, match="corrupt"):
        download_file(f"{url}/w.pth", dest2, sha256="0" * 64, progress=False)
    assert not dest2.exists()
    assert not [p for p in dest2.parent.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(MarsamError, match="cannot download .* put it at"):
        download_file(f"{url}/absent.pth", tmp_path / "cache" / "absent.pth", progress=False)
    # file:// works the same way (a mirror on a shared disk)
    dest3 = tmp_path / "cache" / "f.pth"
    download_file((www / "w.pth").as_uri(), dest3, sha256=good, progress=False)
    assert dest3.read_bytes() == payload


def test_find_checkpoint_downloads_official_file_once(local_server, monkeypatch, tmp_path):
    www, url = local_server
    payload = b"weights" * 1000
    (www / "sam_vit_b_01ec64.pth").write_bytes(payload)
    monkeypatch.delenv("MARSAM_SAM_CHECKPOINT", raising=False)
    monkeypatch.delenv("MARSAM_OFFLINE", raising=False)
    monkeypatch.setenv("MARSAM_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("MARSAM_SAM_BASE_URL", url)
    monkeypatch.setitem(sam_loading.CHECKPOINT_SHA256, "vit_b", hashlib.sha256(payload).hexdigest())
    path = find_checkpoint("vit_b")
    assert path == tmp_path / "c" / "sam" / "sam_vit_b_01ec64.pth" and path.read_bytes() == payload
    (www / "sam_vit_b_01ec64.pth").unlink()
    assert find_checkpoint("vit_b") == path  # cached: no second download
    assert sam_loading.file_id(path) == hashlib.sha256(payload).hexdigest()


def test_an_unloadable_pth_is_one_whole_sentence(tmp_path):
    """torch's refusal runs to a page; the user gets the cause and the fix, not half a sentence."""
    import argparse

    import torch

    from annotate.sam_loading import read_state_dict
    from segmodels.errors import MarsamError
    (tmp_path / "junk.pth").write_bytes(bytes(range(256)) * 8)                 # not a PyTorch file
    torch.save({"args": argparse.Namespace(x=1)}, tmp_path / "pickled.pth")   # pickled Python objects
    for name, cause in (("junk.pth", "damaged or not a PyTorch file"), ("pickled.pth", "pickled Python objects")):
        with pytest.raises(MarsamError) as e:
            read_state_dict(tmp_path / name)
        msg = str(e.value)
        assert cause in msg and msg.endswith("(a plain state dict)") and "\n" not in msg and len(msg) < 400
