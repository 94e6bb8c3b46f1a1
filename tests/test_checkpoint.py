"The cache's folder format for library models: atomic, complete, and checked on the way back."
import json, os
from functools import partial
from pathlib import Path
import pytest, torch
from torch import nn
from miniai.checkpoint import cached_model, is_pretrained, read_pretrained, recipe_of, save_pretrained_atomic
from miniai.data import DataError

diffusers = pytest.importorskip('diffusers')

def tiny(ch=(8, 8)):
    return partial(diffusers.UNet2DModel, sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                   block_out_channels=ch, norm_num_groups=4, down_block_types=('DownBlock2D',) * 2,
                   up_block_types=('UpBlock2D',) * 2)

def fill(value):
    def train(model, seed=0):
        with torch.no_grad(): model.conv_out.bias.fill_(value)
        return dict(value=value, hist=[dict(epoch=0, loss=torch.tensor(0.25))])
    return train

@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path))
    return tmp_path/'models'

def test_folder_round_trip_and_cache_hit(cache):
    calls = []
    def train(model, seed=0): calls.append(1); return fill(0.5)(model)
    recipe = recipe_of(train)
    m1, r1 = cached_model('tiny_unet', tiny(), train, recipe)
    m2, r2 = cached_model('tiny_unet', tiny(), train, recipe)
    assert len(calls) == 1 and isinstance(m2, diffusers.UNet2DModel) and not m2.training
    assert r1 == r2 and r2['value'] == 0.5 and r2['recipe'] == recipe and r2['hist'][0]['loss'] == 0.25
    folder, = [p for p in cache.iterdir()]
    assert folder.is_dir() and {'config.json', 'record.json'} <= {p.name for p in folder.iterdir()}
    again = diffusers.UNet2DModel.from_pretrained(folder)     # loadable without miniai
    for a, b in ((m1, m2), (m2, again)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

def test_retrain_replaces_the_folder_whole(cache):
    save_pretrained_atomic(tiny()(), cache/'m', dict(v=1))
    (cache/'m'/'stale.txt').write_text('from the old folder')
    model = tiny()(); fill(2.)(model)
    save_pretrained_atomic(model, cache/'m', dict(v=2))
    assert not (cache/'m'/'stale.txt').exists() and [p.name for p in cache.iterdir()] == ['m']
    loaded, rec = read_pretrained(cache/'m', tiny())
    assert rec == dict(v=2) and loaded.conv_out.bias[0].item() == 2.

def test_a_failed_save_leaves_the_old_folder(cache, monkeypatch):
    save_pretrained_atomic(tiny()(), cache/'m', dict(v=1))
    model = tiny()()
    def broken(path, **kw): Path(path, 'half.bin').write_bytes(b'x'); raise OSError('disk full')
    monkeypatch.setattr(model, 'save_pretrained', broken)
    with pytest.raises(OSError, match='disk full'): save_pretrained_atomic(model, cache/'m', dict(v=2))
    assert [p.name for p in cache.iterdir()] == ['m']                    # no temporary folder left
    assert read_pretrained(cache/'m', tiny())[1] == dict(v=1)

def test_damaged_folders_say_so(cache):
    save_pretrained_atomic(tiny()(), cache/'m', dict(v=1))
    with pytest.raises(DataError, match='no saved model'): read_pretrained(cache/'none', tiny())
    with pytest.raises(DataError, match='another architecture'): read_pretrained(cache/'m', tiny((8, 16)))
    weights, = (cache/'m').glob('*.safetensors')
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(DataError, match='damaged or incomplete'): read_pretrained(cache/'m', tiny())
    (cache/'m'/'record.json').unlink()
    with pytest.raises(DataError, match='record.json'): read_pretrained(cache/'m', tiny())

def test_our_models_are_not_library_models(cache):
    assert not is_pretrained(nn.Linear(2, 2)) and is_pretrained(tiny()())
    with pytest.raises(TypeError, match='save_checkpoint'): save_pretrained_atomic(nn.Linear(2, 2), cache/'x')
    with pytest.raises(TypeError, match='not a library model'): read_pretrained(cache, lambda: nn.Linear(2, 2))
