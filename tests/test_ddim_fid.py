"DDIM against diffusers' DDIMScheduler; FID against closed forms and scipy; KID's unbiasedness; feature-extractor input checks."
import math, diffusers, numpy as np, pytest, scipy.linalg, torch
from miniai.ddpm import NoiseSchedule, timesteps
from miniai.ddim_fid import ddim_step, fid, kid, frechet_distance, gaussian_stats, fashion_features
from miniai.resnet import resnet

@pytest.mark.parametrize('eta', [0., 1., 0.5])
@pytest.mark.parametrize('n', [10, 50])
def test_ddim_step_matches_diffusers(eta, n):
    sched = NoiseSchedule.cosine()
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule='squaredcos_cap_v2', clip_sample=False, timestep_spacing='trailing')
    ref.set_timesteps(n)
    ts = timesteps(1000, n)
    assert ts == ref.timesteps.tolist()
    x, eps = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    for i in range(n):
        t, t_prev = ts[i], (ts[i+1] if i+1 < n else -1)
        ours = ddim_step(x, eps, t, t_prev, sched, generator=torch.Generator().manual_seed(i), eta=eta)
        theirs = ref.step(eps, t, x, eta=eta, generator=torch.Generator().manual_seed(i)).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)

def test_ddim_deterministic_and_clip():
    sched = NoiseSchedule.cosine()
    x, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    torch.testing.assert_close(ddim_step(x, eps, 500, 400, sched), ddim_step(x, eps, 500, 400, sched), rtol=0, atol=0)
    a = ddim_step(x, eps, 500, 400, sched, generator=torch.Generator().manual_seed(0), eta=1.)
    assert not torch.allclose(a, ddim_step(x, eps, 500, 400, sched))
    assert ddim_step(x, eps * 3, 10, -1, sched, clip=1.).abs().max() <= 1 + 1e-6
    # a big η=1 jump from the noisiest step: the re-noising coefficient rounds below 0 in float32, and must not give NaN
    assert torch.isfinite(ddim_step(x, eps, 999, 799, sched, generator=torch.Generator().manual_seed(0), eta=1., clip=1.)).all()

def test_fid_closed_form_and_identity():
    torch.manual_seed(0)
    a, b, mu = torch.rand(6, dtype=torch.float64) + .1, torch.rand(6, dtype=torch.float64) + .1, torch.randn(6, dtype=torch.float64)
    expected = (mu.pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum()).item()
    assert math.isclose(frechet_distance(mu, torch.diag(a), torch.zeros(6, dtype=torch.float64), torch.diag(b)), expected, rel_tol=1e-9)
    f = torch.randn(300, 8)
    assert abs(fid(f, f)) < 1e-8
    assert fid(f, f + 1) == pytest.approx(8.0, rel=1e-6)   # a shift by 1 in 8 dimensions

def test_fid_matches_scipy():
    torch.manual_seed(1)
    f1, f2 = torch.randn(500, 16, dtype=torch.float64), torch.randn(300, 16, dtype=torch.float64) @ torch.randn(16, 16, dtype=torch.float64) * .5
    (m1, s1), (m2, s2) = gaussian_stats(f1), gaussian_stats(f2)
    ref = ((m1 - m2).pow(2).sum() + s1.trace() + s2.trace() - 2 * np.trace(scipy.linalg.sqrtm(s1.numpy() @ s2.numpy())).real).item()
    assert fid(f1, f2) == pytest.approx(ref, rel=1e-8)

def test_kid_unbiased_and_sensitive():
    g = torch.Generator().manual_seed(0)
    same = [kid(torch.randn(100, 8, generator=g), torch.randn(100, 8, generator=g)) for _ in range(50)]
    assert abs(sum(same) / len(same)) < 0.01                # ~0 on average for one distribution
    shifted = kid(torch.randn(100, 8, generator=g), torch.randn(100, 8, generator=g) + 1)
    assert shifted > 10 * max(abs(s) for s in same)
    with pytest.raises(ValueError, match='kid: need'): kid(torch.randn(5, 3), torch.randn(5, 4))

def test_feature_input_checks():
    with pytest.raises(ValueError, match=r'expected \(N, 1, 28, 28\).*to_pixels'):
        fashion_features(resnet((8, 16, 32, 64, 128)), torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match='N ≥ 2'): gaussian_stats(torch.randn(1, 3))
    assert fashion_features(resnet((8, 16, 32, 64, 128)), torch.rand(3, 1, 28, 28)).shape == (3, 128)

@pytest.mark.parametrize('eta', [0., 1.])
def test_clipped_ddim_step_matches_diffusers(eta):
    sched = NoiseSchedule.cosine()
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule='squaredcos_cap_v2', clip_sample=True, timestep_spacing='trailing')
    ref.set_timesteps(25)
    ts = timesteps(1000, 25)
    x, eps = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    for i in range(25):
        t_prev = ts[i+1] if i+1 < 25 else -1
        g = lambda: torch.Generator().manual_seed(i)
        theirs = ref.step(eps, ts[i], x, eta=eta, generator=g(), use_clipped_model_output=True).prev_sample  # ε from the clamped x0
        torch.testing.assert_close(ddim_step(x, eps, ts[i], t_prev, sched, generator=g(), eta=eta, clip=1.), theirs, rtol=1e-4, atol=1e-5)
        if i < 10:  # x0 is clamped at these noise levels, so keeping the model's ε would give another step
            assert not torch.allclose(ref.step(eps, ts[i], x, eta=eta, generator=g()).prev_sample, theirs, atol=1e-3)
