"""The one model-on-an-image home: Normalization, Predictor, load_predictor and its registry of kinds.

Bad inputs tried: a normalisation with 2 channels, a zero std, an unknown input kind, a non-dict;
a missing checkpoint path, a string that is neither a file nor a pretrained name, an object that
is not a model; a model whose classes differ from the data's; an embedding-reading network
asked for image probabilities when no SAM-decoder kind is registered.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segmodels import AI4MARS, HIRISE_PITS, MarsamError, build_model, load_checkpoint, save_checkpoint
from segmodels import predictors as P
from segmodels.predictors import predict
from segmodels.normalization import DEFAULT_NORMALIZATION, SAM_EMBEDDING, Normalization


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build_model("unet", num_classes=4, base=4).eval()


def test_normalization_reads_old_checkpoint_dicts_and_refuses_bad_values():
    n = Normalization.coerce({"in_channels": 3, "mean": "0.3", "written_by": "an old marsam"})
    assert (n.in_channels, n.mean, n.std, n.input) == (3, 0.3, DEFAULT_NORMALIZATION.std, "image")
    assert n["mean"] == 0.3 and Normalization.coerce(n.to_dict()) == n
    assert Normalization.coerce(None) is DEFAULT_NORMALIZATION
    emb = Normalization.coerce({"in_channels": 256, "input": SAM_EMBEDDING, "mean": None, "std": None})
    assert not emb.reads_pixels
    x = torch.randn(1, 1, 4, 4)
    assert emb.renormalize(x, DEFAULT_NORMALIZATION) is x
    other = Normalization(mean=0.3, std=0.1)
    np.testing.assert_allclose(other.renormalize(x, DEFAULT_NORMALIZATION), (x * 0.25 + 0.5 - 0.3) / 0.1, rtol=1e-6)
    for bad, msg in (({"in_channels": 2}, "1 or 3 input channels"), ({"std": 0}, "std must be positive"),
                     ({"input": "lidar"}, "unknown model input"), ([1, 2], "must be a dict")):
        with pytest.raises(MarsamError, match=msg):
            Normalization.coerce(bad)
    with pytest.raises(MarsamError, match="reads sam embeddings, not images"):
        emb.to_model_input(np.zeros((8, 8), np.uint8))


def test_one_resolver_for_module_checkpoint_path_and_predictor(unet, tmp_path):
    path = save_checkpoint(tmp_path / "student", unet, AI4MARS, normalization={"mean": 0.3, "std": 0.1})
    img = np.random.default_rng(0).random((40, 24)).astype(np.float32)
    from_path = P.load_predictor(path)
    from_ckpt = P.load_predictor(load_checkpoint(path))
    from_module = P.load_predictor(unet, normalization={"mean": 0.3, "std": 0.1})
    assert P.load_predictor(from_path) is from_path
    assert from_path.name == "student" and from_path.model_name == "unet" and from_path.module is not None
    assert from_module.name == "unet" and from_module.label_spec is AI4MARS and from_module.checkpoint is None
    assert from_path.normalization.mean == 0.3
    a = from_path.probabilities(img)
    assert a.shape == (4, 40, 24) and a.dtype == np.float32
    np.testing.assert_allclose(a.sum(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(from_ckpt.probabilities(img), a, atol=1e-6)
    np.testing.assert_allclose(from_module.probabilities(img), a, atol=1e-6)
    np.testing.assert_allclose(predict(path, img).probs, a, atol=1e-6)


def test_bad_sources(tmp_path):
    with pytest.raises(MarsamError, match="does not exist.*pretrained model name"):
        P.load_predictor(tmp_path / "missing.safetensors")
    with pytest.raises(MarsamError, match="does not exist"):
        P.load_predictor("mars-giant")
    with pytest.raises(MarsamError, match="expected a marsam model or Checkpoint, got dict"):
        P.load_predictor({"model": "unet"})


def test_label_spec_check(unet, tmp_path):
    p = P.load_predictor(save_checkpoint(tmp_path / "m", unet, AI4MARS))
    P.check_label_spec(p, AI4MARS)
    with pytest.raises(MarsamError, match=r"predicts classes \['soil'.*\['background', 'pit'\]"):
        P.check_label_spec(p, HIRISE_PITS)
    with pytest.raises(MarsamError, match="predicts 4 classes but .* 2"):
        P.check_label_spec(P.load_predictor(unet), HIRISE_PITS)


def test_embedding_network_without_its_kind_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(P, "_KINDS", {})
    monkeypatch.setattr(P, "_PLUGINS_LOADED", True)
    dec = build_model("sam_decoder", width=8, out_size=64)
    p = P.load_predictor(dec)
    assert isinstance(p, P.NetworkPredictor) and not p.normalization.reads_pixels
    with pytest.raises(MarsamError, match="SAM image embeddings, not images.*annotate"):
        p.probabilities(np.zeros((32, 32), np.float32))


class _ConstantPredictor:
    """A model kind without a torch module (as an ONNX export would be): uniform probabilities."""

    def __init__(self, path, label_spec=None, **_):
        self.model_name, self.name, self.checkpoint, self.module = "constant", path.stem, None, None
        self.label_spec, self.normalization = label_spec or AI4MARS, DEFAULT_NORMALIZATION

    def probabilities(self, image, *, tile=512, overlap=64, batch_size=4, device=None):
        k = self.label_spec.num_classes
        return np.full((k,) + image.shape[:2], 1.0 / k, np.float32)


def test_a_new_kind_plugs_in_at_the_registry(monkeypatch, tmp_path):
    monkeypatch.setattr(P, "_KINDS", dict(P._KINDS))
    P.register_predictor_kind(".const")(_ConstantPredictor)
    f = tmp_path / "model.const"
    f.write_bytes(b"weights")
    p = P.load_predictor(f)
    assert isinstance(p, P.Predictor) and p.name == "model"
    pred = predict(p, np.zeros((10, 12), np.uint8))
    assert pred.probs.shape == (4, 10, 12) and (pred.labels == 0).all()
    # pretrained names come from the packages that ship them
    monkeypatch.setattr(P, "_PRETRAINED", [lambda: {"tiny-const": f}])
    assert P.load_predictor("tiny-const").name == "model"
