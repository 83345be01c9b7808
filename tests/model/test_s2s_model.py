"""S2S model (tiny preset, CPU): delay pattern, masking, causality, KV cache, overfitting."""
from __future__ import annotations

from dataclasses import asdict, replace

import pytest
import torch

from model.conformer import ConformerEncoder, KVCache
from model.delay import apply_delay, delay_mask, revert_delay
from model.s2s import (S2S_PRESETS, TEXT_PAD, TEXT_VOCAB, S2SConfig, S2SModel, load_s2s, text_bytes, text_tokens)

TINY = S2S_PRESETS["tiny"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Two OpenMP threads on a shared 2-core machine spin against other processes (10x slower).
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _lengths_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    return torch.arange(T)[None, :] < lengths[:, None]


def make_batch(cfg: S2SConfig, B: int = 3, Tu: int = 9, Tc: int = 7, Ta: int = 8, seed: int = 0,
               user_len=None, ctx_len=None, ai_len=None) -> dict:
    g = torch.Generator().manual_seed(seed)
    K, N = cfg.n_codebooks, cfg.codebook_size
    user_len = torch.tensor(user_len) if user_len is not None else torch.randint(3, Tu + 1, (B,), generator=g)
    ctx_len = torch.tensor(ctx_len) if ctx_len is not None else torch.randint(0, Tc + 1, (B,), generator=g)
    ai_len = torch.tensor(ai_len) if ai_len is not None else torch.randint(3, Ta + 1, (B,), generator=g)
    return {
        "user_codes": torch.randint(0, N, (B, K, Tu), generator=g),
        "user_mask": _lengths_mask(user_len, Tu),
        "context_codes": torch.randint(0, N, (B, K, Tc), generator=g),
        "context_mask": _lengths_mask(ctx_len, Tc),
        "ai_codes": torch.randint(0, N, (B, K, Ta), generator=g),
        "ai_mask": _lengths_mask(ai_len, Ta),
        "ai_voice": torch.randint(0, cfg.n_voices, (B,), generator=g),
    }


def tiny_model(seed: int = 0, **overrides) -> S2SModel:
    torch.manual_seed(seed)
    return S2SModel(replace(TINY, **overrides)).eval()


def real_logits(model: S2SModel, batch: dict):
    """Logits and their validity mask [B, S, K] (real targets)."""
    out = model(batch)
    _, targets = model.decoder_io(batch["ai_codes"], batch["ai_mask"])
    return out.logits, targets.transpose(1, 2) != -100


# ---- delay pattern ---------------------------------------------------------------------------

@pytest.mark.parametrize("K", [1, 2, 4, 8])
@pytest.mark.parametrize("T", [1, 3, 10])
def test_delay_round_trip(K, T):
    codes = torch.randint(0, 50, (2, K, T))
    delayed = apply_delay(codes, fill=-1)
    assert delayed.shape == (2, K, T + K - 1)
    for k in range(K):
        assert (delayed[:, k, :k] == -1).all() and (delayed[:, k, k + T:] == -1).all()
        assert torch.equal(delayed[:, k, k:k + T], codes[:, k])
    assert torch.equal(revert_delay(delayed), codes)


def test_delay_mask_marks_real_codes_only():
    mask = _lengths_mask(torch.tensor([2, 4]), 4)
    dm = delay_mask(mask, 3)
    assert dm.shape == (2, 3, 6)
    expected_b0 = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0]], dtype=torch.bool)
    expected_b1 = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(dm[0], expected_b0) and torch.equal(dm[1], expected_b1)
    assert torch.equal(revert_delay(dm), mask[:, None, :].expand(-1, 3, -1))


def test_decoder_io_layout():
    model = tiny_model(n_codebooks=3, codebook_size=10)
    codes = torch.tensor([[[1, 2, 9], [3, 4, 9], [5, 6, 9]]])  # 2 real frames, 1 padded (9s)
    dec_in, targets = model.decoder_io(codes, _lengths_mask(torch.tensor([2]), 3))
    eos, pad, bos = model.dec_eos, model.dec_pad, model.dec_bos
    I = -100
    assert targets[0].tolist() == [[1, 2, eos, I, I, I], [I, 3, 4, eos, I, I], [I, I, 5, 6, eos, I]]
    assert dec_in[0].tolist() == [[bos, 1, 2, eos, pad, pad], [bos, pad, 3, 4, eos, pad],
                                  [bos, pad, pad, 5, 6, eos]]


def test_decoder_io_cropped_turn_has_no_end_of_turn():
    """A turn cut at the length limit (ai_eos False): no EOS target, and no target whose inputs
    reach past the crop (codebook k of frame f needs f + k <= len)."""
    model = tiny_model(n_codebooks=3, codebook_size=10)
    codes = torch.tensor([[[1, 2, 7], [3, 4, 8], [5, 6, 9]]])  # 3 kept frames of a longer turn
    mask = _lengths_mask(torch.tensor([3]), 3)
    dec_in, targets = model.decoder_io(codes, mask, torch.tensor([False]))
    pad, bos, I = model.dec_pad, model.dec_bos, -100
    assert targets[0].tolist() == [[1, 2, 7, I, I, I], [I, 3, 4, 8, I, I], [I, I, 5, 6, I, I]]
    assert model.dec_eos not in dec_in[0].tolist()[0] + dec_in[0].tolist()[1] + dec_in[0].tolist()[2]
    assert dec_in[0, 0].tolist() == [bos, 1, 2, 7, pad, pad]
    # Every kept target is the same as in the whole turn's layout (longer, with its real end).
    whole = torch.tensor([[[1, 2, 7, 1, 1], [3, 4, 8, 1, 1], [5, 6, 9, 1, 1]]])
    dec_w, tgt_w = model.decoder_io(whole, _lengths_mask(torch.tensor([5]), 5))
    keep = targets[0] != I
    assert torch.equal(targets[0][keep], tgt_w[0, :, :6][keep])
    # Causality: each kept target's visible inputs (positions <= its step) match the whole turn's.
    for k, step in keep.nonzero().tolist():
        assert torch.equal(dec_in[0, :, : step + 1], dec_w[0, :, : step + 1]), (k, step)
    # Rows that end keep their layout in a mixed batch.
    both = model.decoder_io(torch.cat([codes, codes]), torch.cat([mask, mask]), torch.tensor([True, False]))
    assert torch.equal(both[1][0], model.decoder_io(codes, mask)[1][0]) and torch.equal(both[1][1], targets[0])


# ---- forward: shapes, padding, causality -----------------------------------------------------

def test_forward_shapes_with_and_without_context():
    model = tiny_model()
    K, V = TINY.n_codebooks, TINY.codebook_size + 1
    batch = make_batch(TINY, B=3, Ta=8)
    out = model(batch)
    assert out.logits.shape == (3, 8 + K, K, V)
    assert out.per_codebook_loss.shape == (K,) and out.accuracy.shape == (K,)
    assert torch.isfinite(out.loss) and out.text_loss is None
    assert int(out.n_targets) == int((batch["ai_mask"].sum(1) + 1).sum()) * K  # frames + EOS
    # untrained: loss near log(V)
    assert abs(out.audio_loss.item() - torch.log(torch.tensor(float(V))).item()) < 0.5

    no_ctx = dict(batch, context_codes=batch["context_codes"][:, :, :0], context_mask=batch["context_mask"][:, :0])
    out0 = model(no_ctx)
    assert out0.logits.shape == out.logits.shape and torch.isfinite(out0.loss)
    del no_ctx["context_codes"], no_ctx["context_mask"]
    assert torch.allclose(model(no_ctx).logits, out0.logits, atol=1e-6)
    # history changes the answer
    assert not torch.allclose(out0.logits, out.logits, atol=1e-4)


def test_padding_does_not_leak():
    model = tiny_model()
    batch = make_batch(TINY, B=3, user_len=[9, 4, 6], ctx_len=[0, 7, 3], ai_len=[8, 3, 5])
    ref, valid = real_logits(model, batch)
    noisy = {k: v.clone() for k, v in batch.items()}
    g = torch.Generator().manual_seed(5)
    for key in ("user", "context", "ai"):
        codes, mask = noisy[f"{key}_codes"], noisy[f"{key}_mask"]
        pad = ~mask[:, None, :].expand_as(codes)
        codes[pad] = torch.randint(0, TINY.codebook_size, (int(pad.sum()),), generator=g)
    got, _ = real_logits(model, noisy)
    assert torch.allclose(got[valid], ref[valid], atol=1e-5)


def test_sample_is_independent_of_batch_padding():
    model = tiny_model()
    user_len, ctx_len, ai_len = [9, 4, 6], [2, 7, 0], [8, 3, 5]
    batch = make_batch(TINY, B=3, user_len=user_len, ctx_len=ctx_len, ai_len=ai_len)
    full, valid = real_logits(model, batch)
    for i in range(3):  # alone, cropped to its own lengths: no padding at all
        u, c, a = user_len[i], ctx_len[i], ai_len[i]
        alone = {
            "user_codes": batch["user_codes"][i:i + 1, :, :u], "user_mask": batch["user_mask"][i:i + 1, :u],
            "context_codes": batch["context_codes"][i:i + 1, :, :c], "context_mask": batch["context_mask"][i:i + 1, :c],
            "ai_codes": batch["ai_codes"][i:i + 1, :, :a], "ai_mask": batch["ai_mask"][i:i + 1, :a],
            "ai_voice": batch["ai_voice"][i:i + 1],
        }
        single = model(alone).logits[0]
        S = single.shape[0]
        assert valid[i, :S].sum() == valid[i].sum()
        assert torch.allclose(full[i, :S], single, atol=1e-5), i


def test_decoder_is_causal():
    model = tiny_model()
    batch = make_batch(TINY, B=2, ai_len=[8, 8])
    ref = model(batch).logits
    f = 3  # change every AI frame after frame f
    changed = dict(batch, ai_codes=batch["ai_codes"].clone())
    changed["ai_codes"][:, :, f + 1:] = (changed["ai_codes"][:, :, f + 1:] + 1) % TINY.codebook_size
    got = model(changed).logits
    # delayed position s sees codebook k of frame s-1-k at most: frames <= f feed positions <= f+1
    assert torch.allclose(got[:, :f + 2], ref[:, :f + 2], atol=1e-6)
    assert not torch.allclose(got[:, f + 2], ref[:, f + 2], atol=1e-4)


def test_kv_cache_steps_match_full_forward():
    model = tiny_model()
    batch = make_batch(TINY, B=2)
    ref = model(batch).logits
    memory, mmask = model.encode(batch["user_codes"], batch["user_mask"], batch["context_codes"], batch["context_mask"])
    dec_in, _ = model.decoder_io(batch["ai_codes"], batch["ai_mask"])
    kvs = [layer.cross_attn.memory_kv(memory) for layer in model.decoder]
    caches = [KVCache(dec_in.shape[2]) for _ in model.decoder]
    with torch.no_grad():
        steps = [model._step(dec_in[:, :, s:s + 1], s, batch["ai_voice"], kvs, mmask, caches)
                 for s in range(dec_in.shape[2])]
    assert torch.allclose(torch.stack(steps, dim=1), ref, atol=1e-5)


def test_conformer_conv_zeroes_padding():
    torch.manual_seed(0)
    enc = ConformerEncoder(2, 32, 4, ff_mult=2, conv_kernel=5).eval()
    x = torch.randn(2, 10, 32)
    mask = _lengths_mask(torch.tensor([10, 6]), 10)
    y = enc(x, mask)
    x2 = x.clone()
    x2[1, 6:] = 100 * torch.randn(4, 32)
    y2 = enc(x2, mask)
    assert torch.allclose(y[mask], y2[mask], atol=1e-5)
    assert (y2[1, 6:] == 0).all()


# ---- training and generation -----------------------------------------------------------------

def test_overfits_a_few_pairs_and_generates_them():
    model = tiny_model(seed=1)
    model.train()
    batch = make_batch(TINY, B=4, Tu=10, Tc=8, Ta=10, seed=3, ai_len=[10, 6, 8, 4])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(100):
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.3 * losses[0], losses[::10]
    assert model(batch).accuracy.min() > 0.95
    model.eval()
    codes, lengths = model.generate(batch["user_codes"], batch["user_mask"], batch["context_codes"],
                                    batch["context_mask"], batch["ai_voice"], max_frames=16, return_lengths=True)
    assert model.training is False
    assert lengths.tolist() == [10, 6, 8, 4]  # learned where each turn ends
    assert codes.shape == (4, TINY.n_codebooks, 10)
    for i, n in enumerate(lengths.tolist()):
        assert torch.equal(codes[i, :, :n], batch["ai_codes"][i, :, :n])
        assert (codes[i, :, n:] == 0).all()


def test_generate_shapes_and_ranges():
    model = tiny_model()
    batch = make_batch(TINY, B=2)
    codes = model.generate(batch["user_codes"], batch["user_mask"], batch["context_codes"], batch["context_mask"],
                           batch["ai_voice"], max_frames=12, stop_at_eos=False)
    assert codes.shape == (2, TINY.n_codebooks, 12) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < TINY.codebook_size
    g = torch.Generator().manual_seed(0)
    sampled, lengths = model.generate(batch["user_codes"], batch["user_mask"], max_frames=12, temperature=1.0,
                                      top_k=20, stop_at_eos=False, return_lengths=True, generator=g)
    assert sampled.shape == (2, TINY.n_codebooks, 12) and lengths.tolist() == [12, 12]
    assert sampled.min() >= 0 and sampled.max() < TINY.codebook_size
    assert not torch.equal(sampled, codes)


# ---- text stream, config, accounting ---------------------------------------------------------

def test_text_tokens_bytes_and_truncation():
    tokens, mask = text_tokens(["hi", "नमस्ते", ""], max_len=7)
    assert tokens.shape == mask.shape == (3, 6)  # 7 bytes would split a 3-byte character
    assert tokens[0, :2].tolist() == [104, 105] and mask[0].tolist() == [True, True] + [False] * 4
    assert bytes(tokens[1].tolist()).decode("utf-8") == "नम"
    assert mask[2].sum() == 0 and (tokens[2] == TEXT_PAD).all()


def test_text_stream_forward():
    model = tiny_model(text_vocab=TEXT_VOCAB)
    batch = make_batch(TINY, B=2, ai_len=[8, 5])
    batch["user_text"], batch["user_text_mask"] = text_tokens(["hello there", "ok"], 32)
    batch["ai_text"], batch["ai_text_mask"] = text_tokens(["hi!", "sure, why not"], 32)
    out = model(batch)
    assert out.text_loss is not None and torch.isfinite(out.text_loss) and out.text_loss > 0
    assert torch.isfinite(out.loss) and out.loss > out.audio_loss
    out.loss.backward()
    assert model.text_head.weight.grad.abs().sum() > 0 and model.text_emb.weight.grad.abs().sum() > 0
    # user text changes the encoding
    no_text = {k: v for k, v in batch.items() if k not in ("user_text", "user_text_mask")}
    assert not torch.allclose(model(no_text).logits, out.logits, atol=1e-4)


def test_text_bytes_keep_the_end_at_a_character_boundary():
    assert text_bytes("hello world", 5, keep_end=True) == b"world"
    assert text_bytes("hello world", 5) == b"hello"
    assert text_bytes("नमस्ते", 7, keep_end=True).decode("utf-8") == "ते"  # never half a character
    tokens, mask = text_tokens(["abcdef"], 3, keep_end=True)
    assert bytes(tokens[0].tolist()) == b"def"


def test_ctc_targets_only_whole_texts_the_audio_can_carry():
    """A row whose text is marked unusable (a cropped turn) or needs more CTC frames than its
    kept frames give adds nothing to the text loss: the loss equals that of the good row alone."""
    model = tiny_model(text_vocab=TEXT_VOCAB, text_ctc_upsample=1)
    batch = make_batch(TINY, B=3, ai_len=[8, 5, 3])
    batch["ai_text"], batch["ai_text_mask"] = text_tokens(["hi!", "sure", "far too long for 3 frames"], 32)
    batch["ai_text_ok"] = torch.tensor([True, False, True])
    lengths = batch["ai_mask"].sum(1)
    ok = model.text_targets_ok(lengths, batch["ai_text"], batch["ai_text_mask"], batch["ai_text_ok"])
    assert ok.tolist() == [True, False, False]  # row 2: 25 bytes > (3 + K) CTC frames
    assert model.ctc_needed(*text_tokens(["aab"], 8)).tolist() == [4]  # a blank between the two a's
    out = model(batch)
    alone = {k: (v[:1] if torch.is_tensor(v) else v) for k, v in batch.items()}
    assert torch.allclose(out.text_loss, model(alone).text_loss, atol=1e-5)


def test_config_round_trip_and_checkpoint(tmp_path):
    model = tiny_model(text_vocab=TEXT_VOCAB)
    d = model.config_dict()
    assert S2SConfig(**d) == model.cfg and S2SConfig.from_dict(dict(d, unknown=1)) == model.cfg
    path = tmp_path / "s2s.pt"
    torch.save({"config": d, "model": model.state_dict()}, path)
    loaded = load_s2s(str(path)).eval()
    batch = make_batch(TINY, B=2)
    assert torch.equal(loaded(batch).logits, model(batch).logits)
    for name, cfg in S2S_PRESETS.items():
        assert S2SConfig(**asdict(cfg)) == cfg, name
    with pytest.raises(ValueError):
        S2SConfig(d_model=100, n_heads=8)
    with pytest.raises(ValueError):
        S2SConfig(text_vocab=10)


def test_flops_and_params():
    model = tiny_model()
    n, n_nonemb = model.num_params(), model.num_params(non_embedding=True)
    assert n == sum(p.numel() for p in model.parameters()) and 0 < n_nonemb < n
    f = model.flops_per_token(100, enc_len=200)
    assert f > 6 * n_nonemb * 0.5 and model.flops_per_token(200, 200) > model.flops_per_token(100, 100)
    assert model.flops_per_sample(200, 100) == pytest.approx(100 * f)


def test_grad_checkpoint_gives_same_loss_and_grads():
    batch = make_batch(TINY, B=2)
    grads = []
    for gc in (False, True):
        model = tiny_model(grad_checkpoint=gc).train()
        out = model(batch)
        out.loss.backward()
        grads.append((out.loss.detach(), model.encoder.blocks[0].conv.depthwise.weight.grad.clone(),
                      model.decoder[0].cross_attn.kv.weight.grad.clone()))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_preset_sizes_match_the_docstring():
    expected = {"tiny": 1.81e6, "small": 74.3e6, "base": 271.3e6, "large": 1.144e9}
    for name, n in expected.items():
        with torch.device("meta"):  # no memory, no init time
            model = S2SModel(S2S_PRESETS[name])
        assert model.num_params() == pytest.approx(n, rel=0.005), name


