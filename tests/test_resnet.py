import pytest, torch
from torch import nn
import torch.nn.functional as F
import warnings
import miniai.learner
from miniai.datasets import DataLoaders
from miniai.resnet import ResBlock, resnet, summary, flip_batch, crop_batch, erase_batch, predict, accuracy_of
from miniai.learner import Learner, TrainCB, MetricsCB, Accuracy, set_seed, autocast_dtype, MixedPrecision, Callback


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


def test_mixed_precision_trains_and_is_reproducible(image_dls):
    def fit():
        set_seed(3)
        learn = Learner(resnet((4, 8)), image_dls(), F.cross_entropy, lr=0.05, cbs=[MixedPrecision('cpu'), MetricsCB(Accuracy())],
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


# --- mixed precision: one home (miniai.learner), a clean float32 fallback, n_inp ------------------------------------

X86 = dict(architecture='x86_64', avx2=True, avx512_f=False, avx512_bf16=False, amx_bf16=False)

@pytest.mark.parametrize('caps,expected', [
    (X86, None),                                                        # AVX2 only, like this machine: float32
    ({**X86, 'avx512_f': True}, None),                                  # AVX-512 without BF16: oneDNN would emulate, slowly
    ({**X86, 'avx512_f': True, 'avx512_bf16': True}, torch.bfloat16),   # AVX512-BF16
    ({**X86, 'amx_bf16': True}, torch.bfloat16)])                       # AMX
def test_autocast_dtype_asks_for_the_bf16_instructions(monkeypatch, caps, expected):
    monkeypatch.setattr(torch.cpu, 'get_capabilities', lambda: caps)
    assert autocast_dtype('cpu') is expected and autocast_dtype(torch.device('cpu')) is expected
    assert MixedPrecision('cpu').dtype is expected


def test_autocast_dtype_on_this_machine_and_bad_devices():
    caps = torch.cpu.get_capabilities()
    if caps.get('architecture') == 'x86_64':
        assert (autocast_dtype('cpu') is torch.bfloat16) == bool(caps['avx512_bf16'] or caps['amx_bf16'])
    with pytest.raises(ValueError, match="'gpu' is not a device"): autocast_dtype('gpu')
    assert not hasattr(__import__('miniai.resnet').resnet, 'MixedPrecision')  # one home: miniai.learner


def test_mixed_precision_falls_back_to_exactly_the_float32_step(monkeypatch, image_dls):
    "Where autocast_dtype says None, MixedPrecision trains exactly as TrainCB does, without autocast and without warnings."
    monkeypatch.setattr(miniai.learner, 'autocast_dtype', lambda device: None)
    seen = []
    class Watch(Callback):
        def after_batch(self, learn): seen.append((torch.is_autocast_enabled('cpu'), learn.preds.dtype))
    def fit(cb):
        set_seed(1); model = resnet((4, 8))
        Learner(model, image_dls(), lr=0.05, cbs=[cb, Watch()], opt_func=torch.optim.AdamW).fit(1)
        return model
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        mp = MixedPrecision('cpu'); m1 = fit(mp)
    m2 = fit(TrainCB())
    assert mp.dtype is None and mp.scaler is None and set(seen) == {(False, torch.float32)}
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_mixed_precision_in_bf16_honours_n_inp_and_leaves_no_autocast_on(monkeypatch):
    "Forced to bf16 (emulated where the CPU lacks it): batches (x, y, w) with n_inp=1; autocast only inside the step."
    monkeypatch.setattr(miniai.learner, 'autocast_dtype', lambda device: torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    x, y, w = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 2, (64,), generator=g), torch.rand(64, generator=g)
    batches = [(x[i:i+16], y[i:i+16], w[i:i+16]) for i in range(0, 64, 16)]
    wce = lambda p, y, w: (F.cross_entropy(p.float(), y, reduction='none') * w).mean()
    dtypes = []
    class Watch(Callback):
        order = 1
        def after_batch(self, learn): dtypes.append(learn.preds.dtype)
        def cleanup_fit(self, learn): dtypes.append(torch.is_autocast_enabled('cpu'))
    mp = MixedPrecision('cpu', n_inp=1)
    learn = Learner(resnet((4, 8), n_out=2), DataLoaders(batches, batches), wce, lr=0.05, cbs=[mp, Watch(), MetricsCB(Accuracy())])
    learn.fit(1)
    assert mp.dtype is torch.bfloat16 and dtypes[0] == torch.bfloat16 and dtypes[-1] is False
    assert learn.metrics.hist[0]['valid_loss'] > 0 and next(learn.model.parameters()).dtype == torch.float32
    class Boom(Callback):
        def get_loss(self, learn): raise KeyError('boom')  # fails after the autocast of predict was left
    with pytest.raises(KeyError): Learner(resnet((4, 8), n_out=2), DataLoaders(batches, batches), wce, cbs=[mp, Boom()]).fit(1)
    assert not torch.is_autocast_enabled('cpu')
    with pytest.raises(ValueError, match='n_inp must be at least 1'): MixedPrecision('cpu', n_inp=0)


# --- predict, accuracy_of and the building blocks refuse bad input -------------------------------------------------

def test_predict_restores_each_modules_mode_and_handles_n_inp():
    m = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 3)); m.eval(); m[1].train()
    class Two(nn.Module):
        def __init__(self): super().__init__(); self.m = m
        def forward(self, a, b): return self.m(a + b)
    x = torch.randn(5, 1, 4, 4)
    p, t = predict(Two(), [(x, x, torch.arange(5))], n_inp=2)
    assert p.shape == (5, 3) and torch.equal(t, torch.arange(5)) and not m.training and m[1].training
    with pytest.raises(ValueError, match='dl gave no batches'): predict(m, [])


def test_accuracy_of_checks_its_input():
    assert accuracy_of.__doc__ and accuracy_of(torch.eye(3), torch.tensor([0, 1, 1])) == pytest.approx(2/3)
    with pytest.raises(ValueError, match=r'expected probabilities \(N, n_classes\) and targets \(N,\)'): accuracy_of(torch.eye(3), torch.zeros(4))
    with pytest.raises(ValueError, match='no items'): accuracy_of(torch.zeros(0, 3), torch.zeros(0))


@pytest.mark.parametrize('make,exc,match', [
    (lambda: resnet(()), ValueError, 'nfs must be a non-empty list'), (lambda: resnet((8, 0)), ValueError, 'each of nfs'),
    (lambda: resnet(n_out=True), TypeError, 'n_out must be a whole number'), (lambda: resnet(n_full=-1), ValueError, 'n_full'),
    (lambda: ResBlock(4, 8, stride=0), ValueError, 'stride must be at least 1'),
    (lambda: flip_batch(torch.zeros(2, 4, 4)), ValueError, r'flip_batch: expected a batch of images \(B, C, H, W\)'),
    (lambda: flip_batch(torch.zeros(2, 1, 4, 4), p=1.5), ValueError, 'p must be a probability'),
    (lambda: crop_batch(torch.zeros(2, 1, 4, 4), pad=-1), ValueError, 'pad must be at least 0'),
    (lambda: erase_batch(torch.zeros(2, 1, 4, 4), max_frac=0), ValueError, 'max_frac must be above 0')])
def test_bad_input_to_the_building_blocks(make, exc, match):
    with pytest.raises(exc, match=match): make()


def test_every_public_name_has_its_own_docstring():
    import miniai.resnet, miniai.learner, miniai.sgd, miniai.datasets, inspect
    for mod in (miniai.resnet, miniai.learner, miniai.sgd, miniai.datasets):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isclass(obj) or inspect.isfunction(obj): assert obj.__dict__.get('__doc__') or obj.__doc__, f'{mod.__name__}.{name}'
