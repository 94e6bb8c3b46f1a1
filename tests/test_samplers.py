"""Samplers in σ space against diffusers' schedulers (the same model outputs give the same next sample), their noise
levels, orders of accuracy on data with an exact denoiser, the loop's bookkeeping; progressive distillation: the target,
the student, the callback, a loss that falls, the cache; one clear error for each kind of bad input."""
import copy, math
from pathlib import Path
import pytest, torch
from torch import nn
import miniai.samplers as samplers
from miniai.checkpoint import save_checkpoint
from miniai.data import DataError, cache_dir
from miniai.ddpm import NoiseSchedule, UNet, ddim_step, diffusion_sample
from miniai.learner import CancelFitException
from miniai.samplers import (schedule_sigmas, sigma_to_t, even_sigmas, karras_sigmas, check_sigmas, euler_step, heun_step,
                             euler_ancestral_step, dpmpp_2m_step, Denoiser, sigma_sample, Student, teacher_target,
                             distill_loss, DistillCB, distill, progressive_distillation)

BAD = (TypeError, ValueError)
from functools import partial
from miniai.learner import autocast_dtype
SCHED = NoiseSchedule.cosine()

@pytest.fixture(scope='module')
def net():
    torch.manual_seed(0)
    return UNet(nfs=(8, 16)).eval()

class Recorded(nn.Module):
    "Keeps every input and output, so that diffusers can be handed the same ones."
    def __init__(self, model): super().__init__(); self.model, self.ins, self.outs = model, [], []
    def forward(self, x, t):  # float32 outputs: under bf16 autocast diffusers would round its step to bf16
        self.ins.append(x); self.outs.append(self.model(x, t).float()); return self.outs[-1]


# ---------------------------------------------------------------- against diffusers

def run_against(net, step_fn, ref, sig, clip=None, vp=False):
    "Step our sampler through `sig` and feed diffusers' `ref.step` the same outputs; the worst relative difference."
    rec = Recorded(net); den, state = Denoiser(rec, SCHED, clip=clip), {}
    sig = sig.tolist()
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * math.sqrt(sig[0] ** 2 + 1)
    ref.set_begin_index(0)
    ts, k, worst = ref.timesteps, 0, 0.
    with torch.no_grad():
        for i, (s, s1) in enumerate(zip(sig[:-1], sig[1:])):
            rec.ins.clear(); rec.outs.clear()
            ours = step_fn(x, s, s1, den, state, torch.Generator().manual_seed(i))
            if vp:
                theirs = ref.step(rec.outs[0], ts[k], x / math.sqrt(s ** 2 + 1)).prev_sample * math.sqrt(s1 ** 2 + 1)
                k += 1
            else:
                torch.testing.assert_close(ref.scale_model_input(x, ts[k]), x / math.sqrt(s ** 2 + 1))
                kw = dict(generator=torch.Generator().manual_seed(i)) if step_fn is euler_ancestral_step else {}
                theirs = ref.step(rec.outs[0], ts[k], x, **kw).prev_sample; k += 1
                if len(rec.outs) == 2:
                    theirs = ref.step(rec.outs[1], ts[k], rec.ins[1] * math.sqrt(s1 ** 2 + 1)).prev_sample; k += 1
            worst = max(worst, (ours - theirs).abs().max().item() / max(x.abs().max().item(), 1.))
            x = ours
    assert k == len(ts)                                                     # every scheduler step was taken
    return worst

def cases():
    d = pytest.importorskip('diffusers')
    cfg = dict(num_train_timesteps=1000, beta_schedule='squaredcos_cap_v2')
    s_min, whole = schedule_sigmas(SCHED)[0].item(), dict(sigma_max=None)
    return [
        (euler_step, lambda: d.EulerDiscreteScheduler(**cfg, timestep_spacing='trailing'), even_sigmas, {}, {}),
        (euler_step, lambda: d.EulerDiscreteScheduler(**cfg, use_karras_sigmas=True, sigma_min=s_min, sigma_max=80.),
         karras_sigmas, {}, {}),
        (heun_step, lambda: d.HeunDiscreteScheduler(**cfg, use_karras_sigmas=True, timestep_spacing='linspace'),
         karras_sigmas, whole, {}),
        (heun_step, lambda: d.HeunDiscreteScheduler(**cfg, use_karras_sigmas=True, timestep_spacing='linspace',
                                                    clip_sample=True), karras_sigmas, whole, dict(clip=1.)),
        (heun_step, lambda: d.HeunDiscreteScheduler(**cfg, timestep_spacing='trailing'), even_sigmas, {}, {}),
        (euler_ancestral_step, lambda: d.EulerAncestralDiscreteScheduler(**cfg, timestep_spacing='trailing'),
         even_sigmas, {}, {}),
        (dpmpp_2m_step, lambda: d.DPMSolverMultistepScheduler(**cfg, timestep_spacing='trailing'), even_sigmas, {},
         dict(vp=True)),
        (dpmpp_2m_step, lambda: d.DPMSolverMultistepScheduler(**cfg, timestep_spacing='trailing', thresholding=True,
                                                              sample_max_value=1.), even_sigmas, {},
         dict(vp=True, clip=1.)),
        (dpmpp_2m_step, lambda: d.DPMSolverMultistepScheduler(**cfg, use_karras_sigmas=True), karras_sigmas, whole,
         dict(vp=True))]

@pytest.mark.parametrize('n', [5, 12])
def test_steps_match_diffusers(net, n):
    for step_fn, make, spacing, skw, kw in cases():
        ref = make(); ref.set_timesteps(n)
        sig = spacing(SCHED, n, **skw)
        torch.testing.assert_close(ref.sigmas.double().unique_consecutive(), sig, rtol=1e-5, atol=1e-7)
        assert run_against(net, step_fn, ref, sig, **kw) < 1e-5, (step_fn.__name__, ref.__class__.__name__, kw)

def test_ancestral_step_matches_diffusers_on_karras_levels(net):
    "diffusers' ancestral Euler has no Karras option: given our levels, its step is still ours."
    d = pytest.importorskip('diffusers')
    ref = d.EulerAncestralDiscreteScheduler(num_train_timesteps=1000, beta_schedule='squaredcos_cap_v2')
    ref.set_timesteps(8)
    sig = karras_sigmas(SCHED, 8)
    ref.sigmas, ref.timesteps = sig.float(), sigma_to_t(SCHED, sig[:-1]).float()
    assert run_against(net, euler_ancestral_step, ref, sig) < 1e-5

def test_sigma_to_t_matches_diffusers():
    d = pytest.importorskip('diffusers')
    ref = d.EulerDiscreteScheduler(num_train_timesteps=1000, beta_schedule='squaredcos_cap_v2', use_karras_sigmas=True,
                                   sigma_min=schedule_sigmas(SCHED)[0].item(), sigma_max=80.)
    ref.set_timesteps(16)
    torch.testing.assert_close(sigma_to_t(SCHED, karras_sigmas(SCHED, 16)[:-1]), ref.timesteps.double(), atol=1e-3,
                               rtol=0)
    ts = torch.arange(1000)
    assert torch.equal(sigma_to_t(SCHED, schedule_sigmas(SCHED)[ts]), ts.double())   # exact at the schedule's steps
    assert sigma_to_t(SCHED, 1e-6).item() == 0 and sigma_to_t(SCHED, 1e9).item() == 999


# ---------------------------------------------------------------- levels, steps and the loop

def test_levels():
    s = schedule_sigmas(SCHED)
    assert s.dtype == torch.float64 and (s[1:] > s[:-1]).all()
    torch.testing.assert_close(s, ((1 - SCHED.abar.double()) / SCHED.abar.double()).sqrt())
    for n in (1, 4, 50, 1000):
        e, k = even_sigmas(SCHED, n), karras_sigmas(SCHED, n)
        assert len(check_sigmas(SCHED, e)) == len(check_sigmas(SCHED, k)) == n + 1
        assert e[0] == s[-1] and math.isclose(k[0], 80.) and e[-1] == k[-1] == 0
    k = karras_sigmas(SCHED, 10, rho=1.)                        # ρ = 1: evenly spaced σ
    torch.testing.assert_close(k[:-1], torch.linspace(80., s[0].item(), 10, dtype=torch.float64))
    assert math.isclose(karras_sigmas(SCHED, 10, sigma_max=None)[0], s[-1], rel_tol=1e-12)

def test_ddim_is_euler_through_even_levels(net):
    a = diffusion_sample(net, SCHED, 4, 10, step_fn=ddim_step, seed=3, progress=False, size=(1, 16, 16))
    b, nfe = sigma_sample(net, SCHED, even_sigmas(SCHED, 10), euler_step, n=4, seed=3, size=(1, 16, 16))
    tol = 1e-2 if autocast_dtype('cpu') is None else 3e-2               # bf16 model outputs where the CPU has bf16
    assert nfe == 10 and (a - b).abs().max() < tol                       # float32 at σ = 20,291, first step
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad(): eps = net(x, torch.full((2,), 600))
    ab6, ab5 = SCHED.abar[600].item(), SCHED.abar[500].item()
    euler = euler_step(x / math.sqrt(ab6), *even_sig(600, 500), lambda y, s: y - s * eps, None)
    torch.testing.assert_close(ddim_step(x, eps, 600, 500, SCHED), euler * math.sqrt(ab5), rtol=1e-5, atol=1e-6)

def even_sig(*ts): return [schedule_sigmas(SCHED)[t].item() for t in ts]

# a mixture of three Gaussians on a line: its best denoiser is known exactly
MU, W, S = torch.tensor([-0.6, 0.1, 0.7], dtype=torch.float64), torch.tensor([.3, .3, .4], dtype=torch.float64), 0.08
def toy_denoise(x, sigma):
    var = S ** 2 + sigma ** 2
    r = torch.softmax(W.log() - (x[..., None] - MU) ** 2 / (2 * var), -1)
    return (r * (MU + S ** 2 / var * (x[..., None] - MU))).sum(-1)

def toy_end(step_fn, n, x):
    state, sig = {}, karras_sigmas(SCHED, n).tolist()
    for s, s1 in zip(sig[:-1], sig[1:]): x = step_fn(x, s, s1, toy_denoise, state)
    return x

def test_orders_of_accuracy():
    x = torch.randn(500, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80
    ref = toy_end(heun_step, 1024, x)
    err = lambda f, n: (toy_end(f, n, x) - ref).abs().mean().item()
    order = lambda f: math.log2(err(f, 32) / err(f, 64))
    assert 0.7 < order(euler_step) < 1.4                                  # first order
    assert order(heun_step) > 1.6 and order(dpmpp_2m_step) > 1.6          # second order

def test_counts_seeds_and_mode(net):
    for fn, n, want in ((euler_step, 4, 4), (heun_step, 4, 7), (dpmpp_2m_step, 4, 4), (euler_ancestral_step, 3, 3)):
        x, nfe = sigma_sample(net, SCHED, karras_sigmas(SCHED, n), fn, n=2, seed=0, size=(1, 16, 16))
        assert nfe == want and x.shape == (2, 1, 16, 16) and torch.isfinite(x).all()
        assert x.abs().max() <= 1 + 1e-5                                # the last step lands on a clamped x̂0
    a = sigma_sample(net, SCHED, karras_sigmas(SCHED, 3), euler_ancestral_step, n=2, seed=5, size=(1, 16, 16))[0]
    b = sigma_sample(net, SCHED, karras_sigmas(SCHED, 3), euler_ancestral_step, n=2, seed=5, size=(1, 16, 16))[0]
    c = sigma_sample(net, SCHED, karras_sigmas(SCHED, 3), euler_ancestral_step, n=2, seed=6, size=(1, 16, 16))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    net.train(); net.mid.eval()
    sigma_sample(net, SCHED, karras_sigmas(SCHED, 2), n=1, size=(1, 16, 16))
    assert net.training and not net.mid.training
    def boom(*a, **k): raise RuntimeError('boom')
    with pytest.raises(RuntimeError, match='boom'): sigma_sample(net, SCHED, karras_sigmas(SCHED, 2), boom, n=1)
    assert net.training and not net.mid.training
    net.eval()

def test_dpmpp_history_is_used():
    "With a denoiser whose x̂0 changes along the path, the second step differs from a first-order one."
    den = lambda x, s: x * 0 + s                                          # x̂0 = σ: changes from step to step
    x = torch.zeros(3)
    with_hist, state = dpmpp_2m_step(x, 2., 1., den, {}), {}
    dpmpp_2m_step(x, 4., 2., den, state)
    assert not torch.allclose(dpmpp_2m_step(with_hist, 2., 1., den, state), dpmpp_2m_step(with_hist, 2., 1., den, {}))


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize('call, match', [
    (lambda: even_sigmas(SCHED, 0), 'n'), (lambda: even_sigmas(SCHED, 1001), 'n'), (lambda: even_sigmas(SCHED, 2.), 'n'),
    (lambda: even_sigmas('cosine', 4), 'sched must be a NoiseSchedule'),
    (lambda: karras_sigmas(SCHED, 0), 'n'), (lambda: karras_sigmas(SCHED, 4, rho=0), 'rho'),
    (lambda: karras_sigmas(SCHED, 4, sigma_max=1e6), 'sigma_max ≤'), (lambda: karras_sigmas(SCHED, 4, sigma_min=1e-4),
                                                                        'σ\\(0\\)'),
    (lambda: karras_sigmas(SCHED, 4, sigma_min=90.), 'sigma_min < sigma_max'),
    (lambda: karras_sigmas(SCHED, 4, sigma_max=float('nan')), 'finite'),
    (lambda: check_sigmas(SCHED, [3., 2., 2., 0.]), 'decrease'), (lambda: check_sigmas(SCHED, [3., 4., 0.]), 'decrease'),
    (lambda: check_sigmas(SCHED, [3., 1.]), 'end with 0'), (lambda: check_sigmas(SCHED, [3., -1., 0.]), 'positive'),
    (lambda: check_sigmas(SCHED, [0.]), 'at least 2'), (lambda: check_sigmas(SCHED, [[3., 0.]]), 'at least 2'),
    (lambda: check_sigmas(SCHED, [1e6, 0.]), 'above'), (lambda: check_sigmas(SCHED, 'abc'), 'sigmas must be'),
    (lambda: check_sigmas(SCHED, [float('inf'), 0.]), 'finite'),
    (lambda: sigma_to_t(SCHED, -1.), '≥ 0'), (lambda: sigma_to_t(SCHED, 'x'), 'number'),
])
def test_levels_bad_arguments(call, match):
    with pytest.raises(BAD, match=match): call()

@pytest.mark.parametrize('step_fn', [euler_step, heun_step, euler_ancestral_step, dpmpp_2m_step])
@pytest.mark.parametrize('args, match', [
    ((torch.zeros(2), 1., 1., toy_denoise, {}), 'below sigma'), ((torch.zeros(2), 1., 2., toy_denoise, {}), 'below'),
    ((torch.zeros(2), 0., 0., toy_denoise, {}), 'sigma must be a number > 0'),
    ((torch.zeros(2), 1., -0.5, toy_denoise, {}), 'sigma_next'), ((torch.zeros(2), 1., 0.5, None, {}), 'denoise'),
    ((torch.zeros(2), 1., 0.5, toy_denoise, []), 'state'), (([0., 0.], 1., 0.5, toy_denoise, {}), 'tensor'),
    ((torch.zeros(2), '1', 0.5, toy_denoise, {}), 'sigma'),
])
def test_steps_bad_arguments(step_fn, args, match):
    with pytest.raises(BAD, match=match): step_fn(*args)

@pytest.mark.parametrize('kwargs, match', [
    (dict(n=0), 'n'), (dict(size=(1, 16)), 'size'), (dict(size=(1, 0, 16)), 'size'), (dict(seed=1.5), 'seed'),
    (dict(step_fn=3), 'step_fn'), (dict(clip=0.), 'clip'), (dict(bs=0), 'bs'), (dict(sigmas=[2., 3., 0.]), 'decrease'),
    (dict(model=lambda x, t: x), 'torch module'),
])
def test_sample_bad_arguments(net, kwargs, match):
    kw = {**dict(model=net, sched=SCHED, sigmas=karras_sigmas(SCHED, 2), n=1, size=(1, 16, 16)), **kwargs}
    with pytest.raises(BAD, match=match): sigma_sample(**kw)


# ---------------------------------------------------------------- distillation

def test_student_is_the_teacher_where_the_gain_is_not_capped(net):
    st = Student(copy.deepcopy(net), SCHED, max_gain=5.)
    x = torch.randn(3, 1, 16, 16)
    cap = int((schedule_sigmas(SCHED) <= 5.).nonzero().max())             # the last step with σ ≤ K
    with torch.no_grad():
        for t in (0, 300, cap):
            tt = torch.full((3,), t)
            torch.testing.assert_close(st(x, tt), net(x, tt), rtol=0, atol=1e-6)
        for t in (cap + 20, 990):                                           # capped: x̂0 = (x - s·o)/m, its ε̂ matches
            tt = torch.full((3,), t)
            a, s, m = st.coefs(tt, x)
            assert (m > a).all()
            x0 = (x - s * st.net(x, tt)) / m
            torch.testing.assert_close(((x - s * st(x, tt)) / a).double(), x0.double(), rtol=1e-3, atol=2e-3)
    frac = st(x, torch.tensor([500.5, 500.5, 500.5]))                       # fractional steps work too
    assert frac.shape == x.shape and torch.isfinite(frac).all()

def test_teacher_target_lands_where_two_teacher_steps_go(net):
    x = torch.randn(4, 1, 16, 16)
    x[3] = x[0]
    t, tm, tn = torch.tensor([749, 499, 249, 749]), torch.tensor([624, 374, 124, 624]), torch.tensor([499, 249, -1, 499])
    tgt = teacher_target(net, x, t, tm, tn, SCHED)
    dt = autocast_dtype('cpu'); amp = partial(torch.autocast, 'cpu', dtype=dt, enabled=dt is not None)
    with torch.no_grad():
        for j in range(4):
            xj, (u, um, un) = x[j:j+1], (int(v[j]) for v in (t, tm, tn))
            tj = teacher_target(net, xj, t[j:j+1], tm[j:j+1], tn[j:j+1], SCHED)  # one image, as the two steps below
            with amp(): e = net(xj, t[j:j+1]).float()                      # the teacher as teacher_target runs it
            mid = ddim_step(xj, e, u, um, SCHED, clip=1.)
            with amp(): e = net(mid, tm[j:j+1]).float()
            two = ddim_step(mid, e, um, un, SCHED, clip=1.)
            a, s = SCHED.abar[u].sqrt(), (1 - SCHED.abar[u]).sqrt()
            one = ddim_step(xj, (xj - a * tj) / s, u, un, SCHED)
            torch.testing.assert_close(one, two, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(tgt[0], tgt[3])                             # the same image, the same target

@pytest.mark.parametrize('args, match', [
    (lambda x, n: (n, x, torch.tensor([9, 9]), torch.tensor([5, 5]), torch.tensor([1, 1])), 'one time step per image'),
    (lambda x, n: (n, x, torch.tensor([9., 9., 9.]), torch.tensor([5, 5, 5]), torch.tensor([1, 1, 1])), 'integer'),
    (lambda x, n: (n, x, torch.tensor([9, 9, 9]), torch.tensor([5, 5, 5]), torch.tensor([6, 6, 6])), 't_prev'),
    (lambda x, n: (n, x, torch.tensor([9, 9, 9]), torch.tensor([5, 4, 5]), torch.tensor([1, 1, 1])), 'different'),
    (lambda x, n: (None, x, torch.tensor([9, 9, 9]), torch.tensor([5, 5, 5]), torch.tensor([1, 1, 1])), 'teacher'),
    (lambda x, n: (n, 'x', torch.tensor([9]), torch.tensor([5]), torch.tensor([1])), 'x_t'),
])
def test_teacher_target_bad_arguments(net, args, match):
    with pytest.raises(BAD, match=match): teacher_target(*args(torch.randn(3, 1, 16, 16), net), SCHED)

def test_student_and_callback_bad_arguments(net):
    for kw in (dict(max_gain=0.5), dict(max_gain='5')):
        with pytest.raises(BAD, match='max_gain'): Student(net, SCHED, **kw)
    with pytest.raises(BAD, match='torch module'): Student(None, SCHED)
    st = Student(copy.deepcopy(net), SCHED)
    for steps in (0, 501, 2.5):                               # the teacher would need 0, 1002 or 5 steps
        with pytest.raises(BAD, match='twice as many'): DistillCB(net, st, SCHED, steps)
    with pytest.raises(BAD, match='Student'): DistillCB(net, net, SCHED, 4)
    with pytest.raises(BAD, match='teacher'): DistillCB('net', st, SCHED, 4)
    with pytest.raises(BAD, match='student must be a Student'): distill(net, net, 4)

def test_callback_builds_the_batch_and_gives_the_teacher_back(net, raise_at):
    from miniai.learner import Learner, DeviceCB, TrainCB
    st = Student(copy.deepcopy(net), SCHED)
    teacher = copy.deepcopy(net).train()
    cb = DistillCB(teacher, st, SCHED, 4)
    x0 = torch.rand(6, 1, 16, 16) * 2 - 1
    seen = []
    class Look(TrainCB):
        def predict(self, learn): seen.append(learn.batch); super().predict(learn)
    dls = type('D', (), dict(train=[(x0, torch.zeros(6))], valid=[(x0, torch.zeros(6))]))()
    learn = Learner(st.net, dls, distill_loss, lr=1e-3, cbs=[cb, DeviceCB(), Look(n_inp=2)])
    learn.fit(1)
    x_t, t, target, w = seen[0]
    assert x_t.shape == target.shape == x0.shape and w.shape == (6, 1, 1, 1)
    assert set(t.tolist()) <= set(cb.grid[0:-1:2].tolist())                # the student's own steps
    assert (w >= 1).all() and (w <= 25).all()
    assert teacher.training                                                # given back as it was
    with pytest.raises(RuntimeError):
        learn.fit(1, cbs=[raise_at('before_batch', RuntimeError)])
    assert teacher.training and cb.restore is None

def test_distill_loss_falls():
    torch.manual_seed(0)
    teacher = UNet(nfs=(8, 16)).eval()
    st = Student(copy.deepcopy(teacher), SCHED)
    torch.manual_seed(1)
    rec = distill(st, teacher, 2, n_train=256, n_valid=64, bs=32, lr=2e-3)
    assert rec['hist'][-1]['valid_loss'] < rec['valid_before']
    assert len(rec['losses']) == 8 and rec['teacher_steps'] == 4
    st2 = Student(copy.deepcopy(teacher), SCHED)
    torch.manual_seed(1)
    assert distill(st2, teacher, 2, n_train=256, n_valid=64, bs=32, lr=2e-3)['losses'] == rec['losses']   # seeded

def test_progressive_distillation_caches_each_student(tmp_path, monkeypatch):
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path))
    torch.manual_seed(0)
    teacher = UNet(nfs=(8, 16)).eval()
    recipe = dict(unet=dict(nfs=(8, 16)), made_by='a test')
    kw = dict(start=4, end=1, n_train=64, bs=32, n_valid=32, teacher=teacher, teacher_recipe=recipe)
    rounds = progressive_distillation(**kw)
    assert [r['steps'] for r in rounds] == [2, 1]
    r2 = rounds[1]['record']['recipe']
    assert r2['halving'] == [2, 1] and r2['teacher']['halving'] == [4, 2] and r2['teacher']['teacher'] == recipe
    x = diffusion_sample(rounds[1]['model'], SCHED, 2, 1, step_fn=ddim_step, seed=0, progress=False)
    assert x.shape == (2, 1, 32, 32) and torch.isfinite(x).all()
    files = sorted((tmp_path/'models').glob('ddpm_student-*.pth'))
    assert len(files) == 2
    monkeypatch.setattr(samplers, 'Learner', lambda *a, **k: pytest.fail('trained again instead of loading'))
    again = progressive_distillation(**kw)
    for a, b in zip(rounds, again):
        assert all(torch.equal(p, q) for p, q in zip(a['model'].state_dict().values(), b['model'].state_dict().values()))
    # a student checkpoint of another architecture in the cache: one clear error naming the file
    path = next(f for f in files if f.stat().st_mtime == max(g.stat().st_mtime for g in files))
    record = torch.load(path, weights_only=True)['record']
    save_checkpoint(path, samplers.Student(UNet(nfs=(16, 32)), SCHED), record=record)
    with pytest.raises(DataError, match='another architecture'): progressive_distillation(**kw)

@pytest.mark.parametrize('kwargs, match', [
    (dict(start=64, end=3), 'power of 2'), (dict(start=48, end=4), 'power of 2'), (dict(start=4, end=4), 'end'),
    (dict(start=2000, end=4), 'start'), (dict(start=64, end=0), 'end'), (dict(n_train=[64, 64]), '2 values for 4'),
    (dict(teacher_recipe={}), "under 'unet'"), (dict(teacher='unet', teacher_recipe=dict(unet={})), 'torch module'),
])
def test_progressive_distillation_bad_arguments(net, kwargs, match):
    kw = {**dict(teacher=net, teacher_recipe=dict(unet=dict(nfs=(8, 16)))), **kwargs}
    with pytest.raises(BAD, match=match): progressive_distillation(**kw)

def test_no_run_mode_in_default_arguments():
    import inspect
    ps = inspect.signature(progressive_distillation).parameters
    assert all(ps[k].default is None for k in ('n_train', 'bs', 'n_valid'))

def test_denoiser_loss_and_coefficients_bad_arguments(net):
    den = Denoiser(net, SCHED)
    for args, match in (((torch.zeros(1, 1, 16, 16), 0.), 'sigma'), (([0.], 1.), 'tensor'),
                        ((torch.zeros(1, 1, 16, 16), 'a'), 'sigma')):
        with pytest.raises(BAD, match=match): den(*args)
    for kw in (dict(clip=-1.), dict(bs=0), dict(bs=2.)):
        with pytest.raises(BAD): Denoiser(net, SCHED, **kw)
    with pytest.raises(BAD, match='NoiseSchedule'): Denoiser(net, 'cosine')
    st = Student(copy.deepcopy(net), SCHED)
    for t in (5, torch.zeros(2, 2), torch.zeros(3)):
        with pytest.raises(BAD, match='one per image'): st.coefs(t, torch.zeros(2, 1, 4, 4))
    x, w = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 1, 1)
    assert distill_loss(x + 1, x, w * 3).item() == 3.
    for args in ((x, x[:1], w), (x, x, torch.ones(2)), (x, 'x', w)):
        with pytest.raises(BAD, match='distill_loss'): distill_loss(*args)
    with pytest.raises(BAD, match='retrain'):
        progressive_distillation(teacher=net, teacher_recipe=dict(unet={}), retrain='yes')
