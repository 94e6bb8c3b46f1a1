"Notebook 16: captions, our attention and text transformer against torch, CLIP's loss, the library towers, saving for diffusers."
import math, random, warnings
import pytest, torch
import torch.nn.functional as F
from torch import nn
from miniai.data import DataError
from miniai.clip import (CLASS_NAMES, CLIP, CLIPText, CaptionMaker, Frozen, HFTokenizer, MultiHeadAttention, TextTransformer,
                         WordTokenizer, all_captions, attention, causal_mask, class_prompts, clip_loss, clip_text_model,
                         image_attributes, image_tower, load_text_encoder, phrase, pretrained_clip, recall_at,
                         same_captions, save_text_encoder, text_embeddings, train_clip_tokenizer, zero_shot, image_embeddings,
                         caption_tokenizer, tokenizer_fingerprint)

@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('MINIAI_CACHE', str(tmp_path))
    return tmp_path

@pytest.fixture(scope='module')
def hf_tok(): return train_clip_tokenizer(all_captions(), context=24)

def test_attention_matches_torch_values_and_gradients():
    q, k, v = (torch.randn(2, 3, 7, 8, requires_grad=True) for _ in range(3))
    for mask, causal in ((None, False), (causal_mask(7), True)):
        ours, theirs = attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
        for a, b in zip(torch.autograd.grad(ours.sum(), (q, k, v)), torch.autograd.grad(theirs.sum(), (q, k, v))):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)

@pytest.mark.parametrize('causal', [False, True])
def test_multihead_attention_matches_nn_multiheadattention(causal):
    torch.manual_seed(0)
    ours, ref = MultiHeadAttention(16, 4, causal=causal), nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight); ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.out.weight); ref.out_proj.bias.copy_(ours.out.bias)
    x = torch.randn(3, 5, 16, requires_grad=True)
    a = ours(x); b = ref(x, x, x, attn_mask=~causal_mask(5) if causal else None, need_weights=False)[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.autograd.grad(a.sum(), x)[0], torch.autograd.grad(b.sum(), x)[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match='multiple'): MultiHeadAttention(10, 4)

def test_clip_loss_is_clips_cross_entropy_and_spreads_over_equal_captions():
    logits = torch.randn(5, 5)
    plain = (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.T, torch.arange(5))) / 2
    torch.testing.assert_close(clip_loss(logits), plain); torch.testing.assert_close(clip_loss(logits, torch.eye(5).bool()), plain)
    same = same_captions(['a', 'b', 'a', 'c', 'd'])
    assert same[0, 2] and same[2, 0] and same.sum() == 7
    # two equal captions: logits that cannot tell the copies apart are the best there is; with `same` the gradient says so
    big = torch.full((5, 5), -50., requires_grad=True)
    with torch.no_grad(): big[same] = 50.
    torch.testing.assert_close(clip_loss(big, same), torch.tensor(2 * math.log(2) / 5))   # the targets' entropy: the floor
    assert torch.autograd.grad(clip_loss(big, same), big)[0].abs().max() < 1e-6
    assert torch.autograd.grad(clip_loss(big), big)[0].abs().max() > 0.01                  # one right answer: pulls the copies apart
    for bad in (torch.randn(3, 4), torch.randn(3)):
        with pytest.raises(ValueError, match='square'): clip_loss(bad)
    with pytest.raises(ValueError, match='diagonal'): clip_loss(logits, torch.zeros(5, 5, dtype=torch.bool))

def test_word_tokenizer_unknown_empty_long_and_bad_input():
    tok = WordTokenizer(['a dark coat', 'a light bag'], context=6)
    assert tok('a dark coat')[0].tolist() == [tok.bos, tok.ids['a'], tok.ids['dark'], tok.ids['coat'], tok.eos, tok.pad]
    assert tok('a gown é')[0].tolist()[:5] == [tok.bos, tok.ids['a'], tok.unk, tok.unk, tok.eos]
    assert tok('')[0].tolist()[:2] == [tok.bos, tok.eos]
    with pytest.warns(UserWarning, match='cut'): ids = tok('a dark coat a dark coat')
    assert ids.shape == (1, 6) and ids[0, -1] == tok.eos
    for bad in (3, [None], ['a', 1]):
        with pytest.raises(TypeError, match='strings'): tok(bad)
    with pytest.raises(ValueError, match='empty'): tok([])

def test_text_transformer_pools_at_first_eos_and_checks_ids():
    tok = WordTokenizer(all_captions(), 12)
    tt = TextTransformer(len(tok), 12, tok.eos, d=32, n_layers=2, n_heads=4).eval()
    ids = tok(['a dark coat', 'a bag'])
    after = ids.clone(); after[:, -1] = tok.ids['coat']                    # anything after <eos> changes nothing
    torch.testing.assert_close(tt(ids), tt(after))
    with pytest.raises(TypeError): tt(ids.float())
    with pytest.raises(ValueError, match='vocabulary'): tt(ids + len(tok))
    with pytest.raises(ValueError, match='end token'): tt(ids[:, :2])
    with pytest.raises(ValueError, match='context'): tt(torch.cat([ids, ids], 1))

def test_captions_say_only_clear_attributes_and_keep_held_out_words_out():
    x = torch.zeros(30, 28, 28, dtype=torch.uint8); y = torch.arange(30) % 10
    for i in range(30): x[i, 4:24, 14 - i // 6 - 2:14 + i // 6 + 2] = 60 + 6 * i  # wider and lighter with i
    maker = CaptionMaker(x, y)
    lv = maker.levels(x, y)
    caps = [maker.caption(c, l, random.Random(s)) for s in range(20) for c, l in zip(y.tolist(), lv.tolist())]
    mid = [maker.caption(c, [1, 1], random.Random(s)) for s in range(50) for c in range(10)]
    assert not any(w in c.split() for c in mid for w in ('dark', 'light', 'wide', 'narrow'))
    train_words = {w for c in all_captions() for w in c.split()}
    assert not {'gown', 'tee', 'purse', 'showing'} & train_words
    assert phrase('ankle boot', ['dark']) == 'a dark ankle boot' and phrase('ankle boot') == 'an ankle boot'
    assert phrase('pair of trousers', ['wide']) == 'a pair of wide trousers'
    with pytest.raises(ValueError, match='uint8'): image_attributes(x.float())

def test_images_of_the_wrong_size_or_range_get_one_clear_error():
    tok = WordTokenizer(all_captions(), 12)
    clip = CLIP(TextTransformer(len(tok), 12, tok.eos, d=32, n_layers=1), image_tower((8, 16), d=32), tok, 32, 32, d=16)
    x = torch.rand(2, 1, 28, 28)
    assert clip(x, tok(['a coat', 'a bag'])).shape == (2, 2)
    for bad, msg in ((x * 255, r'\[0, 1\]'), (x[:, :, :20], '28, 28'), (x[:, 0], '28, 28'), (x.long(), 'float')):
        with pytest.raises(ValueError, match=msg): clip.encode_image(bad)
    with pytest.raises(TypeError, match='CLIP'): image_embeddings(nn.Linear(2, 2), x)

def test_recall_at_counts_any_right_answer():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.2, 0.1], [0.0, 0.1, 0.3]])
    same = torch.eye(3, dtype=torch.bool)
    assert recall_at(sim, same, (1, 2)) == {1: pytest.approx(2 / 3), 2: pytest.approx(1.)}

def test_frozen_module_stays_in_eval_mode_without_gradients():
    bn = nn.BatchNorm1d(3); f = Frozen(bn)
    f.train(); before = bn.running_mean.clone()
    out = f(torch.randn(8, 3) + 5)
    assert not bn.training and torch.equal(bn.running_mean, before) and not out.requires_grad

def test_clip_tokenizer_unknown_characters_do_not_end_the_prompt(hf_tok):
    assert hf_tok.eos_token_id != 2 and len({hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.pad_token_id, hf_tok.unk_token_id}) == 4
    for p in ('a café coat', 'a ☃ bag', 'a gown!', ''):
        ids = hf_tok(p).input_ids
        assert ids.count(hf_tok.eos_token_id) == 1 and ids[-1] == hf_tok.eos_token_id, p
    t = HFTokenizer(hf_tok)
    with pytest.warns(UserWarning, match='cut'): ids = t('a photo of ' + 'a very ' * 20 + 'dark coat')
    assert ids.shape == (1, 24) and ids[0, -1] == hf_tok.eos_token_id

def test_text_encoder_saved_for_diffusers_reloads_identically(hf_tok, tmp_path):
    te = clip_text_model(hf_tok, hidden=32, layers=1, heads=2, intermediate=64)
    clip = CLIP(CLIPText(te), image_tower((8, 16), d=32), HFTokenizer(hf_tok), 32, 32, d=16).eval()
    path = save_text_encoder(clip, tmp_path / 'sd')
    model, tok = load_text_encoder(path)
    prompts = ['a dark coat', 'an ankle boot', 'a café bag', '']
    ids = tok(prompts, padding='max_length', max_length=24, truncation=True, return_tensors='pt').input_ids
    assert torch.equal(ids, clip.tokenize(prompts))
    with torch.no_grad(): assert torch.equal(model(input_ids=ids).pooler_output, te(input_ids=ids).pooler_output)
    with pytest.raises(TypeError, match='CLIPTextModel'): save_text_encoder(nn.Linear(2, 2), tmp_path / 'x')
    (path / 'tokenizer').rename(tmp_path / 'moved')
    with pytest.raises(DataError, match='tokenizer'): load_text_encoder(path)
    with pytest.raises(TypeError, match='strings'): clip.tokenize([3])

def test_quick_training_lowers_the_loss_and_beats_chance(cache, monkeypatch):
    monkeypatch.setenv('MINIAI_QUICK', '1')
    clip, rec = pretrained_clip('ours', epochs=2, n_train=4096)
    h = rec['hist']
    assert h[-1]['train_loss'] < h[0]['train_loss'] < math.log(256)
    from miniai.data import load_fashion_mnist
    from miniai.datasets import to_float
    _, _, xv, yv = load_fashion_mnist()
    acc = (zero_shot(clip, to_float(xv[:1000]).unsqueeze(1)) == yv[:1000]).float().mean()
    assert acc > 0.3                                                      # chance is 10%
    again, _ = pretrained_clip('ours', epochs=2, n_train=4096)             # from the cache: the same weights
    assert all(torch.equal(a, b) for a, b in zip(clip.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match='tower'): pretrained_clip('bert')

def test_caption_tokenizer_is_kept_in_the_cache_and_named_by_the_recipe(cache):
    import subprocess, sys
    code = "from miniai.clip import caption_tokenizer, tokenizer_fingerprint; print(tokenizer_fingerprint(caption_tokenizer()))"
    runs = [subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split()[-1]
            for _ in range(2)]                                            # two processes: the second reads the first's
    assert runs[0] == runs[1] and (cache / 'models' / 'clip_bpe-24').is_dir()
