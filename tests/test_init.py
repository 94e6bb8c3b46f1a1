"Tests of miniai.init: BatchNorm and LayerNorm against torch (values, gradients, running statistics), GeneralRelu, Kaiming init, LSUV."
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from miniai.init import BatchNorm, GeneralRelu, LayerNorm, check_channels, conv_layer, init_weights, lsuv_init, simple_cnn


def n_hooks(model): return sum(len(m._forward_hooks) for m in model.modules())


# --- BatchNorm -----------------------------------------------------------------------------------------------------

def paired_bn(nf, mom, torch_cls, seed=0):
    "Our BatchNorm and torch's, with the same random scale and shift."
    torch.manual_seed(seed)
    ours, theirs = BatchNorm(nf, mom=mom), torch_cls(nf, momentum=mom)
    with torch.no_grad():
        ours.weight.normal_(); ours.bias.normal_()
        theirs.weight.copy_(ours.weight); theirs.bias.copy_(ours.bias)
    return ours, theirs


@pytest.mark.parametrize('shape,torch_cls', [((8, 6, 5, 5), nn.BatchNorm2d), ((16, 6), nn.BatchNorm1d), ((4, 6, 3, 3, 3), nn.BatchNorm3d)])
def test_batchnorm_matches_torch_in_training_and_eval(shape, torch_cls):
    ours, theirs = paired_bn(6, 0.3, torch_cls)
    g = torch.Generator().manual_seed(1)
    for step in range(5):
        x = (torch.randn(shape, generator=g) * 3 + torch.arange(6.).view(1, 6, *[1]*(len(shape)-2))).requires_grad_()
        up = torch.randn(shape, generator=g)
        y1, y2 = ours(x), theirs(x)
        assert_close(y1, y2)
        for a, b in zip(torch.autograd.grad(y1, (x, ours.weight, ours.bias), up), torch.autograd.grad(y2, (x, theirs.weight, theirs.bias), up)):
            assert_close(a, b)
        assert_close(ours.running_mean, theirs.running_mean); assert_close(ours.running_var, theirs.running_var)
    assert not torch.allclose(ours.running_var, torch.ones(6))  # the running statistics did move
    ours.eval(); theirs.eval()
    x = (torch.randn(shape, generator=g) * 2 + 1).requires_grad_()
    y1, y2 = ours(x), theirs(x)
    assert_close(y1, y2)
    assert_close(torch.autograd.grad(y1.sum(), x)[0], torch.autograd.grad(y2.sum(), x)[0])
    rm = ours.running_mean.clone(); ours(x)
    assert torch.equal(rm, ours.running_mean)  # eval mode does not update the running statistics


def test_batchnorm_normalises_each_channel_and_keeps_buffers_in_state_dict():
    bn = BatchNorm(3)
    x = torch.randn(32, 3, 4, 4) * torch.tensor([1., 5., 0.1]).view(1, 3, 1, 1) + 7
    y = bn(x)
    assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    v = x.var((0, 2, 3), unbiased=False)
    assert_close(y.var((0, 2, 3), unbiased=False), v / (v + 1e-5))  # 1 but for eps, which matters for the channel with std 0.1
    assert set(bn.state_dict()) == {'weight', 'bias', 'running_mean', 'running_var'}
    assert [n for n, _ in bn.named_parameters()] == ['weight', 'bias']


def test_batchnorm_errors():
    with pytest.raises(ValueError, match=r'BatchNorm\(4\): expected input \(B, 4, ...\).*got \(2, 3, 5, 5\)'): BatchNorm(4)(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match='more than one value per channel'): BatchNorm(3)(torch.randn(1, 3))
    bn = BatchNorm(3).eval()
    assert bn(torch.randn(1, 3)).shape == (1, 3)  # a single item is fine in eval mode


# --- LayerNorm -----------------------------------------------------------------------------------------------------

def test_layernorm_matches_torch_values_and_gradients():
    torch.manual_seed(0)
    x = (torch.randn(5, 4, 6, 6) * 3 + 2).requires_grad_()
    up = torch.randn(5, 4, 6, 6)
    ours, theirs = LayerNorm(4), nn.LayerNorm((4, 6, 6))
    with torch.no_grad():
        ours.weight.fill_(1.5); ours.bias.fill_(-0.7); theirs.weight.fill_(1.5); theirs.bias.fill_(-0.7)
    y1, y2 = ours(x), theirs(x)
    assert_close(y1, y2)
    gx1, gw1, gb1 = torch.autograd.grad(y1, (x, ours.weight, ours.bias), up)
    gx2, gw2, gb2 = torch.autograd.grad(y2, (x, theirs.weight, theirs.bias), up)
    assert_close(gx1, gx2)
    assert_close(gw1, gw2.sum().view(1)); assert_close(gb1, gb2.sum().view(1))  # our one scale stands for all of theirs
    assert_close(ours(x), F.layer_norm(x, (4, 6, 6)) * 1.5 - 0.7)


def test_layernorm_is_per_item_and_the_same_in_eval():
    ln = LayerNorm()
    x = torch.randn(3, 2, 4, 4) * torch.tensor([1., 10., 100.]).view(3, 1, 1, 1)
    y = ln(x)
    assert_close(y.mean((1, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    assert_close(y[1:2], ln(x[1:2]))  # an item does not depend on the rest of the batch
    assert torch.equal(ln.eval()(x), y)
    with pytest.raises(ValueError, match='expected a batch'): ln(torch.randn(5))


# --- GeneralRelu ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('leak,sub,maxv', [(None, None, None), (0.1, 0.4, None), (0.2, None, 1.0), (None, 0.5, 2.0), (0., 0.4, None)])
def test_general_relu_matches_the_formula_and_its_gradient(leak, sub, maxv):
    x = torch.linspace(-4, 4, 801).requires_grad_()
    a = leak or 0.
    ref = torch.where(x > 0, x, a * x) - (sub or 0.)
    dref = torch.where(x > 0, 1., a)
    if maxv is not None: dref = torch.where(ref > maxv, 0., dref); ref = ref.clamp(max=maxv)
    y = GeneralRelu(leak, sub, maxv)(x)
    assert_close(y, ref)
    assert_close(torch.autograd.grad(y.sum(), x)[0], dref)


# --- Kaiming init --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('layer,fan_in', [(nn.Conv2d(64, 128, 3), 576), (nn.Linear(1000, 200), 1000), (nn.Conv1d(32, 64, 5), 160)])
def test_init_weights_gives_std_sqrt_2_over_fan_in_and_zero_bias(layer, fan_in):
    torch.manual_seed(0)
    with torch.no_grad(): layer.bias.fill_(3.)
    init_weights(layer)
    assert layer.weight.std().item() == pytest.approx(math.sqrt(2/fan_in), rel=0.03)
    assert abs(layer.weight.mean().item()) < 0.05 * math.sqrt(2/fan_in) * 3
    assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    init_weights(layer, leaky=1.)  # a "leaky ReLU" of slope 1 is linear: gain 1
    assert layer.weight.std().item() == pytest.approx(math.sqrt(1/fan_in), rel=0.03)


def test_init_weights_through_apply_leaves_other_layers_alone():
    torch.manual_seed(0)
    model = simple_cnn(norm=BatchNorm)
    model.apply(partial(init_weights, leaky=0.1))
    w = model[3][0].weight  # Conv2d(32, 64): fan-in 288
    assert w.std().item() == pytest.approx(math.sqrt(2/(1.01*288)), rel=0.06)
    assert torch.equal(model[0][1].weight, torch.ones(8)) and torch.equal(model[0][1].bias, torch.zeros(8))


def test_kaiming_keeps_the_activation_scale_and_the_default_does_not():
    torch.manual_seed(0)
    x = torch.randn(64, 1, 28, 28)
    def stds(model):
        out = []
        for layer in model[:4]: x_ = layer(out[-1][0] if out else x); out.append((x_, x_.std().item()))
        return [s for _, s in out]
    default, kaiming = simple_cnn(), simple_cnn()
    kaiming.apply(init_weights)
    with torch.no_grad(): d, k = stds(default), stds(kaiming)
    assert d[-1] < 0.1 * d[0] and min(k) > 0.4 and max(k) < 2


# --- conv_layer, simple_cnn ----------------------------------------------------------------------------------------

def test_conv_layer_and_simple_cnn_shapes_and_bias_rule():
    assert conv_layer(3, 8)[0].bias is not None and conv_layer(3, 8, norm=BatchNorm)[0].bias is None
    assert conv_layer(3, 8, norm=BatchNorm, bias=True)[0].bias is not None
    assert [type(m) for m in conv_layer(3, 8, act=GeneralRelu, norm=LayerNorm)] == [nn.Conv2d, LayerNorm, GeneralRelu]
    assert len(conv_layer(3, 8, act=None)) == 1
    assert simple_cnn(act=partial(GeneralRelu, leak=0.1), norm=BatchNorm)(torch.randn(2, 1, 28, 28)).shape == (2, 10)


# --- LSUV ----------------------------------------------------------------------------------------------------------

def relu_stats(model, xb):
    "Mean and std of every GeneralRelu's output on xb, measured independently of lsuv_init."
    out = []
    hs = [m.register_forward_hook(lambda m, i, o: out.append((o.mean().item(), o.std().item()))) for m in model.modules() if isinstance(m, GeneralRelu)]
    with torch.no_grad(): model(xb)
    for h in hs: h.remove()
    return out


def test_lsuv_brings_every_activation_to_mean_0_std_1():
    torch.manual_seed(0)
    model = simple_cnn(act=partial(GeneralRelu, leak=0.1, sub=0.4))
    xb = torch.randn(128, 1, 28, 28)
    before = relu_stats(model, xb)
    assert max(abs(s - 1) for _, s in before) > 0.3  # far from it before
    report = lsuv_init(model, xb, tol=1e-3)
    after = relu_stats(model, xb)
    assert len(report) == len(after) == 4
    for (m, s), r in zip(after, report):
        assert abs(m) < 1e-3 and abs(s - 1) < 1e-3
        assert r['mean'] == pytest.approx(m, abs=1e-6) and r['iters'] > 0
    assert n_hooks(model) == 0
    assert relu_stats(model, torch.randn(128, 1, 28, 28))[-1][1] == pytest.approx(1, abs=0.2)  # holds roughly on other data too


def test_lsuv_warns_when_it_cannot_converge_and_errors_without_activations():
    torch.manual_seed(0)
    model = simple_cnn()  # plain ReLUs: their output can never have mean 0
    with pytest.warns(UserWarning, match='ended at mean .* after 3 steps'):
        lsuv_init(model, torch.randn(32, 1, 28, 28), acts=nn.ReLU, max_iter=3)
    assert n_hooks(model) == 0
    with pytest.raises(ValueError, match='no .*GeneralRelu.* modules; pass the activation type'):
        lsuv_init(simple_cnn(), torch.randn(4, 1, 28, 28))
    with pytest.raises(ValueError, match='no layer with a weight and a bias comes before ReLU'):
        lsuv_init(nn.Sequential(nn.ReLU(), nn.Linear(3, 3)), torch.randn(4, 3), acts=nn.ReLU)


def test_layer_settings_are_checked():
    assert check_channels([8, 16], 'f') == (8, 16) and check_channels((16,), 'f', multiple_of=8, n=1) == (16,)
    with pytest.raises(TypeError, match='f: nfs must be a non-empty list or tuple'): check_channels(8, 'f')
    with pytest.raises(ValueError, match=r'f: nfs must be 2 channel counts, got \(8,\)'): check_channels((8,), 'f', n=2)
    with pytest.raises(TypeError, match='f: each of nfs must be an integer'): check_channels((8, 2.5), 'f')
    with pytest.raises(ValueError, match=r'f: each of widths must be a multiple of 4, got \[6\]'):
        check_channels((4, 6), 'f', multiple_of=4, name='widths')
    with pytest.raises(ValueError, match='conv_layer: ni must be an integer >= 1'): conv_layer(0, 8)
    with pytest.raises(ValueError, match='conv_layer: ks must be'): conv_layer(1, 8, ks=0)
    with pytest.raises(ValueError, match='simple_cnn: nfs must be a non-empty'): simple_cnn(nfs=())
    with pytest.raises(ValueError, match='simple_cnn: n_out must be'): simple_cnn(n_out=0)
    with pytest.raises(TypeError, match='GeneralRelu: leak must be a number'): GeneralRelu(leak='0.1')
    with pytest.raises(ValueError, match='BatchNorm: nf must be an integer >= 1'): BatchNorm(0)
    with pytest.raises(ValueError, match='BatchNorm: mom must be a number from 0 to 1'): BatchNorm(8, mom=2)
    with pytest.raises(ValueError, match='LayerNorm: eps must be a number > 0'): LayerNorm(eps=0)
