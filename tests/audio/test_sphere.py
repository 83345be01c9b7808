"""NIST SPHERE: header parsing, decoding of every coding LDC ships, and every bad-input case."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stages.audio.load import decode_file
from stages.errors import RejectError
from stages.audio.sphere import (
    decode_sphere,
    parse_shorten_header,
    read_sphere_header,
    sphere_header_bytes,
    ulaw_decode,
    ulaw_encode,
    write_sphere,
)
from tests.fixtures.shorten import (
    TYPE_AU2,
    ULAW_MAXSHIFT,
    encode_shorten,
    write_shorten_sphere,
)

SR = 8000


def two_tones(frames: int = SR, seed: int = 0) -> np.ndarray:
    """Two distinct int16 channels: 440 Hz plus noise, and 1000 Hz."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / SR
    a = np.sin(2 * np.pi * 440 * t) * 8000 + rng.normal(0, 300, frames)
    b = np.sin(2 * np.pi * 1000 * t) * 12000
    return np.stack([a, b]).round().astype(np.int16)


def as_int(samples: np.ndarray) -> np.ndarray:
    return np.round(samples * 32768).astype(np.int32)


def reason(fn, *args, **kwargs) -> str:
    with pytest.raises(RejectError) as info:
        fn(*args, **kwargs)
    return info.value.reason


# ------------------------------------------------------------------ header


def test_header_fields_parsed(tmp_path: Path):
    path = tmp_path / "h.sph"
    x = two_tones(800)
    write_sphere(str(path), x, SR, "ulaw", extra_fields={
        "database_id": "Fisher English Part 1", "sample_checksum": 4321, "gain": 1.5})
    h = read_sphere_header(str(path))
    assert (h.header_size, h.channel_count, h.sample_rate, h.sample_count) == (1024, 2, SR, 800)
    assert (h.sample_n_bytes, h.sample_coding, h.sample_byte_format) == (1, "ulaw", "1")
    assert h.fields["database_id"] == "Fisher English Part 1"
    assert h.fields["sample_checksum"] == 4321 and h.fields["gain"] == 1.5
    assert path.stat().st_size == 1024 + 800 * 2


# ------------------------------------------------------------------ uncompressed codings


@pytest.mark.parametrize("byte_format", ["01", "10"])
def test_pcm_round_trip_both_byte_orders(tmp_path: Path, byte_format: str):
    x = two_tones(SR + 123)
    path = tmp_path / "p.sph"
    if byte_format == "01":
        write_sphere(str(path), x, SR, "pcm")
    else:
        header = sphere_header_bytes(2, x.shape[1], SR, "pcm", {"sample_byte_format": "10"})
        path.write_bytes(header + x.T.astype(">i2").tobytes())
    d = decode_sphere(str(path), expected_channels=2)
    assert d.samples.dtype == np.float32 and d.samples.shape == (2, SR + 123)
    assert d.sample_rate == SR and d.encoding == ("pcm_s16le" if byte_format == "01" else "pcm_s16be")
    assert np.abs(as_int(d.samples) - x).max() <= 1
    assert np.abs(as_int(d.samples[0]) - as_int(d.samples[1])).max() > 1000  # channels distinct
    assert d.duration_s == pytest.approx((SR + 123) / SR)


def test_ulaw_codec_is_g711():
    codes = np.arange(256, dtype=np.uint8)
    linear = ulaw_decode(codes)
    # ffmpeg's pcm_mulaw decoder agrees with our table on all 256 codes
    out = subprocess.run(["ffmpeg", "-v", "error", "-f", "mulaw", "-ar", "8000", "-ac", "1",
                          "-i", "pipe:0", "-f", "s16le", "pipe:1"], input=codes.tobytes(),
                         capture_output=True, check=True).stdout
    assert np.array_equal(np.frombuffer(out, "<i2"), linear)
    # encode is the exact inverse of the table (both zeros decode to 0)
    assert np.array_equal(ulaw_decode(ulaw_encode(linear)), linear)
    assert list(ulaw_encode(np.array([0, 32767, -32768]))) == [0xFF, 0x80, 0x00]
    assert linear.max() == 32124 and linear.min() == -32124


def test_ulaw_round_trip(tmp_path: Path):
    x = two_tones(SR)
    path = tmp_path / "u.sph"
    write_sphere(str(path), x, SR, "ulaw")
    d = decode_sphere(str(path), expected_channels=2)
    assert d.encoding == "ulaw" and d.samples.shape == (2, SR)
    assert np.array_equal(as_int(d.samples), ulaw_decode(ulaw_encode(x)))
    err = as_int(d.samples) - x
    snr = 10 * np.log10(np.sum(x.astype(float) ** 2) / np.sum(err.astype(float) ** 2))
    assert snr > 30  # mu-law's ~38 dB SNR on a loud signal


def test_ulaw_file_written_by_sox(tmp_path: Path):
    wav, sph, back = tmp_path / "in.wav", tmp_path / "sox.sph", tmp_path / "sox_dec.wav"
    sf.write(wav, two_tones(12000).T, SR, subtype="PCM_16")
    subprocess.run(["sox", str(wav), "-e", "u-law", "-t", "sph", str(sph)], check=True)
    subprocess.run(["sox", str(sph), "-e", "signed", "-b", "16", str(back)], check=True)
    ours = decode_sphere(str(sph), expected_channels=2)
    sox_pcm, sox_sr = sf.read(back, dtype="int16", always_2d=True)
    assert ours.sample_rate == sox_sr == SR and ours.encoding == "ulaw"
    assert ours.samples.shape == (2, 12000)
    assert np.array_equal(as_int(ours.samples), sox_pcm.T)


def test_ulaw_encoder_matches_sox_on_every_int16(tmp_path: Path):
    ramp = np.arange(-32768, 32768).astype(np.int16)
    wav, raw = tmp_path / "ramp.wav", tmp_path / "ramp.ul"
    sf.write(wav, ramp, SR, subtype="PCM_16")
    subprocess.run(["sox", "-D", str(wav), "-e", "u-law", "-t", "raw", str(raw)], check=True,
                   capture_output=True)  # -D: no dither
    assert np.array_equal(np.frombuffer(raw.read_bytes(), np.uint8), ulaw_encode(ramp))


def test_mu_law_spelling_and_decode_file_routing(tmp_path: Path):
    x = two_tones(4000)
    path = tmp_path / "m.sph"
    header = sphere_header_bytes(2, 4000, SR, "mu-law")
    path.write_bytes(header + ulaw_encode(x.T.reshape(-1)).tobytes())
    d = decode_file(str(path))  # generic entry point hands SPHERE to decode_sphere
    assert d.encoding == "ulaw" and np.array_equal(as_int(d.samples), ulaw_decode(ulaw_encode(x)))


# ------------------------------------------------------------------ embedded shorten


@pytest.mark.parametrize("blocksize,nmean", [(256, 0), (700, 0), (9, 0), (17, 0), (40, 0),
                                             (100, 0), (17, 4), (3, 0)])
def test_shorten_pcm_lossless_every_bit_phase(tmp_path: Path, blocksize: int, nmean: int):
    """ffmpeg needs a RIFF chunk spliced in after the shorten header; the splice must work
    whatever bit phase the header ends on (these cases cover phases 0..7)."""
    x = two_tones(3001)
    x[1, :700] = 0  # FN_ZERO blocks
    x[0, 1000:1600] = (x[0, 1000:1600] // 8) * 8  # FN_BITSHIFT blocks
    path = tmp_path / "s.sph"
    write_shorten_sphere(str(path), x, SR, blocksize=blocksize, nmean=nmean)
    payload = path.read_bytes()[1024:]
    assert parse_shorten_header(payload).header_bits % 8 == \
        {(256, 0): 0, (700, 0): 1, (9, 0): 2, (17, 0): 3, (40, 0): 4, (100, 0): 5,
         (17, 4): 6, (3, 0): 7}[(blocksize, nmean)]
    d = decode_sphere(str(path), expected_channels=2)
    assert d.encoding == "shorten" and d.samples.shape == (2, 3001)
    assert np.array_equal(as_int(d.samples), x)


def test_shorten_pcm_big_endian_type(tmp_path: Path):
    x = two_tones(5000)
    path = tmp_path / "be.sph"
    write_shorten_sphere(str(path), x, SR, byte_format="10")
    assert read_sphere_header(str(path)).sample_byte_format == "10"
    assert parse_shorten_header(path.read_bytes()[1024:]).ftype == 3
    assert np.array_equal(as_int(decode_sphere(str(path)).samples), x)


def test_shorten_ulaw_lossless_with_every_bitshift(tmp_path: Path):
    """CallHome's coding: shorten type 8 over mu-law codes, with the non-linear bitshift
    remap. One block per shift 0..12, built from codes whose max shift is >= that shift."""
    rng = np.random.default_rng(1)
    blocks = []
    for shift in range(13):
        allowed = np.flatnonzero(ULAW_MAXSHIFT >= shift)
        exact = np.flatnonzero(ULAW_MAXSHIFT == shift)
        block = rng.choice(allowed, size=(2, 256))
        block[:, 0] = exact[0]
        blocks.append(block)
    codes = np.concatenate(blocks, axis=1).astype(np.uint8)
    codes = np.concatenate([codes, ulaw_encode(two_tones(1234))], axis=1)  # short last block
    codes[0, 300:310] = 127  # mu-law's negative zero: type 8 codes it apart from +0 (255)
    path = tmp_path / "su.sph"
    write_shorten_sphere(str(path), codes, SR, coding="ulaw,embedded-shorten-v2.00")
    h = read_sphere_header(str(path))
    assert (h.sample_coding, h.sample_n_bytes) == ("ulaw,embedded-shorten-v2.00", 1)
    assert parse_shorten_header(path.read_bytes()[1024:]).ftype == TYPE_AU2
    d = decode_sphere(str(path), expected_channels=2)
    assert d.encoding == "shorten_ulaw" and d.samples.shape == codes.shape
    assert np.array_equal(as_int(d.samples), ulaw_decode(codes))


def test_ffmpeg_cannot_decode_ulaw_shorten_itself():
    """Why mu-law shorten does not go through ffmpeg: it rejects shorten file type 8."""
    stream = encode_shorten(ulaw_encode(two_tones(2000)), ftype=TYPE_AU2,
                            verbatim_wav_header=True)
    proc = subprocess.run(["ffmpeg", "-v", "error", "-f", "shn", "-i", "pipe:0", "-f", "s16le",
                           "pipe:1"], input=stream, capture_output=True)
    assert proc.returncode != 0 or len(proc.stdout) == 0


def test_shorten_stream_with_verbatim_chunk_passes_through(tmp_path: Path):
    x = two_tones(2000)
    path = tmp_path / "v.sph"
    path.write_bytes(sphere_header_bytes(2, 2000, SR, "pcm,embedded-shorten-v2.00")
                     + encode_shorten(x, verbatim_wav_header=True))
    assert np.array_equal(as_int(decode_sphere(str(path)).samples), x)


# ------------------------------------------------------------------ bad input


def test_truncated_file(tmp_path: Path):
    path = tmp_path / "t.sph"
    write_sphere(str(path), two_tones(2 * SR), SR, "ulaw")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert reason(decode_sphere, str(path)) == "sphere_truncated"


@pytest.mark.parametrize("coding", ["pcm,embedded-shorten-v2.00", "ulaw,embedded-shorten-v2.00"])
def test_truncated_shorten(tmp_path: Path, coding: str):
    path = tmp_path / "ts.sph"
    write_shorten_sphere(str(path), two_tones(2 * SR), SR, coding=coding)
    data = path.read_bytes()
    path.write_bytes(data[: 1024 + (len(data) - 1024) // 2])
    assert reason(decode_sphere, str(path)) == "sphere_truncated"


def test_garbage_header(tmp_path: Path):
    rng = np.random.default_rng(3)
    path = tmp_path / "g.sph"
    path.write_bytes(b"NIST_1A\n   1024\n" + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    assert reason(decode_sphere, str(path)) == "sphere_bad_header"
    path.write_bytes(b"NIST_1A\n   abcd\n" + b" " * 2000)
    assert reason(decode_sphere, str(path)) == "sphere_bad_header"
    no_rate = sphere_header_bytes(1, 100, SR, "pcm").replace(b"sample_rate -i 8000",
                                                             b"sample_rat9 -i 8000")
    path.write_bytes(no_rate + bytes(200))
    assert reason(decode_sphere, str(path)) == "sphere_bad_header"
    path.write_bytes(sphere_header_bytes(1, 100, SR, "pcm")[:400])  # cut inside the header
    assert reason(decode_sphere, str(path)) == "sphere_bad_header"


def test_header_claims_more_samples_than_present(tmp_path: Path):
    x = two_tones(SR)
    path = tmp_path / "more.sph"
    path.write_bytes(sphere_header_bytes(2, 2 * SR, SR, "pcm") + x.T.astype("<i2").tobytes())
    assert reason(decode_sphere, str(path)) == "sphere_truncated"
    # within 0.1 s: decode what is there
    path.write_bytes(sphere_header_bytes(2, SR + 400, SR, "pcm") + x.T.astype("<i2").tobytes())
    d = decode_sphere(str(path))
    assert d.samples.shape == (2, SR) and np.abs(as_int(d.samples) - x).max() <= 1


def test_header_claims_fewer_samples_than_present(tmp_path: Path):
    x = two_tones(SR)
    path = tmp_path / "fewer.sph"
    path.write_bytes(sphere_header_bytes(2, SR // 2, SR, "ulaw")
                     + ulaw_encode(x.T.reshape(-1)).tobytes())
    assert reason(decode_sphere, str(path)) == "sphere_length_mismatch"
    path.write_bytes(sphere_header_bytes(2, SR - 500, SR, "ulaw")
                     + ulaw_encode(x.T.reshape(-1)).tobytes())
    d = decode_sphere(str(path))  # 62.5 ms extra: within tolerance, trimmed to the header
    assert d.samples.shape == (2, SR - 500)
    assert np.array_equal(as_int(d.samples), ulaw_decode(ulaw_encode(x))[:, : SR - 500])


@pytest.mark.parametrize("claimed,code", [(3 * SR, "sphere_truncated"),
                                          (SR // 2, "sphere_length_mismatch")])
def test_shorten_header_length_lies(tmp_path: Path, claimed: int, code: str):
    path = tmp_path / "lie.sph"
    write_shorten_sphere(str(path), two_tones(SR), SR, sample_count=claimed)
    assert reason(decode_sphere, str(path)) == code


def test_missing_channel(tmp_path: Path):
    path = tmp_path / "mono.sph"
    write_sphere(str(path), two_tones(SR)[:1], SR, "ulaw")
    assert reason(decode_sphere, str(path), expected_channels=2) == "missing_channel"
    assert decode_sphere(str(path), expected_channels=1).num_channels == 1


@pytest.mark.parametrize("coding", ["ulaw", "pcm"])
def test_silent_channel(tmp_path: Path, coding: str):
    x = two_tones(SR)
    x[1] = 0
    path = tmp_path / "silent.sph"
    write_sphere(str(path), x, SR, coding)
    with pytest.raises(RejectError) as info:
        decode_sphere(str(path), expected_channels=2)
    assert info.value.reason == "silent_channel" and "[1]" in info.value.detail


def test_text_file_named_sph(tmp_path: Path):
    path = tmp_path / "notes.sph"
    path.write_text("this is a transcript, not audio\n" * 50)
    assert reason(decode_sphere, str(path)) == "sphere_bad_header"


def test_empty_and_missing_file(tmp_path: Path):
    path = tmp_path / "empty.sph"
    path.write_bytes(b"")
    assert reason(decode_sphere, str(path)) == "audio_empty"
    assert reason(decode_sphere, str(tmp_path / "nope.sph")) == "audio_not_found"
    path.write_bytes(sphere_header_bytes(2, 0, SR, "ulaw"))
    assert reason(decode_sphere, str(path)) == "audio_empty"


@pytest.mark.parametrize("coding", ["wavpack", "pcm,embedded-wavpack", "alaw",
                                    "pcm,embedded-shorten-v1.00-garbage"])
def test_unsupported_coding(tmp_path: Path, coding: str):
    path = tmp_path / "w.sph"
    extra = {"sample_n_bytes": 1} if coding == "alaw" else None
    path.write_bytes(sphere_header_bytes(1, 100, SR, coding, extra) + bytes(200))
    expected = "audio_decode_failed" if "shorten" in coding else "sphere_unsupported_coding"
    assert reason(decode_sphere, str(path)) == expected


def test_corrupt_shorten_payload(tmp_path: Path):
    rng = np.random.default_rng(5)
    path = tmp_path / "c.sph"
    header = sphere_header_bytes(2, SR, SR, "pcm,embedded-shorten-v2.00")
    path.write_bytes(header + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    assert reason(decode_sphere, str(path)) == "audio_decode_failed"  # no 'ajkg' magic
    good = encode_shorten(two_tones(SR))
    path.write_bytes(header + good[:8] + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    assert reason(decode_sphere, str(path)) in ("audio_decode_failed", "sphere_truncated")
