"""One test suite that every marsam network passes (the BaseModelTester idea of
segmentation_models.pytorch): forward at several sizes, backward, seeded determinism,
checkpoint round trip with identical outputs, and the refusals of bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from segmodels import MarsamError, build_model, list_models, load_checkpoint, save_checkpoint
from segmodels.checkpoints import read_metadata
from segmodels.labels import AI4MARS, HIRISE_PITS
from segmodels.networks import AttentionUNet, SamDomainDecoder, UNet
from segmodels.stats import count_params


class BaseModelTester:
    name: str
    kwargs: dict = {}
    sizes: list = [(64, 64)]

    def make(self, **extra):
        torch.manual_seed(0)
        return build_model(self.name, **{**self.kwargs, **extra}).eval()

    def make_input(self, model, size):
        return torch.randn(2, model.in_channels, *size)

    def expected_size(self, size):
        return size

    def test_forward_sizes(self):
        model = self.make()
        for size in self.sizes:
            out = model(self.make_input(model, size))
            assert out.shape == (2, model.num_classes, *self.expected_size(size))
            assert torch.isfinite(out).all()

    def test_backward_reaches_every_parameter(self):
        model = self.make().train()
        out = model(self.make_input(model, self.sizes[0]))
        out.mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, missing

    def test_seeded_determinism(self):
        a, b = self.make(), self.make()
        x = self.make_input(a, self.sizes[0])
        assert torch.equal(a(x), b(x))

    def test_checkpoint_round_trip(self, tmp_path):
        model = self.make()
        x = self.make_input(model, self.sizes[0])
        path = save_checkpoint(tmp_path / "m", model, AI4MARS, training={"epochs": 0})
        ck = load_checkpoint(path)
        assert ck.model_name == self.name and ck.label_spec == AI4MARS
        with torch.no_grad():
            assert torch.equal(model(x), ck.model(x))
        assert read_metadata(path)["training"] == {"epochs": 0}

    def test_aleatoric_head(self):
        model = self.make(aleatoric=True)
        logits, log_var = model.forward_aleatoric(self.make_input(model, self.sizes[0]))
        assert logits.shape == log_var.shape

    def test_wrong_channels_nan_and_tiny_inputs_are_refused(self):
        model = self.make()
        size = self.sizes[0]
        with pytest.raises(MarsamError, match="channel"):
            model(torch.randn(1, model.in_channels + 1, *size))
        bad = self.make_input(model, size)
        bad[0, 0, 0, 0] = float("nan")
        with pytest.raises(MarsamError, match="NaN"):
            model(bad)
        bad[0, 0, 0, 0] = float("inf")
        with pytest.raises(MarsamError, match="infinite"):
            model(bad)
        with pytest.raises(MarsamError):
            model(torch.randn(1, model.in_channels, 1, 1))
        with pytest.raises(MarsamError):
            model(torch.randn(model.in_channels, *size))


class TestUNet(BaseModelTester):
    name = "unet"
    sizes = [(64, 64), (37, 50), (128, 96)]

    def test_three_channel_input(self):
        model = self.make(in_channels=3)
        assert model(torch.randn(1, 3, 40, 40)).shape == (1, 4, 40, 40)

    def test_torch_export_round_trip_matches(self, tmp_path):
        """The student is exported with torch.export (TorchScript is deprecated in torch 2.14)."""
        model = self.make()
        x = torch.randn(1, 1, 64, 64)
        program = torch.export.export(model, (x,))
        torch.export.save(program, str(tmp_path / "student.pt2"))
        loaded = torch.export.load(str(tmp_path / "student.pt2")).module()
        torch.testing.assert_close(loaded(x), model(x))


class TestAttentionUNet(BaseModelTester):
    name = "attention_unet"
    kwargs = {"base": 8}
    sizes = [(64, 64), (33, 47)]

    def test_attention_maps(self):
        model = self.make()
        logits, maps = model.attention_maps(torch.randn(1, 1, 64, 64))
        assert len(maps) == 4 and all(m.shape[1] == 1 for m in maps)
        assert all(((m >= 0) & (m <= 1)).all() for m in maps)
        assert maps[-1].shape[-2:] == (64, 64)


class TestSamDecoder(BaseModelTester):
    name = "sam_decoder"
    kwargs = {"width": 32, "out_size": 256}
    sizes = [(64, 64)]

    def expected_size(self, size):
        return (256, 256)

    def test_binary_head_and_wrong_embedding(self):
        model = self.make(num_classes=1)
        assert model(torch.randn(1, 256, 64, 64)).shape == (1, 1, 256, 256)
        with pytest.raises(MarsamError, match="64 x 64"):
            model(torch.randn(1, 256, 32, 32))

    def test_embedding_logits_to_image_removes_padding(self):
        from segmodels.networks import embedding_logits_to_image
        logits = torch.zeros(1, 1, 1024, 1024)
        logits[..., :768, :] = 1.0  # the valid region of a 900 x 1200 image resized to 768 x 1024
        out = embedding_logits_to_image(logits, (768, 1024), (900, 1200))
        assert out.shape[-2:] == (900, 1200) and torch.all(out == 1.0)


def test_registry_and_sizes():
    assert set(list_models()) >= {"unet", "attention_unet", "sam_decoder"}
    student, teacher = count_params(UNet()), count_params(AttentionUNet())
    assert student <= 2_000_000
    assert teacher >= 10 * student
    with pytest.raises(MarsamError, match="unknown model"):
        build_model("resnet")


def test_pickled_truncated_and_mismatched_checkpoints_are_refused(tmp_path):
    model = UNet()
    pth = tmp_path / "model.pth"
    torch.save(model.state_dict(), pth)
    with pytest.raises(MarsamError, match="pickled"):
        load_checkpoint(pth)
    disguised = tmp_path / "disguised.safetensors"
    disguised.write_bytes(pth.read_bytes())
    with pytest.raises(MarsamError, match="pickled"):
        load_checkpoint(disguised)
    good = save_checkpoint(tmp_path / "good", model, AI4MARS)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(MarsamError, match="truncated"):
        load_checkpoint(cut)
    (tmp_path / "tiny.safetensors").write_bytes(b"abc")
    with pytest.raises(MarsamError, match="truncated"):
        load_checkpoint(tmp_path / "tiny.safetensors")
    # weights of a base-16 UNet under metadata that names a base-8 UNet
    from safetensors.torch import save_file
    meta = read_metadata(good)
    meta["model_args"]["base"] = 8
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "mismatch.safetensors"), metadata={"marsam": json.dumps(meta)})
    with pytest.raises(MarsamError, match="do not fit"):
        load_checkpoint(tmp_path / "mismatch.safetensors")
    with pytest.raises(MarsamError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_checkpoint_keeps_label_spec(tmp_path):
    path = save_checkpoint(tmp_path / "pits", SamDomainDecoder(num_classes=2, width=16, out_size=64), HIRISE_PITS)
    assert load_checkpoint(path).label_spec == HIRISE_PITS


def test_models_cli_json_and_table():
    out = subprocess.run([sys.executable, "-m", "segmodels.cli", "models", "--json"],
                         capture_output=True, text=True, check=True).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["unet"]["params"] <= 2_000_000
    assert rows["attention_unet"]["params"] >= 10 * rows["unet"]["params"]
    assert all(r["gflops"] > 0 for r in rows.values())
    table = subprocess.run([sys.executable, "-m", "segmodels.cli", "models"],
                           capture_output=True, text=True, check=True).stdout
    assert "attention_unet" in table and "GFLOPs" in table


def test_safetensors_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    """A header length with low byte 0x80 (1 file in 32) once made a good checkpoint look pickled."""
    from safetensors.torch import save_file
    model = UNet(base=4)
    good = save_checkpoint(tmp_path / "good", model, AI4MARS)
    meta = read_metadata(good)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    for pad in range(300):  # vary the metadata length until the header length's low byte is 0x80
        meta["training"] = {"note": "x" * pad}
        path = tmp_path / "odd.safetensors"
        save_file(state, str(path), metadata={"marsam": json.dumps(meta)})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert load_checkpoint(path).model_name == "unet"


def test_constructor_arguments_are_recorded_once_by_the_base():
    """Like smp's hub mixin: no network writes its own config dict; copies keep it."""
    import copy
    import inspect

    from segmodels.networks import AttentionUNet, SamDomainDecoder, UNet
    m = build_model("attention_unet", base=4, num_classes=2)
    assert m.config() == {"in_channels": 1, "num_classes": 2, "base": 4, "dropout": 0.1, "aleatoric": False}
    assert copy.deepcopy(m).config() == m.config()
    assert build_model("sam_decoder", width=8).config()["width"] == 8
    for cls in (UNet, AttentionUNet, SamDomainDecoder):
        assert "_config" not in inspect.getsource(cls)
