"""DDIM against diffusers' DDIMScheduler and its input checks; FID against closed forms and scipy, KID's unbiasedness;
the feature extractor's recipe and cache; class balance, scores over seeds; one clear error for each kind of bad input."""
import ast, math, subprocess, sys, warnings
from pathlib import Path
import diffusers, numpy as np, pytest, scipy.linalg, torch
from torch import nn
import miniai.ddim_fid as ddim_fid
from miniai.ddpm import NoiseSchedule, timesteps, ddim_step
from miniai.ddim_fid import (fid, kid, frechet_distance, gaussian_stats, fashion_features, fashion_classifier,
                             train_fashion_classifier, class_balance, sample_scores, scores_over_seeds)
from miniai.resnet import resnet

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- DDIM
@pytest.mark.parametrize('eta', [0., 1., 0.5])
@pytest.mark.parametrize('n', [10, 50])
def test_ddim_step_matches_diffusers(eta, n):
    sched = NoiseSchedule.cosine()
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule='squaredcos_cap_v2', clip_sample=False,
                                  timestep_spacing='trailing')
    ref.set_timesteps(n)
    ts = timesteps(1000, n)
    assert ts == ref.timesteps.tolist()
    x, eps = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    for i in range(n):
        t, t_prev = ts[i], (ts[i+1] if i+1 < n else -1)
        ours = ddim_step(x, eps, t, t_prev, sched, generator=torch.Generator().manual_seed(i), eta=eta)
        theirs = ref.step(eps, t, x, eta=eta, generator=torch.Generator().manual_seed(i)).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)

@pytest.mark.parametrize('eta', [0., 1.])
def test_clipped_ddim_step_matches_diffusers(eta):
    sched = NoiseSchedule.cosine()
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule='squaredcos_cap_v2', clip_sample=True,
                                  timestep_spacing='trailing')
    ref.set_timesteps(25)
    ts = timesteps(1000, 25)
    x, eps = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    for i in range(25):
        t_prev = ts[i+1] if i+1 < 25 else -1
        g = lambda: torch.Generator().manual_seed(i)
        theirs = ref.step(eps, ts[i], x, eta=eta, generator=g(), use_clipped_model_output=True).prev_sample
        ours = ddim_step(x, eps, ts[i], t_prev, sched, generator=g(), eta=eta, clip=1.)
        # from t=999 (ᾱ ≈ 2e-9) diffusers' float32 arithmetic is off by ~2e-4; ours is float64-accurate (test below)
        torch.testing.assert_close(ours, theirs, **(dict(rtol=1e-4, atol=1e-5) if i else dict(rtol=1e-2, atol=1e-3)))
        if i < 10:  # x0 is clamped at these noise levels, so keeping the model's ε would give another step
            assert not torch.allclose(ref.step(eps, ts[i], x, eta=eta, generator=g()).prev_sample, theirs, atol=1e-3)

def test_ddim_deterministic_and_clip():
    sched = NoiseSchedule.cosine()
    x, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    torch.testing.assert_close(ddim_step(x, eps, 500, 400, sched), ddim_step(x, eps, 500, 400, sched), rtol=0, atol=0)
    a = ddim_step(x, eps, 500, 400, sched, generator=torch.Generator().manual_seed(0), eta=1.)
    assert not torch.allclose(a, ddim_step(x, eps, 500, 400, sched))
    assert ddim_step(x, eps * 3, 10, -1, sched, clip=1.).abs().max() <= 1 + 1e-6
    # a big η=1 jump from the noisiest step: the re-noising coefficient rounds below 0, and must not give NaN
    g = torch.Generator().manual_seed(0)
    assert torch.isfinite(ddim_step(x, eps, 999, 799, sched, generator=g, eta=1., clip=1.)).all()

def ddim_float64(x, eps, t, t_prev, sched, z, eta, clip):
    "The DDIM step done wholly in float64, with the fresh noise `z` given."
    at = sched.abar[t].double(); ap = sched.abar[t_prev].double() if t_prev >= 0 else torch.tensor(1., dtype=torch.float64)
    x, eps = x.double(), eps.double()
    x0 = (x - (1 - at).sqrt() * eps) / at.sqrt()
    if clip is not None: x0 = x0.clamp(-clip, clip); eps = (x - at.sqrt() * x0) / (1 - at).sqrt()
    sig = eta * ((1 - ap) / (1 - at) * (1 - at / ap)).sqrt()
    return ap.sqrt() * x0 + (1 - ap - sig**2).clamp(min=0).sqrt() * eps + sig * z.double()

@pytest.mark.parametrize('t, t_prev, eta, clip', [(999, -1, 0., None), (999, 959, 1., 1.), (999, 959, 0.5, None),
                                                  (999, 0, 1., None), (500, 400, 1., 1.)])
def test_ddim_step_big_jumps_are_float64_accurate(t, t_prev, eta, clip):
    "From t=999 (ᾱ ≈ 2e-9) too, the float32 step agrees with the same step done in float64."
    sched = NoiseSchedule.cosine()
    x, eps = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    ours = ddim_step(x, eps, t, t_prev, sched, generator=torch.Generator().manual_seed(7), eta=eta, clip=clip)
    ref = ddim_float64(x, eps, t, t_prev, sched, z, eta, clip)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())

def test_ddim_step_lives_with_the_samplers():
    import miniai.ddpm
    assert ddim_step.__module__ == 'miniai.ddpm' and 'ddim_step' in miniai.ddpm.__all__
    assert not hasattr(ddim_fid, 'ddim_step')
    # FID and KID do not import a sampler, and nothing private is imported across modules
    code = "import sys, miniai.ddim_fid; assert 'miniai.ddpm' not in sys.modules, 'ddim_fid imports ddpm'"
    subprocess.run([sys.executable, '-c', code], check=True, cwd=ROOT)
    tree = ast.parse((ROOT/'miniai'/'ddim_fid.py').read_text())
    private = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names if a.name.startswith('_')]
    assert not private, private

@pytest.mark.parametrize('t, t_prev', [(-1, -2), (1000, 500), (500, 500), (400, 500), (10, -2)])
def test_ddim_step_rejects_time_steps_out_of_range(t, t_prev):
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError): ddim_step(x, x, t, t_prev, NoiseSchedule.cosine())

@pytest.mark.parametrize('t, t_prev', [(500.5, 400), ('500', 400), (500, None), (True, -1)])
def test_ddim_step_rejects_time_steps_that_are_not_integers(t, t_prev):
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises((TypeError, ValueError)): ddim_step(x, x, t, t_prev, NoiseSchedule.cosine())

@pytest.mark.parametrize('kw, match', [(dict(eta=-0.1), 'eta'), (dict(eta=1.5), 'eta'), (dict(eta=True), 'eta'),
                                        (dict(eta='1'), 'eta'), (dict(eta=math.nan), 'eta'),
                                        (dict(clip=0.), 'clip'), (dict(clip=-1.), 'clip'), (dict(clip=math.inf), 'clip'),
                                        (dict(clip=True), 'clip'), (dict(clip='1'), 'clip')])
def test_ddim_step_rejects_bad_eta_and_clip(kw, match):
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match=f'ddim_step: {match}'): ddim_step(x, x, 500, 400, NoiseSchedule.cosine(), **kw)

def test_ddim_step_rejects_mismatched_tensors():
    sched = NoiseSchedule.cosine()
    with pytest.raises(ValueError, match='one shape'): ddim_step(torch.randn(2, 1, 4, 4), torch.randn(1, 1, 4, 4), 5, 4, sched)
    with pytest.raises(ValueError, match='one shape'): ddim_step(torch.randn(1, 1, 4, 4), [0.], 5, 4, sched)


# ---------------------------------------------------------------- FID and KID
def test_fid_closed_form_and_identity():
    torch.manual_seed(0)
    a, b = torch.rand(6, dtype=torch.float64) + .1, torch.rand(6, dtype=torch.float64) + .1
    mu = torch.randn(6, dtype=torch.float64)
    expected = (mu.pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum()).item()
    got = frechet_distance(mu, torch.diag(a), torch.zeros(6, dtype=torch.float64), torch.diag(b))
    assert math.isclose(got, expected, rel_tol=1e-9)
    f = torch.randn(300, 8)
    assert abs(fid(f, f)) < 1e-8
    assert fid(f, f + 1) == pytest.approx(8.0, rel=1e-6)   # a shift by 1 in 8 dimensions

def test_fid_matches_scipy():
    torch.manual_seed(1)
    f1 = torch.randn(500, 16, dtype=torch.float64)
    f2 = torch.randn(300, 16, dtype=torch.float64) @ torch.randn(16, 16, dtype=torch.float64) * .5
    (m1, s1), (m2, s2) = gaussian_stats(f1), gaussian_stats(f2)
    tr = np.trace(scipy.linalg.sqrtm(s1.numpy() @ s2.numpy())).real
    ref = ((m1 - m2).pow(2).sum() + s1.trace() + s2.trace() - 2 * tr).item()
    assert fid(f1, f2) == pytest.approx(ref, rel=1e-8)

def test_gaussian_stats_one_dimension():
    mu, sig = gaussian_stats(torch.tensor([[1.], [3.]]))
    assert mu.shape == (1,) and sig.shape == (1, 1) and sig.item() == pytest.approx(2.)

def test_kid_unbiased_and_sensitive():
    g = torch.Generator().manual_seed(0)
    same = [kid(torch.randn(100, 8, generator=g), torch.randn(100, 8, generator=g)) for _ in range(50)]
    assert abs(sum(same) / len(same)) < 0.01                # ~0 on average for one distribution
    shifted = kid(torch.randn(100, 8, generator=g), torch.randn(100, 8, generator=g) + 1)
    assert shifted > 10 * max(abs(s) for s in same)

def test_fid_warns_once_with_fewer_images_than_dimensions(monkeypatch):
    monkeypatch.setattr(ddim_fid, '_fid_warned', set())
    g = torch.Generator().manual_seed(0)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        for _ in range(3): fid(torch.randn(10, 20, generator=g), torch.randn(15, 20, generator=g))  # both too small
    assert len(w) == 1 and 'only 10 images for 20 feature dimensions' in str(w[0].message)   # one warning, not 6
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        fid(torch.randn(30, 20, generator=g), torch.randn(12, 20, generator=g))  # another size: warned again
    assert len(w) == 1 and 'only 12 images for 20' in str(w[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                          # enough images: no warning at all
        fid(torch.randn(50, 20, generator=g), torch.randn(60, 20, generator=g))
        kid(torch.randn(10, 20, generator=g), torch.randn(15, 20, generator=g))  # KID has no such bias

@pytest.mark.parametrize('fn', [fid, kid])
@pytest.mark.parametrize('bad, err, match', [
    ([[0., 1.], [1., 0.]], TypeError, 'torch tensor'),
    (torch.ones(5, 3, dtype=torch.long), TypeError, 'real floats'),
    (torch.ones(5, 3, dtype=torch.complex64), TypeError, 'real floats'),
    (torch.ones(5), ValueError, r'\(N, d\)'),
    (torch.ones(1, 3), ValueError, 'N ≥ 2'),
    (torch.ones(5, 3, 1), ValueError, r'\(N, d\)'),
    (torch.tensor([[0., 1., math.nan]] * 5), ValueError, 'NaN'),
    (torch.tensor([[0., 1., math.inf]] * 5), ValueError, 'NaN or infinite'),
    (torch.ones(5, 4), ValueError, 'dimensions')])
def test_scores_reject_bad_features(fn, bad, err, match):
    good = torch.randn(5, 3)
    with pytest.raises(err, match=match): fn(bad, good)
    with pytest.raises(err, match=match): fn(good, bad)

@pytest.mark.parametrize('bad, err', [(torch.ones(4, dtype=torch.long), TypeError), (torch.ones(4), ValueError),
                                      (torch.ones(1, 2), ValueError), (torch.full((3, 3), math.nan), ValueError)])
def test_gaussian_stats_rejects_bad_features(bad, err):
    with pytest.raises(err, match='gaussian_stats'): gaussian_stats(bad)

def test_frechet_distance_rejects_bad_gaussians():
    mu, sig = torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64)
    with pytest.raises(ValueError, match='sig1 must be'): frechet_distance(mu, torch.eye(2, dtype=torch.float64), mu, sig)
    asym = sig.clone(); asym[0, 1] = 0.5
    with pytest.raises(ValueError, match='not symmetric'): frechet_distance(mu, asym, mu, sig)
    with pytest.raises(ValueError, match='dimensions'):
        frechet_distance(mu, sig, torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    with pytest.raises(TypeError, match='mu2'): frechet_distance(mu, sig, [0., 0., 0.], sig)
    with pytest.raises(TypeError, match='sig2'): frechet_distance(mu, sig, mu, torch.eye(3, dtype=torch.long))
    with pytest.raises(ValueError, match='NaN'): frechet_distance(mu, sig, mu * math.nan, sig)


# ---------------------------------------------------------------- the feature extractor
def lit_pixel_classifier()->nn.Sequential:
    "A stand-in `fashion_classifier` (pooled features, then Linear and BatchNorm1d) whose class is the brightest of pixels 0..9."
    lin = nn.Linear(784, 10, bias=False)
    with torch.no_grad(): lin.weight.zero_(); lin.weight[range(10), range(10)] = 1.
    return nn.Sequential(nn.Flatten(), nn.Identity(), lin, nn.BatchNorm1d(10)).eval()

def images_of(classes)->torch.Tensor:
    "(N, 1, 28, 28) images in [0, 1] with pixel `c` lit for each class c."
    x = torch.zeros(len(classes), 1, 28, 28)
    x.view(len(classes), -1)[range(len(classes)), list(classes)] = 1.
    return x

def test_feature_input_checks():
    clf = resnet((8, 16, 32, 64, 128))
    with pytest.raises(ValueError, match=r'expected \(N, 1, 28, 28\).*to_pixels'): fashion_features(clf, torch.rand(2, 1, 32, 32))
    assert fashion_features(clf, torch.rand(3, 1, 28, 28)).shape == (3, 128)
    assert fashion_features(clf, torch.rand(3, 1, 28, 28)).dtype == torch.float64

@pytest.mark.parametrize('fn', [fashion_features, class_balance])
@pytest.mark.parametrize('bad, err, match', [
    ((torch.rand(2, 1, 28, 28) * 255).to(torch.uint8), TypeError, r'x.float\(\) / 255'),
    (np.zeros((2, 1, 28, 28), dtype=np.float32), TypeError, 'torch tensor'),
    (torch.rand(2, 28, 28), ValueError, r'unsqueeze\(1\)'),
    (torch.rand(0, 1, 28, 28), ValueError, 'N ≥ 1'),
    (torch.rand(2, 3, 28, 28), ValueError, r'\(N, 1, 28, 28\)'),
    (torch.rand(2, 1, 28, 28) * 2 - 1, ValueError, r'in \[0, 1\].*to_pixels'),
    (torch.rand(2, 1, 28, 28) * 255, ValueError, r'in \[0, 1\]'),
    (torch.full((2, 1, 28, 28), math.nan), ValueError, 'NaN')])
def test_image_checks(fn, bad, err, match):
    with pytest.raises(err, match=match): fn(lit_pixel_classifier(), bad)

@pytest.mark.parametrize('fn', [fashion_features, class_balance])
def test_classifier_and_batch_size_checks(fn):
    with pytest.raises(TypeError, match='fashion_classifier'): fn(nn.Linear(784, 10), torch.rand(2, 1, 28, 28))
    with pytest.raises(TypeError, match='fashion_classifier'): fn(lambda x: x, torch.rand(2, 1, 28, 28))
    for bs in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match='bs must be'): fn(lit_pixel_classifier(), torch.rand(2, 1, 28, 28), bs=bs)

@pytest.mark.parametrize('fn', [fashion_features, class_balance])
def test_feature_extraction_restores_every_modules_mode(fn):
    clf = resnet((8, 16, 32, 64, 128)); clf.train(); clf[1].eval()   # a mixed state
    before = [m.training for m in clf.modules()]
    fn(clf, torch.rand(3, 1, 28, 28))
    assert [m.training for m in clf.modules()] == before

def test_features_batched_equal_unbatched():
    clf = resnet((8, 16, 32, 64, 128)).eval(); x = torch.rand(7, 1, 28, 28)
    torch.testing.assert_close(fashion_features(clf, x, bs=3), fashion_features(clf, x, bs=100))

def test_class_balance_counts_and_distance():
    clf = lit_pixel_classifier()
    counts, tv = class_balance(clf, images_of(list(range(10)) * 3))
    assert counts.tolist() == [3] * 10 and tv == pytest.approx(0.)
    counts, tv = class_balance(clf, images_of([0] * 5 + [1] * 5), bs=3)
    assert counts.tolist() == [5, 5] + [0] * 8 and tv == pytest.approx(0.8)   # ½(0.4 + 0.4 + 8 × 0.1)
    assert class_balance(clf, images_of([4] * 6))[1] == pytest.approx(0.9)  # all of one class: the largest distance


# ---------------------------------------------------------------- scores over seeds
def test_sample_scores_and_scores_over_seeds():
    clf = lit_pixel_classifier()
    ref = fashion_features(clf, images_of(list(range(10)) * 10) * 0.9 + 0.05 * torch.rand(100, 1, 28, 28))
    def sample(seed):
        g = torch.Generator().manual_seed(seed)
        return images_of(torch.randint(0, 10, (60,), generator=g).tolist()) * 0.9 + 0.05 * torch.rand(60, 1, 28, 28, generator=g)
    one = sample_scores(clf, sample(3), ref)
    assert set(one) == {'fid', 'kid', 'counts', 'tv'} and one['counts'].sum() == 60
    assert one['fid'] == pytest.approx(fid(fashion_features(clf, sample(3)), ref))
    assert one['kid'] == pytest.approx(kid(fashion_features(clf, sample(3)), ref))
    r = scores_over_seeds(sample, clf, ref, seeds=(3, 4, 5))
    fids = torch.tensor([sample_scores(clf, sample(s), ref)['fid'] for s in (3, 4, 5)], dtype=torch.float64)
    assert r['runs'][0]['fid'] == pytest.approx(one['fid']) and r['seeds'] == [3, 4, 5]
    assert r['fid'] == pytest.approx(fids.mean().item()) and r['fid_std'] == pytest.approx(fids.std().item())
    assert r['fid_std'] > 0 and r['counts'].sum() == 180 and {'kid_std', 'tv_std'} <= set(r)
    single = scores_over_seeds(sample, clf, ref, seeds=[3])
    assert single['fid'] == pytest.approx(one['fid']) and math.isnan(single['fid_std'])

@pytest.mark.parametrize('seeds', [(), 3, (0, 1.5), (True,), '012', None])
def test_scores_over_seeds_rejects_bad_seeds(seeds):
    clf = lit_pixel_classifier()
    with pytest.raises(ValueError, match='seeds must be'):
        scores_over_seeds(lambda s: images_of([0, 1, 2]), clf, torch.randn(5, 784), seeds)

def test_scores_over_seeds_rejects_a_sample_that_is_not_a_function():
    with pytest.raises(TypeError, match='function of the seed'):
        scores_over_seeds(images_of([0, 1]), lit_pixel_classifier(), torch.randn(5, 784))


# ---------------------------------------------------------------- the classifier's recipe and cache
def test_fashion_classifier_sizes_resolve_at_call_time(monkeypatch):
    import inspect
    assert all(p.default is None for n, p in inspect.signature(fashion_classifier).parameters.items() if n in ('epochs', 'n_train', 'nfs'))
    seen = []
    monkeypatch.setattr(ddim_fid, 'cached_model', lambda name, build, train, recipe, retrain: seen.append(recipe) or (build(), recipe))
    for quick in ('0', '1'):
        monkeypatch.setenv('MINIAI_QUICK', quick)
        model, _ = fashion_classifier()
        assert isinstance(model, nn.Sequential)
    full, quick = seen
    assert (full['epochs'], full['n_train'], full['nfs'], full['n_full']) == (5, 60_000, [32, 64, 128, 256, 512], 1)
    assert (quick['epochs'], quick['n_train'], quick['nfs']) == (2, 4096, [8, 16, 32, 64, 128])
    assert full['label_smoothing'] == 0.1 and full['wd'] == 1e-2 and full['lr'] == 1e-2 and full['seed'] == 42
    fashion_classifier(lr=2e-2)
    assert seen[-1]['lr'] == 2e-2   # every training setting is in the recipe, so in the cache file's name

def test_fashion_classifier_trains_caches_and_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path))
    kw = dict(epochs=1, n_train=512, nfs=(4, 8, 8, 8, 8), n_full=0, bs=128)
    model, rec = fashion_classifier(**kw)
    files = list((tmp_path/'models').glob('fashion_classifier-*.pth'))
    assert len(files) == 1 and not model.training
    assert 0 <= rec['test_accuracy'] <= 1 and rec['epochs'] == 1 and rec['autocast'] in ('float32', 'bfloat16', 'float16')
    assert rec['recipe']['nfs'] == [4, 8, 8, 8, 8] and rec['recipe']['n_train'] == 512
    again, rec2 = fashion_classifier(**kw)                          # from the cache: the same weights and record
    assert rec2['test_accuracy'] == rec['test_accuracy'] and len(list((tmp_path/'models').glob('*.pth'))) == 1
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    fashion_classifier(**dict(kw, label_smoothing=0.))           # another recipe: another file
    assert len(list((tmp_path/'models').glob('fashion_classifier-*.pth'))) == 2


def test_every_public_name_has_a_docstring():
    import miniai.ddpm
    for mod, names in ((ddim_fid, ddim_fid.__all__), (miniai.ddpm, ['ddim_step'])):
        for n in names:
            obj = getattr(mod, n)
            assert obj.__doc__ and obj.__doc__ is not type(obj).__doc__, f"{mod.__name__}.{n} has no docstring"
