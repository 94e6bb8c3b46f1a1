"Public functions given the wrong kind of argument: one TypeError or ValueError that names the function, never torch's internals."
import pytest, torch
from torch import nn
from miniai.data import check_tensor, check_model
from miniai.datasets import show_image
from miniai.conv import conv2d_loops, im2col, conv2d_im2col, conv, collate_device
from miniai.init import lsuv_init
from miniai.sgd import get_mom, set_mom, one_cycle, OneCycle, train_steps
from miniai.resnet import summary, predict, accuracy_of
from miniai.ddpm import to_pixels
from miniai.checkpoint import save_checkpoint

def test_check_tensor_and_check_model():
    x = torch.zeros(2, 3)
    assert check_tensor(x, 'f: x') is x and check_tensor(x, 'f: x', 2) is x
    with pytest.raises(TypeError, match=r'f: x must be a torch tensor \(B, C\), got list'): check_tensor([1], 'f: x', shape='(B, C)')
    with pytest.raises(ValueError, match='must have 4 dimensions'): check_tensor(x, 'f: x', 4)
    m = nn.Linear(2, 2)
    assert check_model(m, 'f: model') is m
    with pytest.raises(TypeError, match=r'f: model must be a model \(a torch nn.Module\), got str'): check_model('m', 'f: model')

img = torch.zeros(5, 5)
CASES = [  # (call, the function's name in the message)
    (lambda: show_image(None), 'show_image'), (lambda: show_image({'a': 1}), 'show_image'),
    (lambda: conv2d_loops(None, img), 'conv2d_loops'), (lambda: conv2d_loops(img, [[1.]]), 'conv2d_loops'),
    (lambda: im2col(None, 3), 'im2col'), (lambda: im2col(torch.zeros(1, 1, 5, 5), 2.5), 'im2col'),
    (lambda: conv2d_im2col(None, torch.zeros(1, 1, 3, 3)), 'conv2d_im2col'),
    (lambda: conv2d_im2col(torch.zeros(1, 1, 5, 5), 'w'), 'conv2d_im2col'),
    (lambda: conv2d_im2col(torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 3, 3), bias=torch.zeros(1, 1)), 'conv2d_im2col'),
    (lambda: conv(-1, 8), 'conv'), (lambda: conv(1, 8, ks=0), 'conv'), (lambda: conv(1, '8'), 'conv'),
    (lambda: collate_device(torch.zeros(0)), 'collate_device'), (lambda: collate_device([]), 'collate_device'),
    (lambda: lsuv_init(None, torch.zeros(2, 3)), 'lsuv_init'), (lambda: lsuv_init(nn.Linear(3, 3), None), 'lsuv_init'),
    (lambda: get_mom(torch.zeros(0)), 'get_mom'), (lambda: set_mom(None, 0.9), 'set_mom'),
    (lambda: one_cycle(torch.zeros(0), 10, 0.1), 'one_cycle'), (lambda: one_cycle(0, 10, -0.1), 'one_cycle'),
    (lambda: one_cycle(0, 0, 0.1), 'one_cycle'), (lambda: OneCycle(None, 0.1, 10), 'OneCycle'),
    (lambda: train_steps(None), 'train_steps'),
    (lambda: summary(None, torch.zeros(1, 3)), 'summary'), (lambda: summary(nn.Linear(3, 2), [[0.] * 3]), 'summary'),
    (lambda: predict(None, []), 'predict'),
    (lambda: save_checkpoint('x.pth', 'x'), 'save_checkpoint'), (lambda: save_checkpoint(None, nn.Linear(1, 1)), 'save_checkpoint'),
    (lambda: save_checkpoint('x.pth', nn.Linear(1, 1), opt='adam'), 'save_checkpoint'),
    (lambda: save_checkpoint('x.pth', {'w': 1}), 'save_checkpoint'),
    (lambda: to_pixels(torch.zeros(3)), 'to_pixels'), (lambda: to_pixels([[0.] * 32] * 32), 'to_pixels'),
    (lambda: accuracy_of(None, torch.zeros(3)), 'accuracy_of'), (lambda: accuracy_of(torch.zeros(3, 2), [0, 1, 1]), 'accuracy_of'),
]

@pytest.mark.parametrize('call, name', CASES, ids=[f'{n}-{i}' for i, (_, n) in enumerate(CASES)])
def test_wrong_arguments_get_one_clear_error(call, name):
    with pytest.raises((TypeError, ValueError), match=name) as e: call()
    assert type(e.value) in (TypeError, ValueError)
