"Notebook 14: autoencoders, PCA, the VAE's loss, the perceptual loss, and diffusers' AutoencoderKL behind our interface."
import math
import pytest, torch
from torch import nn
import torch.nn.functional as F
from miniai.autoencoder import (Autoencoder, AutoencoderCB, AutoencoderLoss, PCA, PerceptualLoss, KLPerImage, PixelMSE,
                                kl_divergence, pixel_mse, reconstruct, train_autoencoder, latent_scale)
import miniai.autoencoder as ae_mod

def imgs(n=4, size=32, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1

@pytest.mark.parametrize('kw, latent', [({}, (4, 8, 8)), (dict(n_latent=2, nfs=(8, 16, 16)), (2, 4, 4)),
                                        (dict(n_flat=2), (2,))])
def test_shapes_round_trip(kw, latent):
    m = Autoencoder(**kw).eval()
    z = m.encode(imgs())
    assert tuple(z.shape) == (4, *latent) == (4, *m.latent_shape) and m.decode(z).shape == (4, 1, 32, 32)

def test_vae_forward_samples_in_training_and_uses_the_mean_in_eval():
    m = Autoencoder(n_latent=2, variational=True)
    x = imgs()
    recon, mu, logvar = m.train()(x)
    assert recon.shape == x.shape and mu.shape == logvar.shape == (4, 2, 8, 8)
    torch.manual_seed(0); a = m(x)[0]; torch.manual_seed(1); b = m(x)[0]
    assert not torch.equal(a, b)                                # z = μ + σε: noise in training
    m.eval(); assert torch.equal(m(x)[0], m(x)[0]) and torch.equal(m(x)[0], m.decode(m.encode(x)[0]))

def test_reparameterisation_passes_gradients_to_mu_and_logvar():
    m = Autoencoder(n_latent=1, variational=True).train()
    mu, lv = torch.zeros(2, 1, 8, 8, requires_grad=True), torch.zeros(2, 1, 8, 8, requires_grad=True)
    m.sample_latents(mu, lv).sum().backward()
    assert torch.equal(mu.grad, torch.ones_like(mu)) and lv.grad.abs().sum() > 0

@pytest.mark.parametrize('bad, err, match', [
    (torch.zeros(2, 1, 30, 30), ValueError, 'multiples of 4'), (torch.zeros(2, 3, 32, 32), ValueError, r'\(B, 1, H, W\)'),
    (torch.zeros(2, 32, 32), ValueError, r'\(B, 1, H, W\)'), (torch.zeros(2, 1, 32, 32, dtype=torch.uint8), TypeError, 'diffusion_prep'),
    ([[0.]], TypeError, 'torch tensor'), (torch.zeros(0, 1, 32, 32), ValueError, 'B ≥ 1')])
def test_encode_rejects_images_it_cannot_take(bad, err, match):
    with pytest.raises(err, match=match): Autoencoder().encode(bad)

def test_flat_latents_need_the_exact_size_and_decode_checks_latents():
    with pytest.raises(ValueError, match='takes 32×32'): Autoencoder(n_flat=2).encode(torch.zeros(1, 1, 64, 64))
    assert Autoencoder().eval().encode(torch.zeros(1, 1, 64, 64)).shape == (1, 4, 16, 16)   # a grid scales
    for m, z in ((Autoencoder(), torch.zeros(2, 3, 8, 8)), (Autoencoder(n_flat=2), torch.zeros(2, 3)),
                 (Autoencoder(), torch.zeros(2, 256))):
        with pytest.raises(ValueError, match='expected latents'): m.decode(z)
    with pytest.raises(TypeError, match='float tensor'): Autoencoder().decode(torch.zeros(2, 4, 8, 8, dtype=torch.long))

@pytest.mark.parametrize('kw, err', [(dict(nfs=()), ValueError), (dict(nfs=(8, 0)), ValueError), (dict(n_latent=0), ValueError),
                                     (dict(size=30), ValueError), (dict(n_flat=1.5), TypeError),
                                     (dict(variational='yes'), TypeError)])
def test_bad_settings(kw, err):
    with pytest.raises(err): Autoencoder(**kw)

def test_kl_matches_torch_distributions_and_is_zero_at_the_prior():
    mu, lv = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * lv).exp()),
                                            torch.distributions.Normal(0., 1.)).flatten(1).sum(1).mean()
    torch.testing.assert_close(kl_divergence(mu, lv), ref)
    assert kl_divergence(torch.zeros(2, 5), torch.zeros(2, 5)).item() == 0
    with pytest.raises(ValueError, match='one shape'): kl_divergence(mu, lv[:, :1])

def test_loss_adds_kl_per_pixel_and_the_perceptual_term():
    x = imgs(); recon, mu, lv = x + 0.1, torch.randn(4, 4, 8, 8), torch.zeros(4, 4, 8, 8)
    mse = F.mse_loss(recon, x)
    torch.testing.assert_close(AutoencoderLoss()(recon, x), mse)
    torch.testing.assert_close(AutoencoderLoss(beta=0.5)((recon, mu, lv), x), mse + 0.5 * kl_divergence(mu, lv) / 1024)
    torch.testing.assert_close(AutoencoderLoss(0., lambda r, t: torch.tensor(2.), 0.25)(recon, x), mse + 0.5)
    with pytest.raises(ValueError, match="images' shape"): AutoencoderLoss()(recon[:, :, :30], x)
    for kw in (dict(beta=-1), dict(weight=float('nan'))):
        with pytest.raises(ValueError): AutoencoderLoss(**kw)
    with pytest.raises(TypeError, match='callable'): AutoencoderLoss(perceptual='vgg')

def test_pixel_mse_is_on_the_garment_in_unit_range():
    x = imgs(); y = x.clone(); y[..., :2, :] += 1.                          # the padding only: not counted
    assert pixel_mse(y, x).item() == 0
    y = x.clone(); y[..., 2:-2, 2:-2] = x[..., 2:-2, 2:-2].clamp(-1, 1)
    z = torch.full_like(x, -1.); w = torch.full_like(x, 1.)
    assert math.isclose(pixel_mse(z, w).item(), 1.0)
    with pytest.raises(ValueError, match='one shape'): pixel_mse(x, x[:2])

def test_pca_is_the_best_linear_code_and_matches_svd():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(300, 6, generator=g) @ torch.randn(6, 16, generator=g)).reshape(300, 1, 4, 4)
    p = PCA(x)
    assert math.isclose(p.explained(6), 1., rel_tol=1e-9) and p.explained(3) < 1
    torch.testing.assert_close(p.decode(p.encode(x, 6)), x, atol=1e-4, rtol=0)        # rank 6: exact
    f = x.flatten(1).double(); s = torch.linalg.svdvals(f - f.mean(0))
    torch.testing.assert_close(p.var[:6], s[:6] ** 2 / 299)
    err = lambda r: (r - x).pow(2).mean().item()
    rnd = torch.linalg.qr(torch.randn(16, 3, generator=g, dtype=torch.float64))[0]     # another 3-D linear code
    other = ((f - f.mean(0)) @ rnd @ rnd.T + f.mean(0)).float().reshape(x.shape)
    assert err(p.decode(p.encode(x, 3))) < err(other)
    with pytest.raises(ValueError, match=r'\(N, 1, 4, 4\)'): p.encode(torch.zeros(2, 1, 5, 5), 2)
    with pytest.raises(ValueError): p.encode(x, 17)
    with pytest.raises(ValueError, match='at least 2'): PCA(torch.zeros(1, 4))

def test_reconstruct_restores_the_mode_and_uses_the_mean():
    m = Autoencoder(n_latent=1, variational=True).train()
    x = imgs(6)
    r = reconstruct(m, x, bs=4)
    assert m.training and r.shape == x.shape
    m.eval(); assert torch.equal(r, m.decode(m.encode(x)[0]))

def test_autoencoder_cb_makes_the_target_the_input():
    class L: batch = (torch.ones(2), torch.zeros(2))
    AutoencoderCB().before_batch(L); assert L.batch[1] is L.batch[0]

def test_training_lowers_the_error_and_is_reproducible(monkeypatch):
    monkeypatch.setenv('MINIAI_QUICK', '1')
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = Autoencoder(nfs=(8, 16), n_latent=2, variational=True)
        runs.append(train_autoencoder(m, 2, bs=32, n_train=256, n_valid=64, loss_func=AutoencoderLoss(0.01)))
    h = runs[0]['hist']
    assert h[-1]['valid_mse'] < h[0]['valid_mse'] and 'valid_kl' in h[-1]
    assert [r['valid_loss'] for r in runs[0]['hist']] == [r['valid_loss'] for r in runs[1]['hist']]
    with pytest.raises(TypeError, match='Autoencoder or DiffusersVAE'): train_autoencoder(nn.Linear(2, 2))

def test_perceptual_loss_is_frozen_zero_on_equal_images_and_positive_otherwise():
    clf = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 10))
    before = [p.clone() for p in clf.parameters()]
    pl = PerceptualLoss(clf, 3).train()
    x = imgs(); assert not pl.training and pl(x, x).item() == 0 and pl(x, -x).item() > 0
    assert all(not p.requires_grad for p in pl.parameters()) and all(p.requires_grad for p in clf.parameters())
    r = (x * 0.5).requires_grad_(); pl(r, x).backward(); assert r.grad.abs().sum() > 0
    assert all(torch.equal(a, b) for a, b in zip(before, clf.parameters()))
    with pytest.raises(ValueError, match=r'\(B, 1, 32, 32\)'): pl(x[..., :28, :28], x[..., :28, :28])
    with pytest.raises(TypeError, match='nn.Sequential'): PerceptualLoss(nn.Linear(2, 2))
    with pytest.raises(ValueError): PerceptualLoss(clf, 6)

diffusers = pytest.importorskip('diffusers')
from miniai.autoencoder import DiffusersVAE, kl_autoencoder, pretrained_vae

def test_diffusers_vae_behind_our_interface():
    vae = kl_autoencoder((8, 8, 16), groups=4)
    w = DiffusersVAE(vae)
    x = imgs(2)
    mu, lv = w.encode(x)
    assert mu.shape == lv.shape == (2, 4, 8, 8) == (2, *w.latent_shape) and w.decode(mu).shape == x.shape
    recon, m2, _ = w.train()(x); assert recon.shape == x.shape
    with pytest.raises(ValueError, match='multiples of 4'): w.encode(imgs(2, 30))
    with pytest.raises(ValueError, match='expected latents'): w.decode(torch.zeros(2, 3, 8, 8))
    with pytest.raises(TypeError, match='AutoencoderKL'): DiffusersVAE(Autoencoder())
    with pytest.raises(ValueError): kl_autoencoder((8, 12), groups=8)
    s = latent_scale(w.eval(), imgs(8)); assert math.isclose(s * w.encode(imgs(8))[0].std().item(), 1, rel_tol=1e-4)

def test_pretrained_vae_caches_a_diffusers_folder(tmp_path, monkeypatch):
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path)); monkeypatch.setenv('MINIAI_QUICK', '1')
    kw = dict(epochs=1, n_train=64, nfs=(8, 8, 16), n_valid=32, bs=32)
    v1, r1 = pretrained_vae(**kw)
    v2, r2 = pretrained_vae(**kw)
    folder, = [p for p in (tmp_path/'models').iterdir() if p.is_dir()]
    again = diffusers.AutoencoderKL.from_pretrained(folder, local_files_only=True)
    assert r1 == r2 and math.isclose(again.config.scaling_factor, r1['scaling_factor']) and r1['scaling_factor'] != 0.18215
    x = imgs(4)
    assert torch.equal(reconstruct(DiffusersVAE(v2), x), reconstruct(DiffusersVAE(again), x))
