from collections import namedtuple

import pytest, torch
from torch import nn
import torch.nn.functional as F
from miniai.conv import collate_device, conv, conv2d_im2col, conv2d_loops, conv_out_size, def_device, im2col, to_device


def test_conv2d_loops_matches_conv2d():
    torch.manual_seed(0)
    img, k = torch.randn(9, 12), torch.randn(3, 3)
    torch.testing.assert_close(conv2d_loops(img, k), F.conv2d(img[None, None], k[None, None])[0, 0])
    k2 = torch.randn(2, 4)  # not square: the loops do not care
    torch.testing.assert_close(conv2d_loops(img, k2), F.conv2d(img[None, None], k2[None, None])[0, 0])
    assert conv2d_loops(torch.ones(3, 3), torch.ones(3, 3)).item() == 9


def test_conv2d_loops_errors():
    with pytest.raises(ValueError, match=r'expected a 2-d image \(H, W\) and a 2-d kernel'): conv2d_loops(torch.zeros(1, 5, 5), torch.zeros(3, 3))
    with pytest.raises(ValueError, match='a 5x5 kernel does not fit in a 4x4 image'): conv2d_loops(torch.zeros(4, 4), torch.zeros(5, 5))


@pytest.mark.parametrize('B,C,H,W,ks,stride,padding', [(1, 1, 5, 5, 3, 1, 0), (2, 3, 13, 11, 3, 2, 1), (3, 2, 8, 9, 5, 3, 2),
                                                        (1, 4, 7, 7, 1, 1, 0), (2, 1, 6, 10, 2, 2, 0), (1, 2, 4, 4, 3, 1, 3)])
def test_im2col_matches_unfold(B, C, H, W, ks, stride, padding):
    x = torch.randn(B, C, H, W)
    ours = im2col(x, ks, stride, padding)
    torch.testing.assert_close(ours, F.unfold(x, ks, stride=stride, padding=padding))
    assert ours.shape == (B, C*ks*ks, conv_out_size(H, ks, stride, padding)*conv_out_size(W, ks, stride, padding))


@pytest.mark.parametrize('B,Cin,Cout,H,W,ks,stride,padding,bias', [
    (1, 1, 1, 28, 28, 3, 1, 0, False), (4, 3, 8, 13, 11, 3, 1, 1, True), (2, 3, 5, 13, 11, 3, 2, 1, True),
    (2, 2, 4, 10, 10, 5, 2, 2, True), (3, 4, 6, 9, 12, 1, 1, 0, True), (1, 8, 16, 7, 7, 3, 2, 1, False), (2, 1, 3, 6, 6, 4, 3, 2, True)])
def test_conv2d_im2col_matches_torch_values_and_grads(B, Cin, Cout, H, W, ks, stride, padding, bias):
    torch.manual_seed(B*100 + Cout)
    x = torch.randn(B, Cin, H, W, dtype=torch.float64, requires_grad=True)
    w = torch.randn(Cout, Cin, ks, ks, dtype=torch.float64, requires_grad=True)
    b = torch.randn(Cout, dtype=torch.float64, requires_grad=True) if bias else None
    ours, theirs = conv2d_im2col(x, w, b, stride, padding), F.conv2d(x, w, b, stride=stride, padding=padding)
    torch.testing.assert_close(ours, theirs)
    g = torch.randn_like(theirs)
    params = [x, w] + ([b] if bias else [])
    for go, gt in zip(torch.autograd.grad(ours, params, g), torch.autograd.grad(theirs, params, g)): torch.testing.assert_close(go, gt)


def test_conv2d_im2col_matches_nn_conv2d_layer():
    torch.manual_seed(1)
    layer = nn.Conv2d(3, 7, 3, stride=2, padding=1)
    x = torch.randn(5, 3, 28, 28)
    torch.testing.assert_close(conv2d_im2col(x, layer.weight, layer.bias, 2, 1), layer(x), atol=1e-5, rtol=1e-4)


def test_output_size_formula():
    for n in range(1, 20):
        for ks in (1, 2, 3, 5):
            for stride in (1, 2, 3):
                for padding in (0, 1, 2):
                    if n + 2*padding < ks: continue
                    got = F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, ks, ks), stride=stride, padding=padding).shape[-1]
                    assert conv_out_size(n, ks, stride, padding) == got


def test_shape_errors():
    w = torch.zeros(8, 3, 3, 3)
    with pytest.raises(ValueError, match=r'x must be a batch of images \(B, Cin, H, W\), got shape \(3, 28, 28\)'): conv2d_im2col(torch.zeros(3, 28, 28), w)
    with pytest.raises(ValueError, match='x has 1 channels but weight expects 3'): conv2d_im2col(torch.zeros(2, 1, 28, 28), w)
    with pytest.raises(ValueError, match='square kernel, got shape'): conv2d_im2col(torch.zeros(2, 3, 8, 8), torch.zeros(8, 3, 3, 5))
    with pytest.raises(ValueError, match=r'weight must be \(Cout, Cin, k, k\)'): conv2d_im2col(torch.zeros(2, 3, 8, 8), torch.zeros(3, 3, 3))
    with pytest.raises(ValueError, match=r'bias must have shape \(8,\)'): conv2d_im2col(torch.zeros(2, 3, 8, 8), w, torch.zeros(3))
    with pytest.raises(ValueError, match=r'im2col: expected a batch of images .* got shape \(28, 28\).*img\[None, None\]'): im2col(torch.zeros(28, 28), 3)
    with pytest.raises(ValueError, match='a 5x5 kernel does not fit in a 3x3 image with padding 0'): im2col(torch.zeros(1, 1, 3, 3), 5)
    for kw in (dict(ks=0), dict(ks=3, stride=0), dict(ks=3, padding=-1), dict(ks=2.5)):
        with pytest.raises((TypeError, ValueError), match='must be an integer >='): im2col(torch.zeros(1, 1, 8, 8), **kw)


def test_conv_layer():
    torch.manual_seed(0)
    c = conv(3, 16)
    assert isinstance(c, nn.Sequential) and isinstance(c[0], nn.Conv2d) and isinstance(c[1], nn.ReLU) and len(c) == 2
    assert c[0].stride == (2, 2) and c[0].padding == (1, 1) and c[0].kernel_size == (3, 3)
    y = c(torch.randn(2, 3, 28, 28))
    assert y.shape == (2, 16, 14, 14) and y.min() >= 0
    c2 = conv(4, 4, ks=5, stride=1, act=False)
    assert len(c2) == 1 and c2[0].padding == (2, 2) and c2(torch.randn(1, 4, 9, 9)).shape == (1, 4, 9, 9)
    assert c2(torch.randn(1, 4, 9, 9)).min() < 0


def test_cnn_shapes():
    model = nn.Sequential(conv(1, 8), conv(8, 16), conv(16, 32), conv(32, 64), conv(64, 10, act=False), nn.Flatten())
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_def_device():
    want = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    assert def_device == want and isinstance(def_device, str)


def test_to_device_nested():
    P = namedtuple('P', 'a b')
    batch = {'x': torch.zeros(2), 'l': [torch.ones(1), (torch.ones(2), 'name', 3)], 'p': P(torch.ones(3), None), 'n': 7}
    out = to_device(batch, 'meta')
    assert out['x'].is_meta and out['l'][0].is_meta and out['l'][1][0].is_meta and out['p'].a.is_meta
    assert isinstance(out['l'], list) and isinstance(out['l'][1], tuple) and isinstance(out['p'], P)
    assert out['l'][1][1:] == ('name', 3) and out['p'].b is None and out['n'] == 7
    assert out['x'].shape == (2,) and not batch['x'].is_meta  # the original is left alone
    m = to_device(nn.Linear(2, 3), 'meta')
    assert m.weight.is_meta
    t = torch.arange(3)
    assert to_device(t, 'cpu') is t or torch.equal(to_device(t, 'cpu'), t)
    assert to_device(t).device.type == torch.device(def_device).type


def test_collate_device():
    xb, yb = collate_device([(torch.ones(2, 2), 1), (torch.zeros(2, 2), 0)])
    assert xb.shape == (2, 2, 2) and torch.equal(yb, torch.tensor([1, 0])) and xb.device.type == torch.device(def_device).type
