"""The inference copy of a network (BatchNorm folded, channels-last): same probabilities, the
original untouched, forward hooks (napari's progress and cancel) still called."""
from __future__ import annotations

import numpy as np
import torch

from segmodels.inference import inference_network, network_probabilities
from segmodels.networks import build_model


def _trained_like(name, **kw):
    torch.manual_seed(0)
    net = build_model(name, **kw)
    for m in net.modules():                     # non-trivial running statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return net.eval()


def test_folded_network_gives_the_same_probabilities_for_every_architecture():
    for name, kw in [("unet", dict(base=4)), ("attention_unet", dict(base=4))]:
        net = _trained_like(name, **kw)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        x = torch.rand(1, 1, 72, 56)
        with torch.no_grad():
            ref = torch.softmax(net(x), 1)[0].numpy()
        fast = inference_network(net)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules() if name == "unet")
        out = network_probabilities(net, x, tile=512)
        np.testing.assert_allclose(out, ref, atol=1e-5)
        tiled = network_probabilities(net, x, tile=32, overlap=4)
        assert tiled.shape == ref.shape and tiled.dtype == np.float32
        for k, v in net.state_dict().items():
            torch.testing.assert_close(v, before[k])       # the original is not changed


def test_forward_hooks_of_the_original_still_run():
    net = _trained_like("unet", base=4)
    calls = []
    handle = net.register_forward_pre_hook(lambda m, a: calls.append(1))
    network_probabilities(net, torch.rand(1, 1, 64, 64), tile=32, overlap=4, batch_size=2)
    handle.remove()
    assert len(calls) >= 2                                  # one per batch of tiles


def test_a_training_network_is_not_folded():
    net = build_model("unet", base=4).train()
    assert inference_network(net) is net


def test_the_original_keeps_its_mode():
    net = _trained_like("unet", base=4).train()
    network_probabilities(net, torch.rand(1, 1, 32, 32))
    assert net.training
    net.eval()
    network_probabilities(net, torch.rand(1, 1, 32, 32))
    assert not net.training
