"""Alignment heads, towers and the model: shapes, init, normalisation, logit-scale clamp."""

import math

import pytest
import torch
import torch.nn.functional as F

from vlalign.align.heads import MLP, AlignmentModel, AlignmentTower, StarMLP
from vlalign.align.losses import siglip_loss


def test_star_mlp_shapes_and_formula():
    torch.manual_seed(0)
    head = StarMLP(16, 8, width_factor=4)
    assert head.f1.weight.shape == (64, 16) and head.f2.weight.shape == (64, 16)
    assert head.g.weight.shape == (8, 64)
    x = torch.randn(5, 16)
    expected = head.g(F.relu6(head.f1(x)) * head.f2(x))
    assert head(x).shape == (5, 8)
    assert torch.equal(head(x), expected)


def test_star_mlp_xavier_uniform_init_and_zero_bias():
    torch.manual_seed(0)
    head = StarMLP(64, 32, width_factor=8)
    for layer in (head.f1, head.f2, head.g):
        fan_out, fan_in = layer.weight.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert layer.weight.abs().max() <= bound
        # Uniform on [-b, b] has std b/√3; with thousands of weights the sample std is close.
        assert layer.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
        assert torch.count_nonzero(layer.bias) == 0


def test_mlp_head_shapes():
    head = MLP(12, 6, width_factor=4)
    assert head(torch.randn(3, 12)).shape == (3, 6)
    assert head.net[0].weight.shape == (48, 12)


@pytest.mark.parametrize("head", ["star", "mlp", "linear"])
def test_tower_outputs_unit_vectors(head):
    tower = AlignmentTower(10, head=head, target_dim=7, width_factor=2)
    z = tower(torch.randn(4, 10) * 50)
    assert z.shape == (4, 7)
    assert torch.allclose(z.norm(dim=-1), torch.ones(4), atol=1e-6)


def test_tower_without_layer_norm_has_no_norm_parameters():
    tower = AlignmentTower(10, head="linear", target_dim=4, layer_norm=False)
    assert {name for name, _ in tower.named_parameters()} == {"head.weight", "head.bias"}


def test_model_forward_settings_and_init():
    model = AlignmentModel(12, 9, head="mlp", target_dim=6, width_factor=2)
    img, txt = model(torch.randn(3, 12), torch.randn(3, 9))
    assert img.shape == txt.shape == (3, 6)
    assert model.logit_scale.item() == pytest.approx(math.log(20))
    assert model.logit_bias.item() == pytest.approx(-10)
    rebuilt = AlignmentModel(**model.settings)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


def test_text_only_model_keeps_image_space():
    model = AlignmentModel(12, 9, head="star", target_dim=6, width_factor=2, text_only=True)
    x = torch.randn(3, 12)
    img, txt = model(x, torch.randn(3, 9))
    assert img.shape == txt.shape == (3, 12)
    assert model.embed_dim == 12
    # Image side: LayerNorm (identity affine at init) + L2 only.
    assert torch.allclose(img, F.normalize(F.layer_norm(x, (12,)), dim=-1), atol=1e-6)


def test_unknown_head_is_rejected():
    with pytest.raises(ValueError, match="unknown alignment head"):
        AlignmentModel(4, 4, head="transformer")


def test_clamp_logit_scale():
    model = AlignmentModel(4, 4, head="linear", target_dim=4)
    with torch.no_grad():
        model.logit_scale.fill_(7.0)
    model.clamp_logit_scale()
    assert model.logit_scale.item() == pytest.approx(math.log(100))
    with torch.no_grad():
        model.logit_scale.fill_(-1.0)
    model.clamp_logit_scale()
    assert model.logit_scale.item() == 0.0


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = AlignmentModel(8, 6, head="star", target_dim=5, width_factor=2)
    img, txt = model(torch.randn(4, 8), torch.randn(4, 6))
    siglip_loss(img, txt, model.logit_scale, model.logit_bias).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
