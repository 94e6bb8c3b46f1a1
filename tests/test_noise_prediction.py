"corrupt's algebra, the noise predictor's shapes and errors, iterative denoising, cached models and their error messages."
import pytest, torch
from miniai.noise_prediction import (corrupt, NoisePredictor, NoisePredCB, denoise_iteratively, cached_model, read_checkpoint,
                                     ascend, mnist_tensors)
from miniai.data import DataError
from miniai.learner import save_atomic

def test_corrupt_endpoints_and_fraction_step():
    x0, eps = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    x, e = corrupt(x0, torch.tensor([0., 1., .5]), eps)
    assert e is eps
    torch.testing.assert_close(x[0], x0[0]); torch.testing.assert_close(x[1], eps[1])
    torch.testing.assert_close(x[2], (x0[2] + eps[2]) / 2)
    # removing a fraction C of the true added noise lands on the same mixture with (1-C)·a
    a, C = torch.tensor([.8, .8, .8]), 0.25
    xa, _ = corrupt(x0, a, eps)
    torch.testing.assert_close(xa - C * (xa - x0), corrupt(x0, a * (1 - C), eps)[0])

def test_noise_predictor_shapes_labels_errors():
    torch.manual_seed(0)
    m = NoisePredictor()
    x = torch.randn(2, 1, 28, 28)
    assert m(x).shape == (2, 1, 28, 28)
    oh = torch.eye(10)[:2]
    assert not torch.allclose(m(x, oh), m(x))        # the label changes the prediction
    torch.testing.assert_close(m(x, torch.zeros(2, 10)), m(x))
    with pytest.raises(ValueError, match=r'expected \(B, 1, 28, 28\)'): m(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r'one-hot labels \(2, 10\)'): m(x, torch.tensor([1, 2]))

def test_noise_pred_cb_batches():
    class L: pass
    learn = L(); learn.batch = (torch.zeros(64, 1, 28, 28), torch.arange(64) % 10)
    torch.manual_seed(0)
    NoisePredCB(p_drop=0.5).before_batch(learn)
    x, oh, n = learn.batch
    torch.testing.assert_close(x - 0, n)                          # clean zeros: all of x is added noise
    kept = oh.sum(1)
    assert set(kept.tolist()) == {0., 1.} and 10 < kept.sum() < 54  # about half the labels dropped
    assert (oh[kept == 1].argmax(1) == (torch.arange(64) % 10)[kept == 1]).all()

def test_denoise_iteratively_seeded_and_checked():
    torch.manual_seed(0)
    m = NoisePredictor().eval()
    a = denoise_iteratively(m, 3, C=0.5, steps=3, seed=1)
    b, snaps = denoise_iteratively(m, 3, C=0.5, steps=3, seed=1, keep=3)
    assert torch.equal(a, b) and len(snaps) == 4
    with pytest.raises(ValueError, match='C must be in'): denoise_iteratively(m, 1, C=0.)

def test_ascend_raises_score():
    target = torch.randn(1, 1, 4, 4)
    f = lambda x: -(x - target).pow(2).flatten(1).sum(1)
    path = ascend(f, torch.zeros(1, 1, 4, 4), lr=0.1, steps=10, keep=5)
    scores = [s.item() for _, s in path]
    assert scores == sorted(scores) and scores[-1] > scores[0]

def test_mnist_tensors():
    xt, yt, xv, yv = mnist_tensors()
    assert xt.shape == (4000, 1, 28, 28) and xv.shape == (1000, 1, 28, 28)
    assert xt.min() == -1 and xt.max() == 1 and torch.bincount(yt).tolist() == [400] * 10

def test_cached_model(tmp_path, monkeypatch):
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path))
    calls = []
    def train(model):
        calls.append(1)
        with torch.no_grad(): model.weight.fill_(2.)
        return {'note': 'trained'}
    m, rec = cached_model('lin.pth', lambda: torch.nn.Linear(3, 2), train)
    m2, rec2 = cached_model('lin.pth', lambda: torch.nn.Linear(3, 2), train)
    assert calls == [1] and rec2 == rec == {'note': 'trained'}
    torch.testing.assert_close(m2.weight, torch.full((2, 3), 2.))
    torch.testing.assert_close(m2.bias, m.bias)
    with pytest.raises(DataError, match='another architecture'): cached_model('lin.pth', lambda: torch.nn.Linear(4, 2), train)
    (tmp_path / 'models' / 'junk.pth').write_bytes(b'junk')
    with pytest.raises(DataError, match='could not be read'): cached_model('junk.pth', lambda: torch.nn.Linear(3, 2), train)
    save_atomic({'state': 1}, tmp_path / 'models' / 'other.pth')
    with pytest.raises(DataError, match='not a miniai model checkpoint'): read_checkpoint(tmp_path / 'models' / 'other.pth')
