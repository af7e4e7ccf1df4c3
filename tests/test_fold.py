import pytest
import torch
from torch import nn

from birdsed.config import FrontendConfig, ModelConfig
from birdsed.model.bn_fusion import conv_bn_pairs, fold_batchnorm
from birdsed.model.sed import SEDModel, batchnorm_layers


def _random_statistics(model: nn.Module) -> None:
    """Trained-looking BatchNorms (fresh ones are the identity map, which would fold trivially)."""
    g = torch.Generator().manual_seed(1)
    for bn in batchnorm_layers(model):
        n = bn.num_features
        bn.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
        bn.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
        bn.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
        bn.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


@pytest.mark.parametrize("backbone", ["mobilenetv3_small_100", "resnet10t", "tf_efficientnet_lite0"])
def test_inference_copy_folds_every_batchnorm_and_keeps_the_outputs(backbone):
    torch.manual_seed(0)
    model = SEDModel(FrontendConfig(n_mels=64), ModelConfig(backbone=backbone, dropout=0.0), ["a", "b", "c"]).eval()
    _random_statistics(model)
    keys = list(model.state_dict())
    fast = model.inference_copy()
    assert [n for n, m in fast.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] == ["frontend.norm"]
    assert list(model.state_dict()) == keys and not model.channels_last  # the caller's model is untouched
    wave = torch.randn(3, 32000 * 5)
    with torch.inference_mode():
        want, got = model(wave), fast.encode(fast.frontend(wave), framewise=False)
    assert "framewise" not in got
    for k in ("clipwise", "segmentwise", "norm_att"):
        torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_inference_copy_on_a_gpu_folds_despite_tf32():
    """On an H100 the fold check used to run in TF32 convolutions and undo every fold (0.6 % off)."""
    model = SEDModel(FrontendConfig(n_mels=64), ModelConfig(backbone="tf_efficientnet_lite0", dropout=0.0), ["a"])
    _random_statistics(model)
    fast = model.cuda().eval().inference_copy()
    assert next(fast.parameters()).is_cuda
    assert [n for n, m in fast.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] == ["frontend.norm"]


class _PreNormUsedTwice(nn.Module):
    """conv -> bn, but the conv's output is also added back: folding the bn would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_folding_that_changes_the_output_is_undone():
    m = _PreNormUsedTwice().eval()
    _random_statistics(m)
    x = torch.randn(1, 2, 8, 8)
    with torch.inference_mode():
        want = m(x)
    weight = m.conv.weight.detach().clone()
    assert [p for p in conv_bn_pairs(m, lambda: m(x))[0]] == [("conv", "bn")]
    assert fold_batchnorm(m, lambda: m(x)) == 0
    assert isinstance(m.bn, nn.BatchNorm2d) and torch.equal(m.conv.weight, weight)
    with torch.inference_mode():
        torch.testing.assert_close(m(x), want)


def test_batchnorm_in_training_mode_or_fed_by_other_layers_is_left():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)).eval()
    m[4].train()
    assert fold_batchnorm(m, lambda: m(torch.randn(1, 1, 6, 6))) == 0
