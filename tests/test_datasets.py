import time
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pytest, torch
from miniai.data import load_fashion_mnist
from miniai.datasets import (FASHION_MEAN, FASHION_STD, BatchDataset, Compose, DataLoaders, IndexBatches, batch_loader, fashion_dls,
                             loader_len, mnist_tensors, mnist_dls,
                             fashion_prep, get_grid, normalize, show_image, show_images, subplots, to_float)


@pytest.fixture(scope='module')
def fmnist(): return load_fashion_mnist()


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close('all')


def test_batches_shapes_dtypes_and_sizes():
    dls = fashion_dls(bs=64, n_train=1000, n_valid=300, seed=0)
    xb, yb = next(iter(dls.train))
    assert xb.shape == (64, 1, 28, 28) and xb.dtype == torch.float32 and yb.shape == (64,) and yb.dtype == torch.int64
    vb = [len(y) for _, y in dls.valid]
    assert vb == [128, 128, 44] and len(dls.valid) == 3
    assert [len(y) for _, y in dls.train] == [64]*15 + [40] and len(dls.train) == 16


def test_normalization_constants_match_training_set(fmnist):
    x = to_float(fmnist[0])
    assert x.dtype == torch.float32 and x.min() == 0 and x.max() == 1
    assert abs(x.mean().item() - FASHION_MEAN) < 1e-4 and abs(x.std().item() - FASHION_STD) < 1e-4
    xs = torch.cat([xb for xb, _ in fashion_dls(bs=2000).train])
    assert abs(xs.mean().item()) < 1e-3 and abs(xs.std().item() - 1) < 1e-3


def test_normalize_and_to_float():
    x = torch.tensor([0, 255, 51], dtype=torch.uint8)
    torch.testing.assert_close(to_float(x), torch.tensor([0., 1., 0.2]))
    torch.testing.assert_close(normalize(torch.tensor([FASHION_MEAN, FASHION_MEAN + FASHION_STD])), torch.tensor([0., 1.]))
    torch.testing.assert_close(normalize(torch.tensor([3.]), mean=1, std=2), torch.tensor([1.]))
    with pytest.raises(TypeError, match='to_float: expected uint8.*got torch.float32'): to_float(torch.zeros(3))


def test_batches_are_the_right_images(fmnist):
    xt, yt, xv, yv = fmnist
    dls = fashion_dls(bs=100, n_train=500, n_valid=250)
    # validation: in order, the first test images, prepared by fashion_prep
    xb, yb = next(iter(dls.valid))
    torch.testing.assert_close(xb, ((xv[:200].float()/255 - FASHION_MEAN)/FASHION_STD)[:, None])
    assert torch.equal(yb, yv[:200])
    # training: each batch's labels are those of the images in it
    for xb, yb in dls.train:
        raw = (xb[:, 0]*FASHION_STD + FASHION_MEAN)*255
        i = (raw.round().to(torch.uint8).flatten(1)[:, None] == xt[:500].flatten(1)[None]).all(-1).float().argmax(1)  # (B,) index of each image
        assert torch.equal(xt[i], raw.round().to(torch.uint8)) and torch.equal(yt[i], yb)


def test_every_training_index_once_per_epoch_and_shuffled():
    dls = fashion_dls(bs=256, seed=3)
    e1, e2 = torch.cat(list(dls.train.sampler)), torch.cat(list(dls.train.sampler))
    for e in (e1, e2): assert torch.equal(e.sort().values, torch.arange(60_000))
    assert not torch.equal(e1, torch.arange(60_000)) and not torch.equal(e1, e2)  # shuffled, and differently each epoch
    assert torch.equal(torch.cat(list(fashion_dls(bs=256, seed=3).train.sampler)), e1)  # the seed fixes the order


def test_every_item_seen_once_through_the_loader():
    n = 1037
    dl = batch_loader(BatchDataset(torch.arange(n), torch.arange(n)*2), 100, shuffle=True)
    xs, ys = map(torch.cat, zip(*dl))
    assert torch.equal(xs.sort().values, torch.arange(n)) and torch.equal(ys, xs*2)
    assert len(dl) == 11 and len(batch_loader(BatchDataset(torch.arange(n), torch.arange(n)), 100, drop_last=True)) == 10


def test_valid_order_is_fixed(fmnist):
    dls = fashion_dls(bs=128)
    y1, y2 = [torch.cat([yb for _, yb in dls.valid]) for _ in range(2)]
    assert torch.equal(y1, y2) and torch.equal(y1, fmnist[3])


def test_n_train_subset_is_the_first_images(fmnist):
    dls = fashion_dls(bs=50, n_train=200, n_valid=100, seed=0)
    ys = torch.cat([yb for _, yb in dls.train])
    assert len(ys) == 200 and torch.equal(ys.bincount(minlength=10), fmnist[1][:200].bincount(minlength=10))
    assert sum(len(yb) for _, yb in dls.valid) == 100


def test_tfm_applied_to_train_only():
    calls = []
    def tfm(x): calls.append(x.shape); return -x
    plain, tf = fashion_dls(bs=16, n_train=64, n_valid=32, seed=5), fashion_dls(bs=16, n_train=64, n_valid=32, seed=5, tfm=tfm)
    for (a, ya), (b, yb) in zip(plain.train, tf.train): assert torch.equal(-a, b) and torch.equal(ya, yb)
    assert calls == [(16, 1, 28, 28)]*4  # runs after fashion_prep, on whole batches
    for (a, _), (b, _) in zip(plain.valid, tf.valid): assert torch.equal(a, b)
    assert len(calls) == 4


def test_compose_and_prep():
    assert Compose(lambda x: x+1, None, lambda x: x*10)(1) == 20
    assert fashion_prep(torch.zeros(2, 28, 28, dtype=torch.uint8)).shape == (2, 1, 28, 28)


def test_workers_give_the_same_batches():
    a = fashion_dls(bs=100, n_train=300, n_valid=300, seed=1)
    b = fashion_dls(bs=100, n_train=300, n_valid=300, seed=1, num_workers=2)
    for dl1, dl2 in ((a.train, b.train), (a.valid, b.valid)):
        for (x1, y1), (x2, y2) in zip(dl1, dl2): assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_fashion_loader_reads_one_batch_per_index():
    "What keeps an epoch cheap: the dataset is indexed once per batch, with a tensor of indices, never once per item."
    calls = []
    class Counting(BatchDataset):
        def __getitem__(self, idxs): calls.append(len(idxs)); return super().__getitem__(idxs)
    x, y = torch.zeros(1000, 2, dtype=torch.uint8), torch.arange(1000)
    dls = DataLoaders.from_datasets(Counting(x, y), Counting(x[:10], y[:10]), bs=256, batched=True, seed=0)
    n = sum(len(yb) for _, yb in dls.train)
    assert n == 1000 and calls == [256, 256, 256, 232], calls


def test_from_datasets_per_item_and_batched():
    x, y = torch.randn(50, 3), torch.arange(50)
    dls = DataLoaders.from_datasets(torch.utils.data.TensorDataset(x, y), torch.utils.data.TensorDataset(x, y), bs=8, seed=0)
    assert len(dls.train) == 7 and len(dls.valid) == 4 and [len(b) for b, _ in dls.valid] == [16, 16, 16, 2]
    xb, yb = dls.one_batch(valid=True)
    assert torch.equal(xb, x[:16]) and torch.equal(yb, y[:16])
    bd = DataLoaders.from_datasets(BatchDataset(x, y), BatchDataset(x, y), bs=8, batched=True)
    assert torch.equal(bd.one_batch(valid=True)[0], x[:16])
    assert DataLoaders('a', 'b').train == 'a'
    with pytest.raises(TypeError, match='only apply to per-item'): DataLoaders.from_datasets(BatchDataset(x, y), BatchDataset(x, y), batched=True, collate_fn=None)


@pytest.mark.parametrize('bad,exc', [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError), ('8', TypeError)])
def test_bad_batch_size(bad, exc):
    "Zero, negative, fractional sizes and bools (which Python would take for 1) are refused with one clear error."
    for make in (lambda: fashion_dls(bs=bad), lambda: IndexBatches(10, bad), lambda: mnist_dls(bs=bad),
                 lambda: DataLoaders.from_datasets(BatchDataset(torch.zeros(4), torch.zeros(4)), BatchDataset(torch.zeros(4), torch.zeros(4)), bs=bad)):
        with pytest.raises(exc, match=r'bs must be (a whole number|at least 1)'): make()


def test_bad_subset_sizes_and_mismatched_dataset():
    with pytest.raises(ValueError, match=r'n_train \(or None for all 60,000\) must be from 1 to 60,000, got 0'): fashion_dls(n_train=0)
    with pytest.raises(ValueError, match='n_train.*got -5'): fashion_dls(n_train=-5)
    with pytest.raises(ValueError, match=r'n_valid.*must be from 1 to 10,000, got 10,001'): fashion_dls(n_valid=10_001)
    with pytest.raises(TypeError, match='n_valid.*whole number, got bool'): fashion_dls(n_valid=True)
    with pytest.raises(ValueError, match='x has 3 items but y has 2'): BatchDataset(torch.zeros(3), torch.zeros(2))


@pytest.mark.parametrize('kw,exc,match', [
    (dict(num_workers=-1), ValueError, 'num_workers must be at least 0'), (dict(num_workers=True), TypeError, 'num_workers'),
    (dict(seed=1.5), TypeError, 'seed must be a whole number'), (dict(seed=2**70), ValueError, 'seed must be from'),
    (dict(tfm='flip'), TypeError, 'tfm must be callable')])
def test_fashion_dls_other_arguments(kw, exc, match):
    with pytest.raises(exc, match=match): fashion_dls(n_train=8, n_valid=8, **kw)


def test_zero_items_give_no_batches_not_one_empty_batch():
    assert list(IndexBatches(0, 4)) == [] and len(IndexBatches(0, 4)) == 0
    assert list(IndexBatches(0, 4, shuffle=True)) == [] and list(IndexBatches(3, 4, drop_last=True)) == []
    empty = BatchDataset(torch.zeros(0, 2), torch.zeros(0))
    assert list(batch_loader(empty, 4)) == [] and len(batch_loader(empty, 4)) == 0
    with pytest.raises(ValueError, match='n \\(the number of items\\) must be at least 0'): IndexBatches(-1, 4)
    with pytest.raises(ValueError, match='train_ds has no items'): DataLoaders.from_datasets(empty, BatchDataset(torch.zeros(2), torch.zeros(2)), batched=True)
    with pytest.raises(ValueError, match='valid_ds has no items'): DataLoaders.from_datasets(BatchDataset(torch.zeros(2), torch.zeros(2)), empty, batched=True)
    with pytest.raises(ValueError, match='gave no batches'): DataLoaders([], []).one_batch()


def test_loaders_that_are_used_up_or_not_iterable_are_refused():
    with pytest.raises(TypeError, match='iterator.*used up after one pass'): DataLoaders((b for b in [1, 2]), [])
    with pytest.raises(TypeError, match='valid is an iterator'): DataLoaders([], iter([1]))
    with pytest.raises(TypeError, match='must be an iterable of batches'): DataLoaders(5, [])
    assert DataLoaders([1], None).valid is None


class Stream(torch.utils.data.IterableDataset):
    "Batches from a stream: no length."
    def __iter__(self): return iter([(torch.zeros(2, 3), torch.zeros(2))] * 3)


def test_loader_len_and_repr_of_a_loader_without_length():
    dl = torch.utils.data.DataLoader(Stream(), batch_size=None)
    with pytest.raises(TypeError): len(dl)  # what loader_len is for
    assert loader_len(dl) is None and loader_len([1, 2]) == 2 and loader_len(IndexBatches(10, 3)) == 4
    assert repr(DataLoaders(dl, [1])) == 'DataLoaders(train: ? batches, valid: 1 batches)'


def test_normalize_to_float_compose_and_plot_helpers_refuse_bad_input():
    with pytest.raises(ValueError, match='std must be a positive number'): normalize(torch.ones(2), std=0)
    with pytest.raises(TypeError, match='expected a uint8 tensor'): to_float([1, 2])
    with pytest.raises(TypeError, match='every step must be callable'): Compose(to_float, 3)
    with pytest.raises(TypeError, match='tfm must be callable'): BatchDataset(torch.zeros(2), torch.zeros(2), tfm='x')
    with pytest.raises(ValueError, match='nrows must be at least 1'): subplots(0, 2)
    with pytest.raises(TypeError, match='ncols must be a whole number'): get_grid(4, ncols=2.5)
    with pytest.raises(ValueError, match='nrows must be at least 1'): get_grid(4, nrows=0)
    with pytest.raises(ValueError, match='imsize must be a positive number'): subplots(1, 1, imsize=-1)
    with pytest.raises(ValueError, match='got no images'): show_images(torch.zeros(0, 4, 4))


def test_mnist_tensors_and_dls():
    xt, yt, xv, yv = mnist_tensors()
    assert xt.shape == (4000, 1, 28, 28) and xv.shape == (1000, 1, 28, 28) and yt.dtype == torch.int64
    assert xt.min() == -1 and xt.max() == 1 and yt.bincount().tolist() == [400]*10
    a, b = mnist_dls(64, seed=3), mnist_dls(64, seed=3)
    assert len(a.train) == 63 and len(a.valid) == 8
    xb, yb = a.one_batch(); xb2, yb2 = b.one_batch()
    assert torch.equal(xb, xb2) and xb.shape == (64, 1, 28, 28) and torch.equal(a.one_batch(valid=True)[0], xv[:128])
    with pytest.raises(TypeError, match='mnist_dls: seed'): mnist_dls(seed='1')


@pytest.mark.parametrize('shape', [(28, 28), (1, 28, 28), (3, 28, 28)])
def test_show_image_layouts(shape):
    im = torch.rand(shape, requires_grad=True)  # needs detaching
    ax = show_image(im, title='t')
    arr = ax.get_images()[0].get_array()
    assert arr.shape == ((28, 28) if shape[0] != 3 else (28, 28, 3)) and ax.get_title() == 't'
    if len(shape) == 2 or shape[0] == 1: assert ax.get_images()[0].get_cmap().name == 'gray'
    np.testing.assert_allclose(np.asarray(arr), im.detach().reshape(shape[-3:] if shape[0] == 3 else (28, 28)).permute(*((1, 2, 0) if shape[0] == 3 else (0, 1))).numpy())


def test_show_image_numpy_and_existing_axes():
    fig, ax = plt.subplots()
    assert show_image(np.zeros((5, 6)), ax=ax) is ax and ax.get_images()[0].get_array().shape == (5, 6)


@pytest.mark.parametrize('shape', [(2, 28, 28), (28,), (1, 1, 28, 28), (28, 28, 3)])
def test_show_image_rejects_other_shapes(shape):
    with pytest.raises(ValueError, match=r'show_image: expected an image of shape \(H, W\), \(1, H, W\) or \(3, H, W\), got'):
        show_image(torch.zeros(shape))


def test_subplots_always_arrays():
    fig, axs = subplots()
    assert isinstance(axs, np.ndarray) and axs.shape == (1,)
    assert subplots(1, 4)[1].shape == (4,) and subplots(3, 1)[1].shape == (3,) and subplots(2, 3)[1].shape == (2, 3)
    fig, _ = subplots(2, 3, imsize=2, suptitle='hi')
    assert tuple(fig.get_size_inches()) == (6, 4) and fig._suptitle.get_text() == 'hi'


@pytest.mark.parametrize('n,nrows,ncols,grid', [(1, None, None, (1, 1)), (10, None, None, (3, 4)), (16, None, None, (4, 4)),
                                                (7, 2, None, (2, 4)), (7, None, 5, (2, 5))])
def test_get_grid(n, nrows, ncols, grid):
    fig, axs = get_grid(n, nrows, ncols, title='g')
    assert axs.ndim == 1 and len(axs) == n and len(fig.axes) == grid[0]*grid[1]
    assert sum(ax.axison for ax in fig.axes) == n  # the unused ones are hidden
    assert fig._suptitle.get_text() == 'g'


def test_get_grid_errors():
    with pytest.raises(ValueError, match=r'n \(the number of axes\) must be at least 1'): get_grid(0)
    with pytest.raises(ValueError, match='2 rows x 2 columns cannot hold 5'): get_grid(5, 2, 2)


def test_show_images_titles_and_count():
    ims = torch.rand(5, 1, 8, 8)
    show_images(ims, titles=list('abcde'), imsize=1)
    fig = plt.gcf()
    shown = [ax for ax in fig.axes if ax.get_images()]
    assert len(shown) == 5 and [ax.get_title() for ax in shown] == list('abcde') and len(fig.axes) == 6
    with pytest.raises(ValueError, match='got 5 images but 2 titles'): show_images(ims, titles=['a', 'b'])


def test_show_images_passes_imshow_options():
    show_images(torch.rand(3, 8, 8), cmap='viridis', vmin=0, vmax=2, imsize=1)
    im = [ax for ax in plt.gcf().axes if ax.get_images()][0].get_images()[0]
    assert im.get_cmap().name == 'viridis' and im.get_clim() == (0, 2)
