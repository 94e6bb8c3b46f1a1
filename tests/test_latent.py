"Notebook 15: latents encoded once and cached, the class-conditional U-Net, classifier-free guidance, negative classes, img2img."
import pytest, torch
import torch.nn.functional as F
from miniai.data import DataError
from miniai.ddpm import NoiseSchedule, UNet
from miniai.learner import set_seed
from miniai.autoencoder import kl_autoencoder
from miniai.latent import (ConditionalDDPMCB, ConditionalUNet, decode_latents, encode_latents, fashion_latents, fingerprint,
                           guided_eps, guided_sample, hit_rate, latent_dls, latent_unet, train_latent_ddpm)

NFS = (16, 32, 32)

@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path))
    return tmp_path

@pytest.fixture(scope='module')
def vae():
    torch.manual_seed(0)
    return kl_autoencoder((8, 16, 16)).eval()

def cond_unet(seed=0):
    "A small ConditionalUNet whose zero-initialised embedding projections are nudged, so that the class changes its output."
    torch.manual_seed(seed)
    m = ConditionalUNet(10, n_in=4, n_out=4, nfs=NFS).eval()
    with torch.no_grad():
        for p in m.parameters(): p.add_(0.05 * torch.randn_like(p))
    return m

def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, 8, 8, generator=g), torch.randint(0, 1000, (n,), generator=g), torch.arange(n) % 10

def test_latents_round_trip_shapes_and_scale(vae):
    x = torch.rand(5, 1, 32, 32) * 2 - 1
    z = encode_latents(vae, x, bs=2)
    assert z.shape == (5, 4, 8, 8) and decode_latents(vae, z, bs=2).shape == (5, 1, 32, 32)
    vae.register_to_config(scaling_factor=2.)
    try: assert torch.allclose(encode_latents(vae, x), 2 * vae.encode(x).latent_dist.mean, atol=1e-6)
    finally: vae.register_to_config(scaling_factor=0.18215)

@pytest.mark.parametrize('call, err, match', [
    (lambda v: encode_latents(v, torch.zeros(2, 1, 30, 30)), ValueError, 'multiples of 4'),
    (lambda v: encode_latents(v, torch.zeros(2, 3, 32, 32)), ValueError, r'\(B, 1, H, W\)'),
    (lambda v: decode_latents(v, torch.zeros(2, 3, 8, 8)), ValueError, r'latents \(B, 4, h, w\)'),
    (lambda v: encode_latents(torch.nn.Linear(2, 2), torch.zeros(2, 1, 32, 32)), TypeError, 'AutoencoderKL'),
    (lambda v: encode_latents(v, torch.zeros(2, 1, 32, 32), bs=0), ValueError, 'bs')])
def test_latent_maps_reject_bad_input(vae, call, err, match):
    with pytest.raises(err, match=match): call(vae)

def test_fashion_latents_cached_by_fingerprint_and_read_back_identically(vae, cache):
    a = fashion_latents(vae, n_train=40, n_test=20)
    (files,) = [list((cache / 'latents').glob('*.pt'))]
    assert len(files) == 1 and fingerprint(vae) in files[0].name
    b = fashion_latents(vae, n_train=40, n_test=20)
    assert all(torch.equal(a[s][i], b[s][i]) for s in ('train', 'test') for i in (0, 1))
    assert a['train'][0].shape == (40, 4, 8, 8) and a['test'][1].shape == (20,)
    files[0].write_bytes(b'not a tensor file')
    with pytest.raises(DataError, match='delete it'): fashion_latents(vae, n_train=40, n_test=20)

def test_fingerprint_changes_with_one_weight(vae):
    other = kl_autoencoder((8, 16, 16)); other.load_state_dict(vae.state_dict())
    assert fingerprint(other) == fingerprint(vae)
    with torch.no_grad(): next(other.parameters()).view(-1)[0] += 1e-3
    assert fingerprint(other) != fingerprint(vae)

def test_conditional_unet_hears_the_class_and_no_label():
    m = cond_unet()
    x, t, c = batch()
    with torch.no_grad():
        a, b, u = m(x, t, c), m(x, t, (c + 1) % 10), m(x, t)
    assert a.shape == x.shape and not torch.allclose(a, b) and torch.equal(u, m(x, t, torch.full((6,), 10)))

@pytest.mark.parametrize('c, err, match', [
    (torch.full((6,), 11), ValueError, r'0\.\.10'), (torch.full((6,), -1), ValueError, r'0\.\.10'),
    (torch.zeros(6), TypeError, 'integer'), (torch.zeros(3, dtype=torch.long), TypeError, r'\(6,\)'),
    ([0] * 6, TypeError, 'integer tensor')])
def test_conditional_unet_rejects_bad_classes(c, err, match):
    x, t, _ = batch()
    with pytest.raises(err, match=match): cond_unet()(x, t, c)

def test_conditional_unet_needs_the_time_step():
    with pytest.raises(ValueError, match='use_t'): ConditionalUNet(10, n_in=4, n_out=4, nfs=NFS, use_t=False)

def test_guidance_scale_ends_and_the_equation():
    m = cond_unet()
    x, t, c = batch()
    with torch.no_grad():
        e_c, e_u = m(x, t, c), m(x, t)
        assert torch.allclose(guided_eps(m, x, t, c, 1.), e_c, atol=1e-5)
        assert torch.allclose(guided_eps(m, x, t, c, 0.), e_u, atol=1e-5)
        assert torch.allclose(guided_eps(m, x, t, c, 3.), e_u + 3 * (e_c - e_u), atol=1e-5)
        neg = (c + 3) % 10
        e_n = m(x, t, neg)
        assert torch.allclose(guided_eps(m, x, t, c, 2., negative=neg), e_n + 2 * (e_c - e_n), atol=1e-5)

@pytest.mark.parametrize('kw, err, match', [
    (dict(scale='strong'), TypeError, 'scale must be a number'), (dict(scale=float('nan')), ValueError, 'finite'),
    (dict(c=torch.full((6,), 10)), ValueError, r'0\.\.9'), (dict(negative=torch.zeros(2, dtype=torch.long)), TypeError, r'\(6,\)')])
def test_guided_eps_rejects_bad_arguments(kw, err, match):
    x, t, c = batch()
    args = dict(c=c, scale=2.); args.update(kw)
    with pytest.raises(err, match=match): guided_eps(cond_unet(), x, t, **args)

def test_guided_eps_needs_a_conditional_model():
    x, t, c = batch()
    with pytest.raises(TypeError, match='ConditionalUNet'): guided_eps(UNet(4, 4, NFS), x, t, c, 2.)

def test_guided_sample_is_seeded_batched_and_keeps_the_mode():
    m, sched = cond_unet().train(), NoiseSchedule.cosine()
    c = torch.arange(5)
    a = guided_sample(m, sched, c, 3., steps=4, seed=0, bs=2)
    assert a.shape == (5, 4, 8, 8) and m.training
    assert torch.equal(a, guided_sample(m, sched, c, 3., steps=4, seed=0, bs=2))   # seeded: the same again
    b = guided_sample(m, sched, c, 3., steps=4, seed=0, bs=5)                 # batching changes only the rounding
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()
    assert not torch.equal(a, guided_sample(m, sched, c, 3., steps=4, seed=1))

def test_guided_sample_clamps_x0_where_sampling_starts():
    "At t = 999 the cosine schedule's 1/√ᾱ is about 20,000: unclamped, the first x̂0 throws the latents far out."
    m, sched, c = cond_unet(), NoiseSchedule.cosine(), torch.arange(4)
    raw, clamped = (guided_sample(m, sched, c, 3., steps=4, seed=0, clip=k) for k in (None, 4.))
    assert clamped.abs().max() < 10 < raw.abs().max()
    assert torch.equal(clamped, guided_sample(m, sched, c, 3., steps=4, seed=0))     # 4 is the default

def test_img2img_strength_sets_how_far_from_the_source():
    m, sched = cond_unet(), NoiseSchedule.cosine()
    init, c = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(3)), torch.full((8,), 2)
    d = [F.mse_loss(guided_sample(m, sched, c, 3., init=init, strength=s, steps=20, seed=0), init).item() for s in (0.05, 1.)]
    assert d[0] < 0.1 < d[1]

@pytest.mark.parametrize('kw, err, match', [
    (dict(init=torch.zeros(3, 4, 8, 8)), ValueError, r'init must be latents \(4, 4'), (dict(strength=0), ValueError, 'strength'),
    (dict(strength=1.5), ValueError, 'strength'), (dict(steps=0), ValueError, 'steps'), (dict(scale=None), TypeError, 'scale'),
    (dict(clip=0), ValueError, 'guided_sample: clip'), (dict(clip='4'), TypeError, 'guided_sample: clip'),
    (dict(classes=torch.tensor([0, 1, 2, 12])), ValueError, r'0\.\.9'), (dict(classes=[0, 1]), TypeError, 'integer tensor')])
def test_guided_sample_rejects_bad_arguments(kw, err, match):
    args = dict(classes=torch.arange(4), scale=2., steps=2); args.update(kw)
    with pytest.raises(err, match=match): guided_sample(cond_unet(), NoiseSchedule.cosine(), **args)

def test_label_dropping_callback_drops_about_p_drop():
    class L: pass
    cb = ConditionalDDPMCB(NoiseSchedule.cosine(), 10, p_drop=0.25)
    learn = L(); learn.training = True; cb.before_epoch(learn)
    x0, y = torch.randn(4000, 4, 8, 8), torch.randint(0, 10, (4000,))
    learn.batch = (x0, y); cb.before_batch(learn)
    x_t, t, c, eps = learn.batch
    dropped = (c == 10)
    assert x_t.shape == eps.shape == x0.shape and t.shape == (4000,)
    assert abs(dropped.double().mean().item() - 0.25) < 0.03 and torch.equal(c[~dropped], y[~dropped])
    with pytest.raises(ValueError, match='p_drop'): ConditionalDDPMCB(NoiseSchedule.cosine(), 10, p_drop=1.5)

def test_training_a_conditional_latent_model_lowers_the_loss(vae, cache):
    lat = fashion_latents(vae, n_train=256, n_test=64)
    set_seed(0); m = latent_unet(NFS, n_classes=10)
    rec = train_latent_ddpm(m, lat, epochs=2, bs=32, n_valid=64, ema=None)
    losses = [h['train_loss'] for h in rec['hist']]
    assert losses[-1] < losses[0] and rec['p_drop'] == 0.1 and rec['n_train'] == 256

def test_latent_dls_and_train_reject_bad_input(vae, cache):
    with pytest.raises(TypeError, match='fashion_latents'): latent_dls(torch.zeros(3))
    lat = fashion_latents(vae, n_train=40, n_test=20)
    with pytest.raises(ValueError, match='n_train'): latent_dls(lat, n_train=41)
    with pytest.raises(TypeError, match='UNet'): train_latent_ddpm(torch.nn.Linear(2, 2), lat)

def lit_pixel_classifier():
    "A stand-in `fashion_classifier` whose class is the brightest of pixels 0..9 (as in test_ddim_fid)."
    lin = torch.nn.Linear(784, 10, bias=False)
    with torch.no_grad(): lin.weight.zero_(); lin.weight[range(10), range(10)] = 1.
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Identity(), lin, torch.nn.BatchNorm1d(10)).eval()

def test_hit_rate_counts_what_the_classifier_reads():
    lit = torch.tensor([0, 1, 2, 3, 3, 5, 6, 7])                 # the image of class 4 shows a 3
    x = torch.zeros(8, 1, 28, 28); x.view(8, -1)[range(8), lit] = 1.
    assert hit_rate(lit_pixel_classifier(), x, torch.arange(8)) == 7 / 8
    with pytest.raises(ValueError, match=r'\(8,\)'): hit_rate(lit_pixel_classifier(), x, torch.arange(4))
    with pytest.raises(ValueError, match='28, 28'): hit_rate(lit_pixel_classifier(), torch.zeros(8, 1, 32, 32), torch.arange(8))
