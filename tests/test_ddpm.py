"Our DDPM schedule, noising and sampler step against diffusers' DDPMScheduler; the U-Net's shapes and errors; checkpoints."
import diffusers, pytest, torch
from types import SimpleNamespace
import miniai.ddpm
from miniai.ddpm import pretrained_ddpm, NoiseSchedule, noisify, ddpm_step, timesteps, diffusion_sample, UNet, load_unet, timestep_embedding, DDPMCB, EMACB
from miniai.data import DataError
from miniai.learner import save_atomic

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
    with pytest.raises(DataError, match='not a miniai model checkpoint'): load_unet(tmp_path/'dict.pth')

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
    cb.after_epoch(learn); assert model.weight.item() == 4.              # ...and training resumes from its own weights
    cb.after_fit(learn); assert model.weight.item() == pytest.approx(avg) and cb.last['weight'].item() == 4.
