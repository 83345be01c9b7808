"""Speech-to-speech model: user turn (+ conversation history) audio tokens in, AI turn tokens out.

Architecture (research note, section 7):
- Encoder input: per frame, the sum of K per-codebook embeddings (each with a pad token) plus a
  role embedding. The sequence is [context frames ; separator ; user frames ; user text bytes],
  packed per sample so that its real tokens are contiguous from position 0 (padding moves to the
  end) and cut to the longest sample's real length: a sample encodes the same whatever the
  batch's padding is, and rotary positions count real tokens only. Tc may be 0 (no history).
- Encoder: Conformer (`encoder_layers`, default 6), key padding mask.
- Decoder: causal pre-norm Transformer (`decoder_layers`, default 6): self-attention (RoPE) +
  cross-attention to the encoder output + FFN. Input per step: sum of K codebook embeddings of
  the previous step + AI role embedding + voice embedding (`ai_voice`: an index of the voice
  table built from stable speaker ids, train/voices.py; 0 = an unknown or rare voice). One Linear predicts all K codebooks (K * (codebook_size + 1) logits;
  the extra class is end-of-turn).
- End of turn: an EOS "frame" follows the AI turn's last frame in every codebook, so the model
  decides how long it speaks; `generate` stops when every sample has emitted EOS on codebook 0.
  A turn cropped at the loader's length limit (`ai_eos` False) is trained without an end.

Delay pattern, not a depth transformer. The AI tokens are laid out MusicGen-style (model/delay.py):
codebook k lags k steps, so one decoder pass predicts all K codebooks of a step, and codebook k of
frame t is conditioned on codebooks < k of frame t through the previous steps. Moshi and CSM
instead run a small depth transformer over the K codebooks of each frame: better modelling of
the within-frame dependency, but K sequential steps per frame at inference and a second model
to train. The delay pattern costs K-1 extra steps per turn (not per frame), keeps training one
dense, large-matmul pass (good GPU utilization / MFU) and generation one step per frame.

Text stream (`text_vocab` > 0; byte-level UTF-8, 256 bytes + pad/bos/eos = TEXT_VOCAB):
- user text: extra encoder tokens with their own role, after the user frames;
- AI text: an auxiliary CTC head on the decoder states (each decoder step upsampled
  `text_ctc_upsample` times so that 12.5 Hz frames can still carry UTF-8 bytes of Hindi/Telugu),
  weighted by `text_loss_weight`; a row is a CTC target only when its text is whole and fits
  what the kept frames can carry (`text_targets_ok`). It needs no text at inference and no alignment, and pushes the
  decoder to represent what it is about to say (a training-only "inner monologue"). An
  interleaved text prefix (Moshi) would need per-sample offsets and a two-stage generate.

Parameter counts (n_codebooks=8, codebook_size=1024, text off; `num_params()`), and training
FLOPs per decoder step for a 30 s context + 15 s user turn (1501 encoder tokens) and a 15 s AI
turn (758 decoder steps) at 50 Hz (`flops_per_token(758, 1501)`):

    preset  d_model heads enc dec ff conv     params  non-embedding  GFLOP/step
    tiny        64     4   2   2   2    7     1.81 M        0.76 M        0.01
    small      512     8   6   6   4   31    74.3 M        65.8 M         0.82
    base      1024    16   6   6   4   31   271.3 M       254.3 M         2.84
    large     1536    12  12  12   4   31    1.144 B       1.118 B       12.0

small/base fit one H100/H200 with plain DDP; large is for the long H200 phases (bf16,
`grad_checkpoint` for long contexts, FSDP across GPUs). The text stream adds
text_vocab * d_model * (1 + text_ctc_upsample) parameters (0.7 M for small).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from model.conformer import (ConformerEncoder, CrossAttention, FeedForward, KVCache, Rope,
                             RotaryEmbedding, SelfAttention)
from model.delay import apply_delay, delay_mask, revert_delay

# Byte-level text: 0..255 are UTF-8 bytes.
TEXT_PAD = 256  # padding, and the CTC blank
TEXT_BOS = 257
TEXT_EOS = 258
TEXT_VOCAB = 259

ROLE_CONTEXT, ROLE_USER, ROLE_SEP, ROLE_USER_TEXT, ROLE_AI = range(5)
N_ROLES = 5


@dataclass
class S2SConfig:
    n_codebooks: int = 8
    codebook_size: int = 1024
    d_model: int = 512
    n_heads: int = 8
    encoder_layers: int = 6
    decoder_layers: int = 6
    ff_mult: int = 4
    conv_kernel: int = 31
    dropout: float = 0.1
    max_frames: int = 750  # default AI-turn length limit for generate (15 s at 50 Hz)
    n_voices: int = 256  # voice table size (train/voices.py), index 0 = unknown/rare voices
    text_vocab: int = 0  # 0 = no text stream; else >= TEXT_VOCAB (byte-level)
    text_loss_weight: float = 0.1
    text_ctc_upsample: int = 4
    rope_base: float = 10000.0
    grad_checkpoint: bool = False

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model {self.d_model} / n_heads {self.n_heads} must give an even head size")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd, got {self.conv_kernel}")
        if 0 < self.text_vocab < TEXT_VOCAB:
            raise ValueError(f"text_vocab must be 0 or >= {TEXT_VOCAB} (bytes + specials)")
        if min(self.n_codebooks, self.codebook_size, self.n_voices, self.text_ctc_upsample) < 1:
            raise ValueError("n_codebooks, codebook_size, n_voices, text_ctc_upsample must be >= 1")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "S2SConfig":
        """Like S2SConfig(**d), ignoring keys this version does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


S2S_PRESETS: dict[str, S2SConfig] = {
    "tiny": S2SConfig(d_model=64, n_heads=4, encoder_layers=2, decoder_layers=2, ff_mult=2,
                      conv_kernel=7, dropout=0.0, max_frames=64, n_voices=16),
    "small": S2SConfig(d_model=512, n_heads=8),
    "base": S2SConfig(d_model=1024, n_heads=16),
    "large": S2SConfig(d_model=1536, n_heads=12, encoder_layers=12, decoder_layers=12),
}


@dataclass
class S2SOutput:
    loss: Tensor  # audio CE (mean over codebooks) + text_loss_weight * text CTC
    logits: Tensor  # [B, S, K, codebook_size + 1] in the delayed layout, S = Ta + K
    per_codebook_loss: Tensor  # [K], detached
    accuracy: Tensor  # [K] per-codebook top-1 accuracy on real targets, detached
    audio_loss: Tensor  # detached
    text_loss: Optional[Tensor]  # detached; None without a text stream
    n_targets: Tensor  # number of real audio targets (all codebooks)


def text_bytes(text: str, max_len: int, keep_end: bool = False) -> bytes:
    """UTF-8 bytes of ``text``, cut at a character boundary to at most ``max_len`` bytes: its
    start, or with ``keep_end`` its end (a user turn keeps its end, what the answer replies to).
    The one encoding of text for the model: the loader and ``train.respond`` both use it."""
    raw = text.encode("utf-8")
    if len(raw) <= max_len:
        return raw
    cut = raw[len(raw) - max_len:] if keep_end else raw[:max_len]
    return cut.decode("utf-8", errors="ignore").encode("utf-8")


def text_tokens(texts: list[str], max_len: int, keep_end: bool = False) -> tuple[Tensor, Tensor]:
    """``text_bytes`` of each text as (tokens [B, L] long padded with TEXT_PAD, mask [B, L]
    bool), L = longest (<= max_len)."""
    encoded = [text_bytes(t, max_len, keep_end) for t in texts]
    L = max((len(b) for b in encoded), default=0)
    tokens = torch.full((len(texts), L), TEXT_PAD, dtype=torch.long)
    mask = torch.zeros((len(texts), L), dtype=torch.bool)
    for i, b in enumerate(encoded):
        tokens[i, :len(b)] = torch.tensor(list(b), dtype=torch.long)
        mask[i, :len(b)] = True
    return tokens, mask


class DecoderLayer(nn.Module):
    def __init__(self, cfg: S2SConfig):
        super().__init__()
        d = cfg.d_model
        self.self_norm, self.self_attn = nn.LayerNorm(d), SelfAttention(d, cfg.n_heads, cfg.dropout)
        self.cross_norm, self.cross_attn = nn.LayerNorm(d), CrossAttention(d, cfg.n_heads, cfg.dropout)
        self.ff_norm, self.ff = nn.LayerNorm(d), FeedForward(d, cfg.ff_mult, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, rope: Rope, memory_mask: Tensor, memory: Optional[Tensor] = None,
                kv: Optional[tuple[Tensor, Tensor]] = None, cache: Optional[KVCache] = None) -> Tensor:
        x = x + self.drop(self.self_attn(self.self_norm(x), rope=rope, causal=True, cache=cache))
        x = x + self.drop(self.cross_attn(self.cross_norm(x), memory_mask, memory=memory, kv=kv))
        return x + self.ff(self.ff_norm(x))


class S2SModel(nn.Module):
    def __init__(self, cfg: S2SConfig):
        super().__init__()
        self.cfg = cfg
        K, N, d = cfg.n_codebooks, cfg.codebook_size, cfg.d_model
        # Encoder code ids: 0..N-1 codes, N pad. Decoder: 0..N-1 codes, N end-of-turn (also the
        # EOS output class), N+1 pad / delay filler, N+2 begin-of-turn.
        self.enc_pad = N
        self.dec_eos, self.dec_pad, self.dec_bos = N, N + 1, N + 2
        self.enc_codes = nn.Embedding(K * (N + 1), d)
        self.dec_codes = nn.Embedding(K * (N + 3), d)
        self.roles = nn.Embedding(N_ROLES, d)
        self.voices = nn.Embedding(cfg.n_voices, d)
        self.text_emb = nn.Embedding(cfg.text_vocab, d) if cfg.text_vocab else None
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = ConformerEncoder(cfg.encoder_layers, d, cfg.n_heads, cfg.ff_mult, cfg.conv_kernel,
                                        cfg.dropout, cfg.rope_base, cfg.grad_checkpoint)
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.dec_rope = RotaryEmbedding(d // cfg.n_heads, cfg.rope_base)
        self.dec_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, K * (N + 1))
        self.text_head = nn.Linear(d, cfg.text_ctc_upsample * cfg.text_vocab) if cfg.text_vocab else None
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    # ---- bookkeeping -------------------------------------------------------------------------

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.cfg)

    def fsdp_units(self) -> list[nn.Module]:
        """The blocks FSDP shards one by one (train.distributed.wrap): each layer's parameters
        are gathered only while that layer runs."""
        return [*self.encoder.blocks, *self.decoder]

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Embedding))
        return n

    def _matmul_params(self) -> tuple[int, int]:
        """(params applied once per encoder token, once per decoder position), embeddings out.
        Cross-attention K/V projections run over encoder tokens, so they count there."""
        count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
        cross_kv = sum(count(layer.cross_attn.kv) for layer in self.decoder)
        enc = count(self.encoder) + cross_kv
        dec = sum(count(layer) for layer in self.decoder) - cross_kv + count(self.dec_norm) + count(self.head)
        if self.text_head is not None:
            dec += count(self.text_head)
        return enc, dec

    def flops_per_sample(self, enc_len: int, dec_len: int) -> float:
        """Training FLOPs (forward + backward) of one sample, PaLM-style: 6 * matmul params per
        token plus 12 * layers * d_model * (attended length) per query token for attention."""
        n_enc, n_dec = self._matmul_params()
        d, Le, Ld = self.cfg.d_model, self.cfg.encoder_layers, self.cfg.decoder_layers
        attn = 12 * d * (Le * enc_len * enc_len + Ld * dec_len * dec_len + Ld * dec_len * enc_len)
        return float(6 * (n_enc * enc_len + n_dec * dec_len) + attn)

    def flops_per_token(self, seq_len: int, enc_len: Optional[int] = None) -> float:
        """Training FLOPs per decoder position (frame step) of a sample with `seq_len` decoder
        positions and `enc_len` encoder tokens (default seq_len); for MFU =
        flops_per_token * decoder positions per second / peak FLOP/s."""
        return self.flops_per_sample(seq_len if enc_len is None else enc_len, seq_len) / seq_len

    # ---- encoder -----------------------------------------------------------------------------

    def _embed(self, table: nn.Embedding, codes: Tensor) -> Tensor:
        """Sum of per-codebook embeddings (one table, codebook k at rows k*vocab..): [B, K, T] -> [B, T, d]."""
        K = codes.shape[1]
        offsets = torch.arange(K, device=codes.device) * (table.num_embeddings // K)
        return table(codes + offsets[None, :, None]).sum(dim=1)

    def encode(self, user_codes: Tensor, user_mask: Tensor, context_codes: Optional[Tensor] = None,
               context_mask: Optional[Tensor] = None, user_text: Optional[Tensor] = None,
               user_text_mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """-> (memory [B, S, d], memory_mask [B, S]); real tokens packed first in each row."""
        B = user_codes.shape[0]
        device = user_codes.device
        parts: list[Tensor] = []
        masks: list[Tensor] = []
        if context_codes is not None and context_codes.shape[-1] > 0:
            codes = context_codes.masked_fill(~context_mask[:, None, :], self.enc_pad)
            parts.append(self._embed(self.enc_codes, codes) + self.roles.weight[ROLE_CONTEXT])
            masks.append(context_mask)
        parts.append(self.roles.weight[ROLE_SEP].expand(B, 1, -1))
        masks.append(torch.ones(B, 1, dtype=torch.bool, device=device))
        codes = user_codes.masked_fill(~user_mask[:, None, :], self.enc_pad)
        parts.append(self._embed(self.enc_codes, codes) + self.roles.weight[ROLE_USER])
        masks.append(user_mask)
        if self.text_emb is not None and user_text is not None and user_text.shape[-1] > 0:
            text = user_text.masked_fill(~user_text_mask, TEXT_PAD)
            parts.append(self.text_emb(text) + self.roles.weight[ROLE_USER_TEXT])
            masks.append(user_text_mask)
        x = torch.cat(parts, dim=1)
        mask = torch.cat(masks, dim=1)
        # Pack: a stable sort on "is padding" moves each row's real tokens to the front in order,
        # then the columns no row uses are cut: the encoder runs over the longest row's real
        # length, not over the sum of each stream's longest (which can be far more).
        order = torch.argsort((~mask).to(torch.int32), dim=1, stable=True)
        longest = int(mask.sum(dim=1).max())
        order = order[:, :longest]
        mask = mask.gather(1, order)
        x = x.gather(1, order[..., None].expand(-1, -1, x.shape[-1]))
        x = self.drop(x.masked_fill(~mask[..., None], 0.0))
        return self.encoder(x, mask), mask

    # ---- decoder -----------------------------------------------------------------------------

    def decoder_io(self, ai_codes: Tensor, ai_mask: Tensor, ai_eos: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """AI codes [B, K, Ta] (right-padded; ai_mask a prefix mask) -> (decoder input, targets),
        both [B, K, Ta + K] in the delayed layout. Frame len_b is end-of-turn; targets are -100
        on delay filler and padding.

        ``ai_eos`` [B] bool (default all True): False marks a turn cropped at the length limit,
        which has no end here. Such a row gets no end-of-turn target, and its codebook-k target
        of frame f (at step f + k) is kept only when f + k <= len_b: then every input it is
        conditioned on (codebook j of frame <= f + k - 1 - j) is a kept frame, so nothing is
        learnt from the crop edge (K(K-1)/2 targets per cropped turn are left out)."""
        B, K, Ta = ai_codes.shape
        lengths = ai_mask.sum(dim=1)
        frame = torch.arange(Ta + 1, device=ai_codes.device)[None, :]
        real = frame < lengths[:, None]  # [B, Ta + 1]
        is_eos = frame == lengths[:, None]
        ends = torch.ones(B, dtype=torch.bool, device=ai_codes.device) if ai_eos is None else ai_eos.bool()
        is_eos = is_eos & ends[:, None]
        codes = F.pad(ai_codes, (0, 1))
        codes = torch.where(real[:, None], codes, torch.full_like(codes, self.dec_pad))
        codes = torch.where(is_eos[:, None], torch.full_like(codes, self.dec_eos), codes)
        delayed = apply_delay(codes, self.dec_pad)  # [B, K, Ta + K]
        valid = delay_mask(real | is_eos, K)
        if ai_eos is not None and not bool(ends.all()):
            # Cropped rows: target (k, f) sits at step s = f + k; keep it when f + k <= len.
            step = torch.arange(Ta + K, device=ai_codes.device)[None, None, :]
            k = torch.arange(K, device=ai_codes.device)[None, :, None]
            edge_ok = (step <= lengths[:, None, None]) & ((k > 0) | (step < lengths[:, None, None]))
            valid = torch.where(ends[:, None, None], valid, valid & edge_ok)
        targets = delayed.masked_fill(~valid, -100)
        bos = torch.full_like(delayed[:, :, :1], self.dec_bos)
        return torch.cat([bos, delayed[:, :, :-1]], dim=2), targets

    def _decoder_embed(self, tokens: Tensor, ai_voice: Tensor) -> Tensor:
        x = self._embed(self.dec_codes, tokens) + self.roles.weight[ROLE_AI]
        return x + self.voices(ai_voice % self.cfg.n_voices)[:, None, :]

    def decode(self, tokens: Tensor, ai_voice: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        """Teacher-forced decoder: tokens [B, K, S] -> final hidden states [B, S, d]."""
        x = self.drop(self._decoder_embed(tokens, ai_voice))
        rope = self.dec_rope(torch.arange(x.shape[1], device=x.device))
        for layer in self.decoder:
            if self.cfg.grad_checkpoint and self.training:
                x = checkpoint(layer, x, rope, memory_mask, memory, use_reentrant=False)
            else:
                x = layer(x, rope, memory_mask, memory=memory)
        return self.dec_norm(x)

    def forward(self, batch: dict[str, Tensor]) -> S2SOutput:
        cfg = self.cfg
        K, V = cfg.n_codebooks, cfg.codebook_size + 1
        use_text = self.text_emb is not None
        memory, memory_mask = self.encode(
            batch["user_codes"], batch["user_mask"], batch.get("context_codes"), batch.get("context_mask"),
            batch.get("user_text") if use_text else None, batch.get("user_text_mask") if use_text else None)
        ai_mask = batch["ai_mask"]
        dec_in, targets = self.decoder_io(batch["ai_codes"], ai_mask, batch.get("ai_eos"))
        ai_voice = batch.get("ai_voice")
        if ai_voice is None:
            ai_voice = torch.zeros(dec_in.shape[0], dtype=torch.long, device=dec_in.device)
        h = self.decode(dec_in, ai_voice, memory, memory_mask)
        B, S, _ = h.shape
        logits = self.head(h).view(B, S, K, V)

        tgt = targets.transpose(1, 2)  # [B, S, K]
        valid = tgt != -100
        ce = F.cross_entropy(logits.float().reshape(-1, V), tgt.reshape(-1), ignore_index=-100,
                             reduction="none").view(B, S, K)
        count = valid.sum(dim=(0, 1))
        per_cb = (ce * valid).sum(dim=(0, 1)) / count.clamp(min=1)
        audio_loss = per_cb.mean()
        correct = (logits.argmax(dim=-1) == tgt) & valid
        accuracy = correct.sum(dim=(0, 1)) / count.clamp(min=1)

        loss = audio_loss
        text_loss = None
        if use_text and batch.get("ai_text") is not None:
            text_loss = self._ctc_loss(h, ai_mask.sum(dim=1), batch["ai_text"], batch["ai_text_mask"],
                                       batch.get("ai_text_ok"))
            loss = loss + cfg.text_loss_weight * text_loss
        return S2SOutput(loss=loss, logits=logits, per_codebook_loss=per_cb.detach(),
                         accuracy=accuracy.detach(), audio_loss=audio_loss.detach(),
                         text_loss=None if text_loss is None else text_loss.detach(), n_targets=count.sum())

    def ctc_input_lengths(self, ai_lengths: Tensor) -> Tensor:
        """CTC frames a turn of ``ai_lengths`` frames offers: real decoder positions, upsampled."""
        return (ai_lengths + self.cfg.n_codebooks) * self.cfg.text_ctc_upsample

    @staticmethod
    def ctc_needed(text: Tensor, text_mask: Tensor) -> Tensor:
        """CTC frames a target needs: one per byte plus a blank between equal neighbours."""
        repeats = (text[:, 1:] == text[:, :-1]) & text_mask[:, 1:] & text_mask[:, :-1]
        return text_mask.sum(dim=1) + repeats.sum(dim=1)

    def text_targets_ok(self, ai_lengths: Tensor, text: Tensor, text_mask: Tensor,
                        text_ok: Optional[Tensor] = None) -> Tensor:
        """[B] bool: rows whose text is a target: marked usable by the loader (a complete turn
        whose text was not cut) and short enough for what the kept audio can carry."""
        ok = self.ctc_needed(text, text_mask) <= self.ctc_input_lengths(ai_lengths)
        return ok if text_ok is None else ok & text_ok.bool()

    def _ctc_loss(self, h: Tensor, ai_lengths: Tensor, text: Tensor, text_mask: Tensor,
                  text_ok: Optional[Tensor] = None) -> Tensor:
        B, S, _ = h.shape
        r, V = self.cfg.text_ctc_upsample, self.cfg.text_vocab
        log_probs = self.text_head(h).view(B, S * r, V).float().log_softmax(dim=-1)
        input_lengths = self.ctc_input_lengths(ai_lengths)
        ok = self.text_targets_ok(ai_lengths, text, text_mask, text_ok)
        target_lengths = text_mask.sum(dim=1)
        targets = text.masked_fill(~text_mask, 0)
        per_row = F.ctc_loss(log_probs.transpose(0, 1), targets, input_lengths, target_lengths,
                             blank=TEXT_PAD, reduction="none", zero_infinity=True)
        # Per upsampled frame (not per byte, CTC's "mean"): the same scale as the audio CE.
        # Rows without a usable target add nothing (not even "all blank", a false target).
        return (per_row * ok).sum() / (input_lengths * ok).sum().clamp(min=1)

    # ---- generation --------------------------------------------------------------------------

    def _step(self, tokens: Tensor, pos: int, ai_voice: Tensor, kvs: list[tuple[Tensor, Tensor]],
              memory_mask: Tensor, caches: list[KVCache]) -> Tensor:
        """One decoder step with the KV cache: tokens [B, K, 1] at position pos -> logits [B, K, V]."""
        x = self._decoder_embed(tokens, ai_voice)
        rope = self.dec_rope(torch.tensor([pos], device=x.device))
        for layer, kv, cache in zip(self.decoder, kvs, caches):
            x = layer(x, rope, memory_mask, kv=kv, cache=cache)
        B = x.shape[0]
        return self.head(self.dec_norm(x)).view(B, self.cfg.n_codebooks, self.cfg.codebook_size + 1)

    @torch.no_grad()
    def generate(self, user_codes: Tensor, user_mask: Tensor, context_codes: Optional[Tensor] = None,
                 context_mask: Optional[Tensor] = None, ai_voice: Optional[Tensor] = None,
                 max_frames: Optional[int] = None, temperature: float = 0.0, top_k: int = 0,
                 user_text: Optional[Tensor] = None, user_text_mask: Optional[Tensor] = None,
                 stop_at_eos: bool = True, return_lengths: bool = False,
                 generator: Optional[torch.Generator] = None):
        """Autoregressive AI turn, one decoder step per frame with a KV cache (delay undone).

        temperature 0 = greedy; else softmax sampling at that temperature, restricted to the
        top_k classes when top_k > 0. With stop_at_eos, a sample ends when codebook 0 predicts
        end-of-turn and generation stops once all have; otherwise EOS is never chosen and every
        sample runs max_frames. Returns codes [B, K, T] (T <= max_frames; frames after a sample's
        end are 0), plus lengths [B] when return_lengths."""
        was_training = self.training
        self.eval()
        try:
            return self._generate(user_codes, user_mask, context_codes, context_mask, ai_voice,
                                  max_frames or self.cfg.max_frames, temperature, top_k, user_text,
                                  user_text_mask, stop_at_eos, return_lengths, generator)
        finally:
            self.train(was_training)

    def _generate(self, user_codes, user_mask, context_codes, context_mask, ai_voice, max_frames,
                  temperature, top_k, user_text, user_text_mask, stop_at_eos, return_lengths, generator):
        K, N = self.cfg.n_codebooks, self.cfg.codebook_size
        B, device = user_codes.shape[0], user_codes.device
        memory, memory_mask = self.encode(user_codes, user_mask, context_codes, context_mask,
                                          user_text, user_text_mask)
        kvs = [layer.cross_attn.memory_kv(memory) for layer in self.decoder]
        if ai_voice is None:
            ai_voice = torch.zeros(B, dtype=torch.long, device=device)
        steps = max_frames + K - 1
        caches = [KVCache(steps) for _ in self.decoder]
        out = torch.full((B, K, steps), self.dec_pad, dtype=torch.long, device=device)
        end = torch.full((B,), max_frames, dtype=torch.long, device=device)  # EOS frame per sample
        ended = torch.zeros(B, dtype=torch.bool, device=device)
        frame_of = -torch.arange(K, device=device)  # + step = frame index per codebook
        tokens = torch.full((B, K, 1), self.dec_bos, dtype=torch.long, device=device)
        for s in range(steps):
            logits = self._step(tokens, s, ai_voice, kvs, memory_mask, caches).float()
            logits[:, 1:, self.dec_eos] = float("-inf")  # only codebook 0 decides the end
            if not stop_at_eos:
                logits[:, 0, self.dec_eos] = float("-inf")
            tok = self._pick(logits, temperature, top_k, generator)  # [B, K]
            if s < max_frames:
                new = ~ended & (tok[:, 0] == self.dec_eos)
                end = torch.where(new, torch.full_like(end, s), end)
                ended |= new
            frame = (frame_of + s)[None, :].expand(B, K)
            tok = torch.where(frame == end[:, None], torch.full_like(tok, self.dec_eos), tok)
            tok = torch.where((frame < 0) | (frame > end[:, None]), torch.full_like(tok, self.dec_pad), tok)
            out[:, :, s] = tok
            tokens = tok[:, :, None]
            if bool(ended.all()) and s >= int(end.max()) + K - 2:
                break
        codes = revert_delay(out)  # [B, K, max_frames]
        T = int(end.max()) if stop_at_eos else max_frames
        codes = codes[:, :, :T]
        codes = codes.masked_fill(codes >= N, 0)
        return (codes, end) if return_lengths else codes

    @staticmethod
    def _pick(logits: Tensor, temperature: float, top_k: int, generator: Optional[torch.Generator]) -> Tensor:
        if temperature <= 0:
            return logits.argmax(dim=-1)
        logits = logits / temperature
        if top_k > 0:
            kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = logits.softmax(dim=-1)
        flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
        return flat.view(probs.shape[:-1])


def load_s2s(path_or_state: Any, map_location: str = "cpu") -> S2SModel:
    """Model from a checkpoint file (or its loaded dict) holding {"config": ..., "model": state_dict}."""
    state = path_or_state if isinstance(path_or_state, dict) else torch.load(
        path_or_state, map_location=map_location, weights_only=True)
    model = S2SModel(S2SConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    return model
