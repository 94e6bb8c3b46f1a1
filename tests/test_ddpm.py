"Our DDPM schedule, noising and sampler step against diffusers' DDPMScheduler; the U-Net's shapes and errors; checkpoints."
import inspect
import diffusers, pytest, torch
from types import SimpleNamespace
import miniai.ddpm
from miniai.ddpm import (pretrained_ddpm, NoiseSchedule, noisify, ddpm_step, timesteps, diffusion_sample,
                         UNet, load_unet, timestep_embedding, DDPMCB, SampleCB, check_step, diffusion_dls,
                         ddpm_recipe, train_ddpm, EmbResBlock)
from miniai.sgd import EMACB
from miniai.data import DataError
from miniai.checkpoint import save_atomic
from miniai.learner import (Learner, Callback, CancelFitException, CancelEpochException, DeviceCB, MetricsCB,
                            TrainCB)

BAD = (TypeError, ValueError)

def ref_scheduler(name, T=1000, n=None):
    beta_schedule = {'linear': 'linear', 'cosine': 'squaredcos_cap_v2'}[name]
    s = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=beta_schedule, clip_sample=False, variance_type='fixed_small',
                                  timestep_spacing='trailing')
    if n: s.set_timesteps(n)
    return s

@pytest.mark.parametrize('name', ['linear', 'cosine'])
def test_schedules_match_diffusers(name):
    ours, ref = getattr(NoiseSchedule, name)(), ref_scheduler(name)
    torch.testing.assert_close(ours.betas, ref.betas)
    torch.testing.assert_close(ours.abar, ref.alphas_cumprod)

def test_noisify_matches_add_noise():
    sched, ref = NoiseSchedule.cosine(), ref_scheduler('cosine')
    x0, t = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 10, 500, 998, 999])
    xt, t2, eps = noisify(x0, sched, t, generator=torch.Generator().manual_seed(3))
    assert torch.equal(t2, t)
    torch.testing.assert_close(xt, ref.add_noise(x0, eps, t))

@pytest.mark.parametrize('name', ['linear', 'cosine'])
@pytest.mark.parametrize('n', [None, 50])  # every step, or 50 skipping steps
def test_ddpm_step_matches_diffusers(name, n):
    sched, ref = getattr(NoiseSchedule, name)(), ref_scheduler(name, n=n or 1000)
    ts = timesteps(1000, n or 1000)
    assert ts == ref.timesteps.tolist()
    x, eps = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    for i in [0, 1, len(ts)//2, len(ts)-2, len(ts)-1]:
        t = ts[i]; t_prev = ts[i+1] if i+1 < len(ts) else -1
        ours = ddpm_step(x, eps, t, t_prev, sched, generator=torch.Generator().manual_seed(i))
        theirs = ref.step(eps, t, x, generator=torch.Generator().manual_seed(i)).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)

def test_ddpm_step_noise_and_clip():
    sched = NoiseSchedule.cosine()
    x, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    a = ddpm_step(x, eps, 500, 499, sched, generator=torch.Generator().manual_seed(0))
    b = ddpm_step(x, eps, 500, 499, sched, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a, b)                                   # fresh noise at t > 0
    torch.testing.assert_close(ddpm_step(x, eps, 0, -1, sched), ddpm_step(x, eps, 0, -1, sched))  # none at the last step
    x0 = ddpm_step(x, eps * 0, 0, -1, sched, clip=1.)
    assert x0.abs().max() <= 1 + 1e-6

def test_timestep_embedding():
    e = timestep_embedding(torch.tensor([0, 5]), 8)
    assert e.shape == (2, 8)
    torch.testing.assert_close(e[0], torch.tensor([0.]*4 + [1.]*4))
    torch.testing.assert_close(e[1, 0], torch.tensor(5.).sin())

def test_unet_shapes_and_errors():
    torch.manual_seed(0)
    m = UNet(nfs=(8, 16), n_blocks=1)
    assert m(torch.randn(3, 1, 16, 16), torch.tensor([1, 2, 3])).shape == (3, 1, 16, 16)
    with pytest.raises(ValueError, match=r'15×16 is not divisible by 2'): m(torch.randn(1, 1, 15, 16), torch.tensor([1]))
    with pytest.raises(ValueError, match=r'not divisible by 8.*pad'): UNet()(torch.randn(1, 1, 28, 28), torch.tensor([1]))
    with pytest.raises(ValueError, match=r'expected images \(B, 1, H, W\)'): m(torch.randn(1, 3, 16, 16), torch.tensor([1]))
    with pytest.raises(ValueError, match=r'one time step per image'): m(torch.randn(2, 1, 16, 16), torch.tensor([1]))
    assert UNet(nfs=(8, 16), use_t=False)(torch.randn(2, 1, 16, 16)).shape == (2, 1, 16, 16)

def test_unet_time_step_changes_output():
    torch.manual_seed(0)
    m = UNet(nfs=(8, 16))
    for p in m.parameters(): p.data.normal_(0, 0.1)  # the zero-initialised convs would hide the embedding
    x = torch.randn(1, 1, 16, 16)
    assert not torch.allclose(m(x, torch.tensor([0])), m(x, torch.tensor([900])))

def test_checkpoint_roundtrip_and_errors(tmp_path):
    torch.manual_seed(0)
    m = UNet(nfs=(8, 16))
    record = dict(config=dict(nfs=(8, 16), use_t=True), epochs=0, minutes=0.)
    save_atomic({'model': m.state_dict(), 'record': record}, tmp_path/'u.pth')
    m2, rec = load_unet(tmp_path/'u.pth')
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 700])
    torch.testing.assert_close(m2(x, t), m.eval()(x, t), rtol=0, atol=0)
    # weights for another architecture
    save_atomic({'model': UNet(nfs=(8, 32)).state_dict(), 'record': record}, tmp_path/'other.pth')
    with pytest.raises(DataError, match='another architecture'): load_unet(tmp_path/'other.pth')
    (tmp_path/'bad.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(DataError, match='could not be read'): load_unet(tmp_path/'bad.pth')
    save_atomic({'weights': 1}, tmp_path/'dict.pth')
    with pytest.raises(DataError, match='not a miniai checkpoint'): load_unet(tmp_path/'dict.pth')
    save_atomic({'model': m.state_dict()}, tmp_path/'norecord.pth')
    with pytest.raises(DataError, match='no U-Net config'): load_unet(tmp_path/'norecord.pth')

def test_checkpoint_last_and_ema_weights(tmp_path):
    torch.manual_seed(0)
    avg, last = UNet(nfs=(8, 16)), UNet(nfs=(8, 16))
    record = dict(config=dict(nfs=(8, 16), use_t=True), last_weights=last.state_dict())
    save_atomic({'model': avg.state_dict(), 'record': record}, tmp_path/'u.pth')
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 700])
    for weights, ref in (('last', last), ('ema', avg)):
        m, rec = load_unet(tmp_path/'u.pth', weights=weights)
        torch.testing.assert_close(m(x, t), ref.eval()(x, t), rtol=0, atol=0)
        assert 'last_weights' not in rec
    with pytest.raises(ValueError, match="'last' or 'ema'"): load_unet(tmp_path/'u.pth', weights='best')
    record['last_weights'] = UNet(nfs=(8, 32)).state_dict()
    save_atomic({'model': avg.state_dict(), 'record': record}, tmp_path/'bad.pth')
    with pytest.raises(DataError, match='another architecture'): load_unet(tmp_path/'bad.pth', weights='last')

def test_sampler_seeded_and_keep():
    torch.manual_seed(0)
    m, sched = UNet(nfs=(8, 16)), NoiseSchedule.cosine(T=50)
    a = diffusion_sample(m, sched, n=3, size=(1, 16, 16), seed=1, progress=False)
    b = diffusion_sample(m, sched, n=3, size=(1, 16, 16), seed=1, progress=False)
    assert a.shape == (3, 1, 16, 16) and torch.equal(a, b)
    kept = diffusion_sample(m, sched, n=3, steps=10, size=(1, 16, 16), seed=1, keep=4, progress=False)
    assert len(kept) == 5 and all(k.shape == (3, 1, 16, 16) for k in kept)
    with pytest.raises(ValueError, match='from 1 to T=50'): timesteps(50, 51)

@pytest.mark.parametrize('n', [1000, 20])
def test_clipped_ddpm_step_matches_diffusers(n):
    "With x0 clamped to [-1, 1] (what `diffusion_sample` does by default), against diffusers with clip_sample=True."
    sched = NoiseSchedule.cosine()
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule='squaredcos_cap_v2', clip_sample=True, variance_type='fixed_small',
                                  timestep_spacing='trailing')
    ref.set_timesteps(n)
    ts = timesteps(1000, n)
    x, eps = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    for i in [0, 1, len(ts) - 1]:
        t_prev = ts[i+1] if i+1 < len(ts) else -1
        ours = ddpm_step(x, eps, ts[i], t_prev, sched, generator=torch.Generator().manual_seed(i), clip=1.)
        theirs = ref.step(eps, ts[i], x, generator=torch.Generator().manual_seed(i)).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=5e-5)  # float32 rounding differs at t = 999, where ᾱ is tiny

def test_min_snr_loss():
    sched = NoiseSchedule.cosine()
    t, eps, preds = torch.tensor([0, 100, 600, 999]), torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    snr = sched.abar[t] / (1 - sched.abar[t])
    w = torch.minimum(snr, torch.tensor(5.)) / snr                      # 1 at the noisy steps, < 1 at the nearly clean ones
    assert w[0] < 0.01 and w[-1] == 1
    learn = SimpleNamespace(training=True, batch=(None, t, eps), preds=preds, loss=torch.tensor(-1.))
    DDPMCB(sched, min_snr=5.).get_loss(learn)
    torch.testing.assert_close(learn.loss, ((preds - eps) ** 2).mean((1, 2, 3)).mul(w).mean())
    learn.loss = torch.tensor(-1.); learn.training = False              # validation keeps the learner's plain loss
    DDPMCB(sched, min_snr=5.).get_loss(learn)
    assert learn.loss == -1.

def test_pretrained_ddpm_checks_weights_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path))                   # an empty cache: the model would have to be trained
    def fail(*args, **kwargs): raise AssertionError('trained before checking `weights`')
    monkeypatch.setattr(miniai.ddpm, 'train_ddpm', fail)
    with pytest.raises(ValueError, match="'last' or 'ema'"): pretrained_ddpm(weights='best')

def test_ema_callback():
    model = torch.nn.Linear(1, 1, bias=False)
    learn, cb = SimpleNamespace(model=model, training=True), EMACB(decay=0.5)
    with torch.no_grad(): model.weight.fill_(0.)
    cb.before_fit(learn)
    avg, n = 0., 0
    for v in [1., 2., 3., 4.]:                                           # the training steps' weights
        with torch.no_grad(): model.weight.fill_(v)
        cb.after_batch(learn); n += 1
        d = min(0.5, (1 + n) / (10 + n)); avg = d * avg + (1 - d) * v
    assert cb.avg['weight'].item() == pytest.approx(avg) and avg != 4.
    learn.training = False; cb.before_epoch(learn)                       # validation sees the average...
    assert model.weight.item() == pytest.approx(avg)
    cb.after_batch(learn)                                                # ...which validation batches do not update
    assert cb.avg['weight'].item() == pytest.approx(avg)
    cb.cleanup_epoch(learn); assert model.weight.item() == 4.  # ...and training goes on from its own
    cb.cleanup_fit(learn)
    assert model.weight.item() == pytest.approx(avg) and cb.last['weight'].item() == 4.

def test_ema_callback_swaps_back_after_a_cancelled_or_failed_validation():
    model = torch.nn.Linear(1, 1, bias=False)
    learn, cb = SimpleNamespace(model=model, training=True), EMACB(decay=0.5)
    with torch.no_grad(): model.weight.fill_(0.)
    cb.before_fit(learn)
    with torch.no_grad(): model.weight.fill_(4.)
    cb.after_batch(learn)
    learn.training = False; cb.before_epoch(learn)
    assert model.weight.item() != 4.                                     # the average is in for validation
    cb.cleanup_epoch(learn)                                              # cancelled: no after_epoch
    assert model.weight.item() == 4.
    cb.cleanup_epoch(learn); assert model.weight.item() == 4.            # nothing to undo twice
    cb.cleanup_fit(learn)                                   # a cancelled fit ends as a finished one
    assert model.weight.item() != 4. and cb.last['weight'].item() == 4.

class Weights(Callback):
    "Records the weights at the start of every training batch."
    order = 100
    def __init__(self): self.seen = []
    def before_batch(self, learn):
        if learn.training: self.seen.append((learn.epoch, learn.model.weight.detach().clone()))

class StopValid(Callback):
    "Cancels (or breaks) the validation pass of `epoch` at its first batch."
    order = 100
    def __init__(self, exc, epoch=0): self.exc, self.epoch = exc, epoch
    def before_batch(self, learn):
        if not learn.training and learn.epoch == self.epoch: raise self.exc

def _lin_learner(cbs):
    torch.manual_seed(0)
    x = torch.randn(32, 3); y = x @ torch.tensor([[1.], [-2.], [.5]])
    dl = [(x[i:i+8], y[i:i+8]) for i in range(0, 32, 8)]
    return Learner(torch.nn.Linear(3, 1, bias=False), SimpleNamespace(train=dl, valid=dl),
                   torch.nn.functional.mse_loss, lr=0.1, cbs=[TrainCB(), *cbs])

@pytest.mark.parametrize('exc', [CancelEpochException(), RuntimeError('broken batch')])
def test_ema_training_goes_on_from_its_own_weights(exc):
    "After a validation pass is cancelled (or fails), training goes on from its own weights."
    rec, ema = Weights(), EMACB(0.9)
    learn = _lin_learner([ema, rec, StopValid(exc)])
    end_of_epoch0 = []
    class Grab(Callback):
        order = 1
        def after_epoch(self, learn):
            if learn.training and learn.epoch == 0: end_of_epoch0.append(learn.model.weight.detach().clone())
    if isinstance(exc, RuntimeError):
        with pytest.raises(RuntimeError, match='broken batch'): learn.fit(2, cbs=[Grab()])
        assert torch.equal(ema.last['weight'], end_of_epoch0[0])         # the live weights are kept...
        assert not torch.equal(learn.model.weight, end_of_epoch0[0]) # ...the model ends with the average
        return
    learn.fit(2, cbs=[Grab()])
    first_of_epoch1 = next(w for e, w in rec.seen if e == 1)
    assert torch.equal(first_of_epoch1, end_of_epoch0[0])

def test_ema_after_a_cancelled_fit():
    class Stop(Callback):
        order = 100
        def after_batch(self, learn):
            if learn.iter == 1: raise CancelFitException()
    ema = EMACB(0.9)
    learn = _lin_learner([ema, Stop()])
    learn.fit(3)
    assert 'weight' in ema.last and not torch.equal(ema.last['weight'], learn.model.weight)

@pytest.mark.parametrize('decay', [1., -0.1, '0.9', True])
def test_ema_bad_decay(decay):
    with pytest.raises(ValueError, match='decay must be'): EMACB(decay)

def test_train_ddpm_after_a_cancelled_fit():
    "A training run stopped by a callback still returns its record, with the last weights beside the average."
    class Stop(Callback):
        order = 100
        def after_batch(self, learn):
            if learn.training and learn.iter == 1: raise CancelFitException()
    torch.manual_seed(0)
    m = UNet(nfs=(8, 16))
    rec = train_ddpm(m, epochs=2, bs=16, n_train=64, n_valid=16, cbs=[Stop()])
    assert rec['epochs'] == 2 and set(rec['last_weights']) == set(m.state_dict())
    assert len(rec['hist']) == 1 and rec['hist'][0]['partial'] == ['train', 'valid']  # the cut-short epoch is marked

def test_train_ddpm_with_fit_one_cycle_is_the_old_recipe():
    "`fit_one_cycle` runs the schedule the recipe spelled out with BatchSchedCB(OneCycle): same weights."
    from functools import partial
    from miniai.sgd import Adam, BatchSchedCB, OneCycle
    from miniai.learner import MixedPrecision
    torch.manual_seed(0); a = UNet(nfs=(8, 16)); b = UNet(nfs=(8, 16)); b.load_state_dict(a.state_dict())
    torch.manual_seed(1); train_ddpm(a, epochs=1, bs=16, n_train=48, n_valid=16, ema=None)
    sched, dls, metrics = NoiseSchedule.cosine(), diffusion_dls(16, 48, 16, seed=42), MetricsCB()
    metrics.log = lambda row: None
    one_cycle = BatchSchedCB(partial(OneCycle, max_lr=3e-3, total_steps=3))
    cbs = [DDPMCB(sched, min_snr=5.), DeviceCB(), MixedPrecision(), metrics, one_cycle]
    learn = Learner(b, dls, torch.nn.functional.mse_loss, lr=3e-3, cbs=cbs, opt_func=Adam)
    torch.manual_seed(1); learn.fit(1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

# time steps, step functions and the precision of a skipping step

@pytest.mark.parametrize('t, t_prev, err, match', [
    (-1, -2, ValueError, r't=-1 is outside 0\.\.999'), (1000, 999, ValueError, r't=1000 is outside'),
    (500, 500, ValueError, r't_prev=500 must be below t=500'), (500, 600, ValueError, 't_prev=600 must be'),
    (500, -2, ValueError, 'at least -1'), (500.0, 499, TypeError, 't must be one integer'),
    (True, 0, TypeError, 't must be one integer'), (torch.tensor([5]), 4, TypeError, 't must be one integer'),
    (torch.tensor(5.), 4, TypeError, 't must be one integer'), ('5', 4, TypeError, 't must be one integer'),
])
def test_check_step_and_ddpm_step_reject_bad_steps(t, t_prev, err, match):
    sched, x = NoiseSchedule.cosine(), torch.randn(1, 1, 4, 4)
    with pytest.raises(err, match=match): check_step(t, t_prev, sched)
    with pytest.raises(err, match=match): ddpm_step(x, x, t, t_prev, sched)

def test_check_step_accepts_integer_kinds():
    import numpy as np
    sched = NoiseSchedule.cosine(T=10)
    assert check_step(np.int64(5), torch.tensor(3), sched) == (5, 3) and check_step(0, -1, sched) == (0, -1)
    assert all(type(v) is int for v in check_step(np.int64(5), torch.tensor(3), sched))
    with pytest.raises(ValueError, match='clip must be'): check_step(5, 3, sched, clip=-1.)
    with pytest.raises(TypeError, match='NoiseSchedule'): check_step(5, 3, 'cosine')
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match="must have x_t's shape"): ddpm_step(x, x[..., :2], 5, 3, sched)

def test_abar_prev():
    sched = NoiseSchedule.cosine(T=10)
    assert sched.abar_prev(-1).item() == 1.
    assert sched.abar_prev(9) == sched.abar[9] and sched.abar_prev(0) == sched.abar[0]
    for bad in (10, -2):
        with pytest.raises(ValueError, match=r'outside -1\.\.9'): sched.abar_prev(bad)
    with pytest.raises(TypeError): sched.abar_prev(1.5)

def ddpm_step_f64(x, eps, t, t_prev, sched, noise, clip=None):
    "The DDPM step in float64, from the same (float32) table of ᾱ."
    x, eps, noise, abar = x.double(), eps.double(), noise.double(), sched.abar.double()
    a_t, a_p = abar[t], (abar[t_prev] if t_prev >= 0 else torch.tensor(1., dtype=torch.float64))
    alpha = a_t / a_p; beta = 1 - alpha
    x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    if clip is not None: x0 = x0.clamp(-clip, clip)
    mean = a_p.sqrt() * beta / (1 - a_t) * x0 + alpha.sqrt() * (1 - a_p) / (1 - a_t) * x
    return mean if t_prev < 0 else mean + ((1 - a_p) / (1 - a_t) * beta).sqrt() * noise

@pytest.mark.parametrize('n', [1000, 50, 20, 10, 4, 2])
@pytest.mark.parametrize('name', ['cosine', 'linear'])
def test_ddpm_step_matches_float64(name, n):
    "An n-step chain against float64 (through √(1-β), float32 was 9% off at 999 → 899)."
    sched = getattr(NoiseSchedule, name)()
    ts = timesteps(1000, n) + [-1]
    x, eps = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    for t, t_prev in list(zip(ts, ts[1:]))[:12]:
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(t))
        ours = ddpm_step(x, eps, t, t_prev, sched, generator=torch.Generator().manual_seed(t))
        ref = ddpm_step_f64(x, eps, t, t_prev, sched, noise)
        torch.testing.assert_close(ours.double(), ref, rtol=2e-6, atol=2e-6 * ref.abs().max().item())

def test_noisify_rejects_bad_time_steps():
    sched, x0 = NoiseSchedule.cosine(), torch.randn(3, 1, 4, 4)
    for t in (torch.tensor([0, -1, 5]), torch.tensor([0, 1000, 5])):
        with pytest.raises(ValueError, match=r'time steps must be in 0\.\.999'): noisify(x0, sched, t)
    for t in (torch.tensor([0., 1., 2.]), torch.tensor([1, 2]), [1, 2, 3]):
        with pytest.raises(ValueError, match=r'integer tensor of one time step per image, shape \(3,\)'):
            noisify(x0, sched, t)

@pytest.mark.parametrize('make, match', [
    (lambda: NoiseSchedule.linear(T=0), 'T must be an integer >= 1'),
    (lambda: NoiseSchedule.cosine(T=10.), 'T must be'),
    (lambda: NoiseSchedule.linear(beta_start=0.), r'beta_start must be a number in \(0, 1\)'),
    (lambda: NoiseSchedule.linear(beta_end=1.), 'beta_end must be'),
    (lambda: NoiseSchedule.cosine(s=-0.1), 's must be'),
    (lambda: NoiseSchedule.cosine(max_beta=1.), 'max_beta must be'),
    (lambda: NoiseSchedule.cosine(max_beta=float('nan')), 'max_beta must be'),
    (lambda: NoiseSchedule(torch.tensor([])), 'T ≥ 1 values'),
    (lambda: NoiseSchedule(torch.full((2, 3), .1)), '1-d tensor'),
    (lambda: NoiseSchedule([0.1, float('nan')]), r'betas\[1\] = nan'),
    (lambda: NoiseSchedule([0.1, 1.0]), r'betas\[1\] = 1\.0'),
    (lambda: NoiseSchedule('abc'), 'betas must be'),
    (lambda: NoiseSchedule([0.1], name=3), 'name must be a string'),
])
def test_noise_schedule_bad_arguments(make, match):
    with pytest.raises(BAD, match=match): make()

def test_timestep_embedding_bad_dim():
    for dim in (7, 0, 2.0):
        with pytest.raises(BAD, match='dim must be'): timestep_embedding(torch.tensor([1, 2]), dim)

# the sampler's arguments and the model's mode

@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return UNet(nfs=(8, 16)), NoiseSchedule.cosine(T=20)

def sample(m, sched, **kwargs):
    return diffusion_sample(m, sched, **{**dict(n=2, size=(1, 16, 16), progress=False), **kwargs})

@pytest.mark.parametrize('kwargs, match', [
    (dict(steps=0), r'steps must be an integer from 1 to 20'), (dict(steps=21), 'steps must be'),
    (dict(steps=2.), 'steps must be'), (dict(keep=6, steps=5), r'keep must be an integer from 0 to 5'),
    (dict(keep=21), 'keep must be'), (dict(keep=-1), 'keep must be'),
    (dict(n=0), 'n must be an integer >= 1'), (dict(n=-3), 'n must be'), (dict(bs=0), 'bs must be'),
    (dict(size=(1, 16)), r'size must be \(C, H, W\)'), (dict(size=(1, -16, 16)), 'size must be'),
    (dict(size=16), 'size must be'), (dict(clip=0.), 'clip must be'), (dict(clip=-1.), 'clip must be'),
    (dict(seed=1.5), 'seed must be'), (dict(step_fn=None), 'step_fn must be'),
])
def test_diffusion_sample_bad_arguments(tiny, kwargs, match):
    with pytest.raises(BAD, match=match): sample(*tiny, **kwargs)

def test_diffusion_sample_keep_counts(tiny):
    for steps, keep in ((5, 1), (5, 5), (7, 3), (20, 4)):
        kept = sample(*tiny, steps=steps, seed=1, keep=keep)
        assert len(kept) == keep + 1
        torch.testing.assert_close(kept[-1], sample(*tiny, steps=steps, seed=1))

def test_diffusion_sample_restores_the_mode(tiny):
    m, sched = tiny
    m.train(); m.mid.eval()
    sample(m, sched, steps=2)
    assert m.training and not m.mid.training and m.conv_in.training
    m.eval()
    sample(m, sched, steps=2)
    assert not any(mod.training for mod in m.modules())
    class Boom(torch.nn.Module):
        def __init__(self): super().__init__(); self.lin = torch.nn.Linear(1, 1)
        def forward(self, x, t): assert not self.training; raise RuntimeError('boom')
    b = Boom().train()
    with pytest.raises(RuntimeError, match='boom'): sample(b, sched, steps=2)
    assert b.training and b.lin.training

def test_sample_cb_restores_the_mode_and_checks_args(tiny, monkeypatch):
    m, sched = tiny
    monkeypatch.setattr(miniai.ddpm, 'show_images', lambda *a, **k: None)
    monkeypatch.setattr(miniai.ddpm.plt, 'show', lambda: None)
    cb = SampleCB(sched, n=2, steps=2)
    for training in (True, False):
        m.train(training)
        learn = SimpleNamespace(model=m, training=training, do_valid=False, epoch=0, n_epochs=1)
        cb.after_epoch(learn)
        assert all(mod.training == training for mod in m.modules())
    assert len(cb.samples) == 2 and cb.samples[0].shape == (2, 1, 32, 32)
    for kw in (dict(n=0), dict(steps=0), dict(steps=21), dict(every=0), dict(seed=None)):
        with pytest.raises(BAD): SampleCB(sched, **kw)

@pytest.mark.parametrize('kwargs, match', [
    (dict(bs=0), 'bs must be an integer >= 1'), (dict(bs=-5), 'bs must be'),
    (dict(n_train=0), r'n_train must be an integer from 1 to 60000'), (dict(n_train=-10), 'n_train must be'),
    (dict(n_train=60_001), 'n_train must be'), (dict(n_valid=0), 'n_valid must be'),
    (dict(n_valid=10_001), 'n_valid must be'), (dict(n_train=10.), 'n_train must be'),
])
def test_diffusion_dls_bad_sizes(kwargs, match):
    with pytest.raises(BAD, match=match): diffusion_dls(**kwargs)

# the cache key: the whole recipe, sizes resolved when called

def test_no_run_mode_in_default_arguments():
    for f in (pretrained_ddpm, ddpm_recipe):
        ps = inspect.signature(f).parameters
        assert ps['epochs'].default is None and ps['n_train'].default is None

def test_ddpm_recipe_is_complete_and_resolved_at_call_time(monkeypatch):
    monkeypatch.delenv('MINIAI_QUICK', raising=False)
    full = ddpm_recipe()
    train_args = set(inspect.signature(train_ddpm).parameters) - {'model', 'cbs'}
    assert set(full) == {'unet', 'schedule'} | train_args
    assert [full[k] for k in ('epochs', 'n_train', 'seed', 'bs', 'ema')] == [9, None, 42, 64, 0.999]
    assert full['unet'] == dict(n_in=1, n_out=1, nfs=(16, 32, 64, 128), n_blocks=1, use_t=True)
    assert full['schedule'] == dict(name='cosine', T=1000, s=0.008, max_beta=0.999)
    monkeypatch.setenv('MINIAI_QUICK', '1')
    quick = ddpm_recipe()
    assert quick['epochs'] == 1 and quick['n_train'] == 1024
    assert ddpm_recipe(epochs=3, n_train=100, use_t=False)['unet']['use_t'] is False
    monkeypatch.setenv('MINIAI_QUICK', 'maybe')
    with pytest.raises(ValueError, match='MINIAI_QUICK'): ddpm_recipe()
    bads = (dict(epochs=0), dict(epochs=1.5), dict(n_train=0), dict(n_train=70_000), dict(use_t='yes'),
            dict(seed=None))
    for bad in bads:
        with pytest.raises(BAD): ddpm_recipe(**{'epochs': 1, 'n_train': 10, **bad})

def test_a_changed_default_changes_the_recipe(monkeypatch):
    "If train_ddpm's defaults change, so do the recipe and the cache file: no stale model is loaded."
    old = ddpm_recipe(epochs=1, n_train=10)
    def train_ddpm(model, epochs=5, bs=128, lr=3e-3, n_train=None, n_valid=2000, seed=42, min_snr=5.,
                   ema=0.999, cbs=()): pass
    monkeypatch.setattr(miniai.ddpm, 'train_ddpm', train_ddpm)
    new = ddpm_recipe(epochs=1, n_train=10)
    assert new['bs'] == 128 and {k for k in old if old[k] != new[k]} == {'bs'}

def test_pretrained_ddpm_uses_the_recipe(monkeypatch):
    calls = []
    def fake(name, build, train, recipe, retrain=False):
        calls.append((name, recipe)); return build(), {'epochs': 1, 'n_train': 10, 'minutes': 0.}
    monkeypatch.setattr(miniai.ddpm, 'cached_model', fake)
    monkeypatch.setenv('MINIAI_QUICK', '1')
    pretrained_ddpm(use_t=False)
    assert calls == [('ddpm_unet', ddpm_recipe(use_t=False))]

def test_ddpm_cb_bad_arguments():
    sched = NoiseSchedule.cosine(T=10)
    for args, kw in (((sched,), dict(min_snr=0.)), ((sched,), dict(min_snr=-5.)), ((sched,), dict(valid_seed=0.5)),
                     (('cosine',), {})):
        with pytest.raises(BAD, match='DDPMCB'): DDPMCB(*args, **kw)


@pytest.mark.parametrize('make,exc,match', [
    (lambda: UNet(nfs=()), ValueError, 'UNet: nfs must be a non-empty list'),
    (lambda: UNet(nfs=16), TypeError, 'UNet: nfs must be a non-empty list or tuple of channel counts'),
    (lambda: UNet(nfs=(12, 24)), ValueError, r'UNet: each of nfs must be a multiple of 8, got \[12\]'),
    (lambda: UNet(nfs=(16, 0)), ValueError, 'UNet: each of nfs must be an integer >= 1'),
    (lambda: UNet(n_in=0), ValueError, 'UNet: n_in must be an integer >= 1'),
    (lambda: UNet(n_out=1.5), TypeError, 'UNet: n_out must be an integer'),
    (lambda: UNet(n_blocks=0), ValueError, 'UNet: n_blocks must be an integer >= 1'),
    (lambda: UNet(use_t=1), TypeError, 'UNet: use_t must be True or False'),
    (lambda: EmbResBlock(0, 8, 0), ValueError, 'EmbResBlock: ni must be'),
    (lambda: EmbResBlock(8, 8, -1), ValueError, 'EmbResBlock: n_emb must be an integer >= 0'),
    (lambda: EmbResBlock(12, 16, 0), ValueError, 'EmbResBlock: ni=12 must be a multiple of groups=8'),
])
def test_unet_settings_are_checked(make, exc, match):
    with pytest.raises(exc, match=match): make()


def test_unet_inputs_are_checked():
    m, t = UNet(nfs=(8, 16)), torch.zeros(2, dtype=torch.long)
    with pytest.raises(TypeError, match='UNet: x must be a float tensor of images'): m([[0.]], t)
    with pytest.raises(TypeError, match='got torch.uint8'): m(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), t)
    with pytest.raises(TypeError, match=r'UNet: t must be a \(B,\) tensor of time steps'): m(torch.zeros(2, 1, 8, 8), 5)
    with pytest.raises(ValueError, match='one time step per image'): m(torch.zeros(2, 1, 8, 8), torch.zeros(3))
    assert m(torch.zeros(2, 1, 8, 8), t).shape == (2, 1, 8, 8)
