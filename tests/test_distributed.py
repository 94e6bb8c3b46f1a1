"""miniai.distributed: shares of batches; the callback in one process (a process group of one) and under
torchrun with two processes (equal to one process over the same global batches; a rank that dies or hangs);
the command line; `launch`. Every launch has a time limit, every collective a timeout: nothing can hang."""
import re, socket, sys, time
from pathlib import Path
import pytest
import torch
import torch.distributed as dist
from torch import nn
import torch.nn.functional as F

from miniai.checkpoint import read_checkpoint
from miniai.datasets import BatchDataset, DataLoaders, batch_loader
from miniai.distributed import (DistributedCB, ShardedBatches, TORCHRUN_VARS, init_distributed, launch, main,
                                shard, shard_loader, under_torchrun)
from miniai.learner import Learner, TrainCB, Callback

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ddp_recipes  # noqa: E402

RECIPES_ENV = {'PYTHONPATH': str(HERE)}  # for the launched processes


def test_shard_cuts_a_batch_into_contiguous_nearly_equal_shares():
    for n in range(0, 12):
        for world in (1, 2, 3, 5):
            parts = [shard(torch.arange(n) * 10, r, world) for r in range(world)]
            assert torch.equal(torch.cat(parts), torch.arange(n) * 10)
            sizes = [len(p) for p in parts]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert shard([4, 1, 7, 5, 3], 1, 2).tolist() == [5, 3]


def _fracs(dl):
    return (dl.batch_sampler if isinstance(dl.batch_sampler, ShardedBatches) else dl.sampler).fracs


@pytest.mark.parametrize('kind', ddp_recipes.KINDS)
def test_two_ranks_views_make_up_the_loaders_batches(kind):
    "Without a group (shared=False), two copies of a loader seeded alike: rank 0's + rank 1's = the batch."
    def epoch(dl): torch.manual_seed(0); return list(dl)  # notebook 03's loader shuffles from torch's RNG
    glob = epoch(ddp_recipes.toy_dls(kind).train)
    dl0, dl1 = (shard_loader(ddp_recipes.toy_dls(kind).train, r, 2, shared=False) for r in range(2))
    b0, b1 = epoch(dl0), epoch(dl1)
    assert len(b0) == len(b1) == len(glob) == len(dl0) == 7
    for (x0, y0), (x1, y1), (x, y) in zip(b0, b1, glob):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    assert _fracs(dl0) == [0.5] * 6 + [3 / 5] and _fracs(dl1) == [0.5] * 6 + [2 / 5]  # the last: 5 = 3 + 2


def test_validation_shares_may_be_empty_training_shares_may_not():
    ds = BatchDataset(torch.arange(9), torch.arange(9))
    with pytest.raises(ValueError, match=r'batch 2 has 1 item\(s\), fewer than the 2 ranks.*drop_last'):
        shard_loader(batch_loader(ds, 4), 0, 2, shared=False, what='dls.train')
    assert len(list(shard_loader(batch_loader(ds, 4, drop_last=True), 1, 2, shared=False))) == 2
    r0, r1 = (shard_loader(batch_loader(ds, 4), r, 2, shared=False, valid=True) for r in range(2))
    assert [x.tolist() for x, _ in r0] == [[0, 1], [4, 5], [8]] and len(r0) == 3
    assert [x.tolist() for x, _ in r1] == [[2, 3], [6, 7]] and len(r1) == 2
    two = BatchDataset(torch.arange(2), torch.arange(2))
    with pytest.raises(ValueError, match='cannot give each of the 3 ranks a share'):
        shard_loader(batch_loader(two, 4), 0, 3, shared=False, valid=True)


def test_loaders_that_cannot_be_shared_out_and_bad_ranks_say_so():
    batches = [(torch.randn(4, 2), torch.randn(4, 1))]
    with pytest.raises(TypeError, match='cannot give each rank its share of a list'):
        shard_loader(batches, 0, 2, shared=False, what='dls.train')
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self): yield from range(4)
    with pytest.raises(TypeError, match='iterable datasets'):
        shard_loader(torch.utils.data.DataLoader(Stream()), 0, 2)
    with pytest.raises(TypeError, match='has no length'): ShardedBatches(iter([[0, 1]]), 0, 2, shared=False)
    with pytest.raises(ValueError, match='rank must be an integer from 0 to 1'):
        ShardedBatches([[0, 1]], 2, 2)
    with pytest.raises(TypeError, match='world'): ShardedBatches([[0, 1]], 0, 2.0)
    with pytest.raises(TypeError, match='shared and valid must be True or False'):
        ShardedBatches([[0, 1]], 0, 2, shared=1)


@pytest.mark.parametrize('kwargs, err, msg', [
    (dict(timeout=0), ValueError, 'timeout'), (dict(timeout='60'), TypeError, 'timeout'),
    (dict(backend='mpi'), ValueError, "'gloo'"), (dict(checkpoint=3), TypeError, 'checkpoint must be a file'),
    (dict(quiet='no'), TypeError, 'quiet must be True or False'), (dict(seed=-1), ValueError, 'seed'),
    (dict(seed=1.5), TypeError, 'seed')])
def test_bad_settings_get_one_clear_error(kwargs, err, msg):
    with pytest.raises(err, match=msg): DistributedCB(**kwargs)


def _learner():
    tds = torch.utils.data.TensorDataset(torch.randn(32, 3), torch.randn(32, 1))
    dls = DataLoaders(torch.utils.data.DataLoader(tds, 8), torch.utils.data.DataLoader(tds, 8))
    return Learner(nn.Linear(3, 1), dls, F.mse_loss, cbs=[TrainCB()])


def test_a_fit_outside_torchrun_says_how_to_launch_and_leaves_the_learner_alone(monkeypatch):
    for v in TORCHRUN_VARS: monkeypatch.delenv(v, raising=False)
    learn = _learner(); model, dls = learn.model, learn.dls
    with pytest.raises(RuntimeError, match='launch with torchrun'): learn.fit(1, cbs=[DistributedCB()])
    assert learn.model is model and learn.dls is dls and not dist.is_initialized() and not under_torchrun()


@pytest.fixture
def group_of_one(monkeypatch):
    "torchrun's variables for a world of one process, on a free port."
    s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()
    env = dict(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    for k, v in env.items(): monkeypatch.setenv(k, v)
    yield
    if dist.is_initialized(): dist.destroy_process_group()


def test_in_a_group_of_one_the_fit_is_the_plain_fit_and_everything_is_restored(group_of_one, tmp_path):
    ref_model, ref = ddp_recipes.toy('batched')
    stdout = sys.stdout
    for _ in range(2):  # a second fit starts a second group in the same process
        cb = DistributedCB(checkpoint=tmp_path/'ck.pth', timeout=20)
        model, rec = ddp_recipes.toy('batched', cbs=[cb])
        assert not dist.is_initialized() and sys.stdout is stdout and type(model) is nn.Sequential
        assert len(cb.fingerprints) == 1
        for k, v in ref_model.state_dict().items(): torch.testing.assert_close(model.state_dict()[k], v)
        for h, g in zip(ref['hist'], rec['hist']):
            assert g['valid_loss'] == pytest.approx(h['valid_loss'], rel=1e-6)
    ck = read_checkpoint(tmp_path/'ck.pth')
    assert ck['record']['epoch'] == 2 and ck['record']['world_size'] == 1 and 'opt' in ck
    assert set(ck['model']) == set(model.state_dict())  # the plain model's names, not DDP's 'module.' ones
    assert [p.name for p in tmp_path.iterdir()] == ['ck.pth']


def test_a_failing_fit_still_restores_the_learner_and_ends_the_group(group_of_one):
    class Boom(Callback):
        def after_batch(self, learn): raise KeyError('boom')
    learn = _learner(); model, dls, stdout = learn.model, learn.dls, sys.stdout
    with pytest.raises(KeyError, match='boom'): learn.fit(1, cbs=[DistributedCB(timeout=20), Boom()])
    assert learn.model is model and learn.dls is dls and sys.stdout is stdout and not dist.is_initialized()
    learn.fit(1)  # the plain model trains on without the group: DDP left nothing behind
    assert init_distributed(timeout=20) and dist.get_world_size() == 1
    assert not init_distributed()  # found running: the caller that started it ends it


def test_two_ranks_train_exactly_as_one_process_over_the_same_batches(tmp_path):
    "torchrun, 2 ranks: each kind of loader (a ragged last batch of 5 = 3 + 2), then the diffusion callbacks."
    r = launch(['-m', 'miniai.distributed', 'ddp_recipes:all_kinds', '--out', tmp_path/'out.pth',
                '--timeout', '30'], nproc=2, timeout=240, env=RECIPES_ENV)
    assert r.returncode == 0, r.stderr[-4000:]
    runs = read_checkpoint(tmp_path/'out.pth')['record']['runs']
    for kind in ddp_recipes.KINDS:
        model, rec = ddp_recipes.toy(kind)
        got = runs[kind]
        assert len(got['fingerprints']) == 2 and len(set(got['fingerprints'])) == 1
        for k, v in model.state_dict().items():
            torch.testing.assert_close(got['state'][k], v, rtol=1e-5, atol=1e-6)
        for h, g in zip(rec['hist'], got['hist']):
            for k in ('train_loss', 'train_accuracy', 'valid_loss', 'valid_accuracy'):
                assert g[k] == pytest.approx(h[k], rel=1e-5, abs=1e-6), (kind, h['epoch'], k)
    ddpm = runs['ddpm']
    assert len(set(ddpm['fingerprints'])) == 1
    assert all(torch.isfinite(torch.tensor(h['valid_loss'])) for h in ddpm['hist'])
    # rows from rank 0 only: a table header for each toy fit, a row for each of the U-Net's 2 epochs
    assert r.stdout.count('train_loss') == 3 + 2 and 'rank 0 of 2' in r.stdout and 'rank 1 of 2' in r.stdout


@pytest.mark.parametrize('how, says', [('kill', r'SIGKILL'), ('hang', r'[Tt]imed out|timeout')])
def test_a_rank_that_dies_or_hangs_fails_the_run_soon_and_keeps_the_last_checkpoint(tmp_path, how, says):
    t0 = time.perf_counter()
    r = launch(['-m', 'miniai.distributed', 'ddp_recipes:toy', f"fail=(1,1,'{how}')",
                '--checkpoint', tmp_path/'ck.pth', '--timeout', '5'], nproc=2, timeout=180, env=RECIPES_ENV)
    secs = time.perf_counter() - t0
    assert r.returncode != 0 and secs < 120, (secs, r.stderr[-3000:])
    summary = r.stderr[r.stderr.rfind('Root Cause'):]
    assert re.search(says, r.stderr), r.stderr[-3000:]
    first = 1 if how == 'kill' else 0  # the killed rank; or the rank that gave up waiting for the hung one
    assert re.search(rf'rank\s*: {first} \(local_rank: {first}\)', summary), summary
    if how == 'hang': assert 'lost contact with the other ranks' in r.stderr  # our note on rank 0's error
    ck = read_checkpoint(tmp_path/'ck.pth')  # written after epoch 0; the failure came in epoch 1
    assert ck['record']['epoch'] == 0 and ck['record']['world_size'] == 2 and 'opt' in ck
    assert [p.name for p in tmp_path.iterdir()] == ['ck.pth']  # no half-written temporary file


def test_the_command_line_refuses_bad_input_with_one_clear_message(capsys, monkeypatch):
    for v in TORCHRUN_VARS: monkeypatch.delenv(v, raising=False)
    for argv, msg in ((['nope'], 'unknown recipe'), (['ddp_recipes:missing'], 'cannot import missing'),
                      (['fashion_cnn', 'epochs'], 'name=value'), (['fashion_cnn', '--timeout', '0'], '> 0'),
                      (['fashion_cnn', '--checkpoint', 'x.pth'], 'under torchrun'), ([], 'recipe'),
                      (['fashion_cnn', 'epoch=2'], "its settings are epochs, bs, n_train")):
        with pytest.raises(SystemExit) as e: main(argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err, argv


def test_main_runs_a_recipe_alone(tmp_path, monkeypatch, capsys):
    for v in TORCHRUN_VARS: monkeypatch.delenv(v, raising=False)
    rec = main(['ddp_recipes:toy', 'epochs=1', '--out', str(tmp_path/'m.pth')])
    assert rec['world_size'] == 1 and rec['rank_fingerprints'] is None
    assert 'rank 0 of 1' in capsys.readouterr().out
    assert read_checkpoint(tmp_path/'m.pth')['record']['fingerprint'] == rec['fingerprint']


def _running(pid):
    try: return Path(f'/proc/{pid}/stat').read_text().split()[2] != 'Z'   # not a zombie
    except OSError: return False


def test_launch_stops_a_run_that_overruns_with_all_its_processes(tmp_path):
    script = tmp_path/'sleep.py'
    script.write_text("import os, time\nprint('pid', os.getpid(), flush=True)\ntime.sleep(120)\n")
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError, match='ran for more than') as e: launch([script], nproc=2, timeout=18)
    assert time.perf_counter() - t0 < 50
    pids = [int(p) for p in re.findall(r'pid (\d+)', e.value.stdout)]
    assert len(pids) == 2, str(e.value)  # both ranks had started
    time.sleep(0.5)
    assert not [p for p in pids if _running(p)], 'ranks left running'


def test_launch_checks_its_arguments():
    with pytest.raises(TypeError, match='list of strings'): launch('-m miniai.distributed')
    with pytest.raises(ValueError, match='nproc'): launch(['x.py'], nproc=0)
    with pytest.raises(ValueError, match='timeout'): launch(['x.py'], timeout=0)
    with pytest.raises(TypeError, match='env must be a dict'): launch(['x.py'], env=['A=1'])
    r = launch(['-c', 'import os, miniai; print(os.environ["OMP_NUM_THREADS"], miniai.__file__)'], threads=3)
    threads, where = r.stdout.split()
    import miniai
    assert r.returncode == 0 and threads == '3' and where == miniai.__file__
