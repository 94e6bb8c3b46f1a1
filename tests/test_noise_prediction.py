"""corrupt's algebra, the noise predictor's shapes and errors, iterative denoising, gradient ascent,
bad arguments, and the cached models' recipes."""
import inspect, os, subprocess, sys
import pytest, torch
import miniai.noise_prediction as npred
from miniai.noise_prediction import (corrupt, NoisePredictor, NoisePredCB, denoise_iteratively, ascend,
                                     train_noise_predictor, mnist_classifier)
from miniai.datasets import mnist_tensors

BAD = (TypeError, ValueError)

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

@pytest.mark.parametrize('a, eps, match', [
    (torch.tensor([.5, .5]), None, r'one noise amount per image, shape \(3,\)'),   # too few amounts
    (0.5, None, r'one noise amount per image'),                                      # a number, not a tensor
    (torch.tensor([.5, 1.5, .2]), None, r'in \[0, 1\]'),
    (torch.tensor([.5, float('nan'), .2]), None, r'in \[0, 1\]'),
    (torch.tensor([.5, .5, .5]), torch.randn(3, 1, 4, 5), r"eps must have the images' shape"),
])
def test_corrupt_bad_input(a, eps, match):
    with pytest.raises(ValueError, match=match): corrupt(torch.randn(3, 1, 4, 4), a, eps)

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
    for bad in (dict(p_drop=1.5), dict(p_drop=-0.1), dict(n_classes=0), dict(p_drop='0.1')):
        with pytest.raises(BAD, match='NoisePredCB'): NoisePredCB(**bad)

def test_denoise_iteratively_seeded_and_checked():
    torch.manual_seed(0)
    m = NoisePredictor().eval()
    a = denoise_iteratively(m, 3, C=0.5, steps=3, seed=1)
    b, snaps = denoise_iteratively(m, 3, C=0.5, steps=3, seed=1, keep=3)
    assert torch.equal(a, b) and len(snaps) == 4
    with pytest.raises(ValueError, match=r'C must be a number in \(0, 1\]'): denoise_iteratively(m, 1, C=0.)

@pytest.mark.parametrize('steps, keep', [(10, 4), (50, 5), (7, 7), (9, 2)])
def test_denoise_iteratively_keeps_what_it_is_asked(steps, keep):
    "`keep` snapshots besides the start, the last one after the last step, evenly spaced."
    calls = []
    class Count(torch.nn.Module):
        n_classes = 10
        def __init__(self): super().__init__(); self.w = torch.nn.Parameter(torch.zeros(()))
        def forward(self, x, label=None): calls.append(1); return x * 0 + 1   # after i steps: x - C·i
    final, snaps = denoise_iteratively(Count(), 2, C=0.5, steps=steps, seed=0, keep=keep)
    assert len(snaps) == keep + 1 and len(calls) == steps + 1
    start = snaps[0]
    after = [round(((start - s) / 0.5).mean().item()) for s in snaps]       # steps taken before each snapshot
    assert after[0] == 0 and after[-1] == steps and after == sorted(set(after))
    gaps = [b - a for a, b in zip(after, after[1:])]
    assert max(gaps) - min(gaps) <= 1

@pytest.mark.parametrize('kwargs, match', [
    (dict(n=0), 'n must be an integer >= 1'), (dict(n=-2), 'n must be'), (dict(n=2.5), 'n must be'),
    (dict(steps=-1), 'steps must be'), (dict(C=1.5), 'C must be'), (dict(C=float('nan')), 'C must be'),
    (dict(keep=6, steps=5), r'keep must be an integer from 0 to 5'), (dict(keep=-1), 'keep must be'),
    (dict(seed=1.5), 'seed must be an integer'),
    (dict(labels=torch.tensor([1, 2])), r'shape \(3,\)'),
    (dict(labels=torch.tensor([1, 2, 10])), r'labels must be in 0\.\.9'),
    (dict(labels=torch.tensor([-1, 2, 3])), r'labels must be in 0\.\.9'),
    (dict(labels=torch.tensor([1., 2., 3.])), 'integer tensor'),
])
def test_denoise_iteratively_bad_input(kwargs, match):
    torch.manual_seed(0)
    m = NoisePredictor(nfs=(8, 8, 8))
    with pytest.raises(BAD, match=match): denoise_iteratively(m, **{**dict(n=3, steps=5), **kwargs})

def test_denoise_iteratively_labels_for_a_model_without_labels():
    with pytest.raises(ValueError, match='takes none'):
        denoise_iteratively(NoisePredictor(nfs=(8, 8, 8), n_classes=0), 2, labels=torch.tensor([1, 2]))

def test_denoise_iteratively_restores_the_mode():
    torch.manual_seed(0)
    m = NoisePredictor(nfs=(8, 8, 8)).train()
    m.down1.eval()                                                   # a mixed state comes back exactly
    denoise_iteratively(m, 2, steps=2)
    assert m.training and not m.down1.training and m.down2.training
    class Boom(NoisePredictor):
        def forward(self, x, label=None):
            assert not self.training                                 # the sampler runs the model in eval mode
            raise RuntimeError('boom')
    b = Boom(nfs=(8, 8, 8)).train()
    with pytest.raises(RuntimeError, match='boom'): denoise_iteratively(b, 2, steps=2)
    assert all(mod.training for mod in b.modules())

def test_ascend_raises_score():
    target = torch.randn(1, 1, 4, 4)
    f = lambda x: -(x - target).pow(2).flatten(1).sum(1)
    path = ascend(f, torch.zeros(1, 1, 4, 4), lr=0.1, steps=10, keep=5)
    scores = [s.item() for _, s in path]
    assert scores == sorted(scores) and scores[-1] > scores[0]

@pytest.mark.parametrize('steps, keep', [(10, 4), (40, 5), (3, 3), (7, 2)])
def test_ascend_returns_keep_plus_one_snapshots(steps, keep):
    seen = []
    def f(x): seen.append(x.detach().clone()); return x.flatten(1).sum(1)   # gradient 1: x grows by lr a step
    path = ascend(f, torch.zeros(1, 1, 2, 2), lr=1., steps=steps, keep=keep)
    assert len(path) == keep + 1
    at = [round(x.mean().item()) for x, _ in path]
    assert at[0] == 0 and at[-1] == steps and at == sorted(set(at))

@pytest.mark.parametrize('kwargs, match', [
    (dict(steps=0), 'steps must be an integer >= 1'), (dict(keep=0), 'keep must be an integer from 1 to 20'),
    (dict(keep=21), 'keep must be'), (dict(lr=0.), 'lr must be'), (dict(lr=float('inf')), 'lr must be'),
    (dict(lr='1'), 'lr must be'),
])
def test_ascend_bad_input(kwargs, match):
    f = lambda x: x.flatten(1).sum(1)
    with pytest.raises(BAD, match=match): ascend(f, torch.zeros(1, 1, 2, 2), **kwargs)
    with pytest.raises(ValueError, match=r'one score per image, \(2,\)'):
        ascend(lambda x: x.sum(), torch.zeros(2, 1, 2, 2))
    with pytest.raises(TypeError, match='f must map images to scores'): ascend(3, torch.zeros(2, 1, 2, 2))

def test_mnist_tensors():
    xt, yt, xv, yv = mnist_tensors()
    assert xt.shape == (4000, 1, 28, 28) and xv.shape == (1000, 1, 28, 28)
    assert xt.min() == -1 and xt.max() == 1 and torch.bincount(yt).tolist() == [400] * 10

# sizes are chosen when the function is called, and the cache key is the whole recipe

@pytest.mark.parametrize('f', [train_noise_predictor, mnist_classifier])
def test_no_run_mode_in_default_arguments(f):
    assert inspect.signature(f).parameters['epochs'].default is None

@pytest.fixture
def recipes(monkeypatch):
    "Replace cached_model with a recorder: (name, recipe) of each call, nothing trained."
    calls = []
    def fake(name, build, train, recipe, retrain=False): calls.append((name, recipe)); return build(), {}
    monkeypatch.setattr(npred, 'cached_model', fake)
    return calls

@pytest.mark.parametrize('f, full, quick', [(train_noise_predictor, 25, 2), (mnist_classifier, 10, 1)])
def test_sizes_resolved_at_call_time(recipes, monkeypatch, f, full, quick):
    monkeypatch.setenv('MINIAI_QUICK', '1'); f()
    monkeypatch.setenv('MINIAI_QUICK', '0'); f()
    monkeypatch.delenv('MINIAI_QUICK'); f(epochs=3)
    assert [r['epochs'] for _, r in recipes] == [quick, full, 3]
    monkeypatch.setenv('MINIAI_QUICK', 'banana')
    with pytest.raises(ValueError, match='MINIAI_QUICK'): f()

def test_recipes_hold_every_setting(recipes):
    train_noise_predictor(epochs=2); mnist_classifier(epochs=1)
    (n1, r1), (n2, r2) = recipes
    assert n1 == 'noise_predictor' and n2 == 'mnist_classifier'
    assert r1 == {'net': {'nfs': (32, 64, 128), 'n_classes': 10}, 'noise': {'p_drop': 0.1, 'n_classes': 10},
                  'epochs': 2, 'bs': 128, 'lr': 3e-3, 'seed': 42}
    assert r2 == {'net': {'nfs': (16, 32, 64, 128), 'n_out': 10, 'n_in': 1, 'n_full': 0},
                  'epochs': 1, 'bs': 128, 'lr': 1e-2, 'wd': 1e-2, 'seed': 42}

@pytest.mark.parametrize('f', [train_noise_predictor, mnist_classifier])
@pytest.mark.parametrize('epochs', [0, -1, 2.5, '3'])
def test_bad_epochs(recipes, f, epochs):
    with pytest.raises(BAD, match='epochs must be an integer >= 1'): f(epochs=epochs)
    assert not recipes

def test_import_with_a_bad_quick_value():
    "A bad MINIAI_QUICK is an error when a size is needed, not when the module is imported."
    code = "import miniai.noise_prediction, miniai.ddpm; print('imported')"
    env = {**os.environ, 'MINIAI_QUICK': 'banana'}
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and 'imported' in r.stdout, r.stderr

def test_train_noise_predictor_trains_and_caches(tmp_path, monkeypatch):
    "Through the cache (on 64 digits, to be quick): trained once, then loaded, same weights and record."
    from miniai.datasets import DataLoaders, BatchDataset
    xt, yt, xv, yv = mnist_tensors()
    monkeypatch.setattr(npred, 'mnist_dls', lambda bs, seed=None: DataLoaders.from_datasets(
        BatchDataset(xt[:64], yt[:64]), BatchDataset(xv[:32], yv[:32]), bs, batched=True, seed=seed))
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path))
    m1, r1 = train_noise_predictor(epochs=1, bs=32)
    files = list((tmp_path / 'models').glob('noise_predictor-*.pth'))
    assert len(files) == 1 and r1['recipe']['epochs'] == 1 and len(r1['hist']) == 1 and r1['seed'] == 42
    m2, r2 = train_noise_predictor(epochs=1, bs=32)
    same = lambda a, b: all(map(torch.equal, a.state_dict().values(), b.state_dict().values()))
    assert r2 == r1 and same(m1, m2)
    torch.manual_seed(123)                            # the recipe's seed decides, not the global state
    m3, _ = train_noise_predictor(epochs=1, bs=32, retrain=True)
    assert same(m1, m3)
    train_noise_predictor(epochs=1, bs=32, lr=1e-3)                      # another setting: another model
    assert len(list((tmp_path / 'models').glob('noise_predictor-*.pth'))) == 2


def test_noise_predictor_settings_and_inputs_are_checked():
    with pytest.raises(ValueError, match=r'NoisePredictor: nfs must be 3 channel counts, got \(32, 64\)'):
        NoisePredictor(nfs=(32, 64))
    with pytest.raises(ValueError, match='each of nfs must be a multiple of 8'): NoisePredictor(nfs=(8, 12, 16))
    with pytest.raises(TypeError, match='nfs must be a non-empty list or tuple'): NoisePredictor(nfs=None)
    with pytest.raises(ValueError, match='n_classes must be an integer >= 0'): NoisePredictor(n_classes=-1)
    m = NoisePredictor(nfs=(8, 8, 8))
    with pytest.raises(TypeError, match='x must be a float tensor of digits'): m(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(TypeError, match=r'label must be a float one-hot tensor.*F.one_hot'):
        m(torch.zeros(2, 1, 28, 28), torch.eye(10, dtype=torch.long)[:2])
    with pytest.raises(TypeError, match='label must be a float one-hot tensor'): m(torch.zeros(2, 1, 28, 28), [[1] * 10] * 2)
    assert m(torch.zeros(2, 1, 28, 28), torch.eye(10)[:2]).shape == (2, 1, 28, 28)
