import pytest, torch
from torch import nn
import torch.nn.functional as F
from miniai.resnet import (ResBlock, resnet, summary, autocast_dtype, MixedPrecision, flip_batch, crop_batch, erase_batch, predict,
                           accuracy_of)
from miniai.learner import Learner, TrainCB, MetricsCB, Accuracy, set_seed
from miniai.datasets import DataLoaders


@pytest.mark.parametrize('size,stride,out', [(28, 2, 14), (7, 2, 4), (8, 1, 8)])
def test_resblock_shapes(size, stride, out):
    blk = ResBlock(4, 8, stride=stride)
    assert blk(torch.randn(2, 4, size, size)).shape == (2, 8, out, out)
    same = ResBlock(8, 8)
    assert isinstance(same.idconv, nn.Identity)


def test_resnet_output_and_any_input_size():
    m = resnet((8, 16, 32))
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 10) and m(torch.randn(3, 1, 32, 20)).shape == (3, 10)


def test_summary_changes_nothing_and_counts_right():
    set_seed(0)
    m = resnet((4, 8, 16)); m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    s = summary(m, torch.randn(5, 1, 28, 28) * 3 + 1)
    assert m.training, 'training mode not restored'
    for k, v in m.state_dict().items(): assert torch.equal(v, before[k]), f'{k} changed'  # BN running stats included
    assert s.totals()[0] == sum(p.numel() for p in m.parameters())
    # the stem: a 5x5 conv 1->4 on 28x28 output: 1*4*25*28*28 multiply-adds = 2x that in FLOPs
    assert s[0][3] == pytest.approx(2 * 4 * 25 * 28 * 28 / 1e6)
    assert s[-2][1] == (5, 10) and '| **total** |' in s._repr_markdown_()


def test_summary_of_a_linear_layer():
    s = summary(nn.Sequential(nn.Linear(7, 3)), torch.randn(2, 7))
    assert s[0][2] == 7*3 + 3 and s[0][3] == pytest.approx(2*7*3/1e6)


def test_flip_batch():
    x = torch.randn(6, 1, 5, 5)
    assert torch.equal(flip_batch(x, p=1.), x.flip(-1)) and torch.equal(flip_batch(x, p=0.), x)
    torch.manual_seed(0)
    y = flip_batch(x, p=0.5)
    flipped = [torch.equal(y[i], x[i].flip(-1)) for i in range(6)]
    assert all(f or torch.equal(y[i], x[i]) for i, f in enumerate(flipped)) and 0 < sum(flipped) < 6


def test_crop_batch_is_a_per_image_shift():
    x = torch.arange(2*1*6*6, dtype=torch.float).view(2, 1, 6, 6)
    assert torch.equal(crop_batch(x, pad=0), x)
    torch.manual_seed(1)
    y = crop_batch(x, pad=2, fill=-1.)
    xp = F.pad(x, (2, 2, 2, 2), value=-1.)
    for b in range(2):  # each output image is some 6x6 window of its padded input
        assert any(torch.equal(y[b], xp[b, :, i:i+6, j:j+6]) for i in range(5) for j in range(5))


def test_erase_batch():
    x = torch.randn(4, 1, 10, 10)
    assert torch.equal(erase_batch(x, p=0.), x)
    torch.manual_seed(0)
    y = erase_batch(x, p=1., max_frac=0.3)
    changed = (y != x).flatten(1).sum(1)
    assert (changed > 0).all() and (changed <= 9).all()  # one rectangle of at most 3x3 per image


def test_autocast_dtype():
    assert autocast_dtype('cuda') == torch.float16 and autocast_dtype('mps') is None
    assert autocast_dtype('cpu') in (torch.bfloat16, None)


def _tiny_dls(n=256):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g); y = (x.mean((1, 2, 3)) > 0).long()
    batches = lambda: [(x[i:i+32], y[i:i+32]) for i in range(0, n, 32)]
    class DL(list): pass
    return DataLoaders(DL(batches()), DL(batches()))


def test_mixed_precision_trains_and_is_reproducible():
    def fit():
        set_seed(3)
        learn = Learner(resnet((4, 8)), _tiny_dls(), F.cross_entropy, lr=0.05, cbs=[MixedPrecision('cpu'), MetricsCB(Accuracy())],
                        opt_func=torch.optim.AdamW)
        learn.fit(3)
        return learn.metrics.hist
    h1, h2 = fit(), fit()
    assert h1[-1]['train_loss'] < h1[0]['train_loss'] and h1[-1]['valid_accuracy'] > 0.7
    assert [{k: v for k, v in r.items() if k != 'time'} for r in h1] == [{k: v for k, v in r.items() if k != 'time'} for r in h2]


def test_predict_with_tta_averages_flips_and_restores_mode():
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)); m.train()
    dl = [(torch.randn(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1]))]
    p, t = predict(m, dl, tta=True)
    x = dl[0][0]
    expected = (m(x).softmax(1) + m(x.flip(-1)).softmax(1)) / 2
    torch.testing.assert_close(p, expected.detach()) ; assert m.training and torch.equal(t, dl[0][1])
    assert accuracy_of(torch.eye(3)[[0, 1, 1]], torch.tensor([0, 1, 2])) == pytest.approx(2/3)

def test_resnet_full_resolution_blocks():
    m0, m2 = resnet((8, 16, 32), n_full=0), resnet((8, 16, 32), n_full=2)
    assert len(m2) == len(m0) + 2
    full = [b for b in m2 if isinstance(b, ResBlock) and isinstance(b.idconv, torch.nn.Identity)]
    assert len(full) == 2                                     # stride 1, same channels: identity shortcuts
    x = torch.randn(2, 1, 28, 28)
    assert m2[:3](x).shape == (2, 8, 28, 28) and m2(x).shape == (2, 10)
