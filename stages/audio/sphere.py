"""NIST SPHERE (LDC telephone audio): header parsing, decoding, and a writer.

Decoders, by sample_coding:
- "pcm" (16-bit, either byte order) and "ulaw"/"mu-law": ffmpeg's `nistsphere` demuxer.
- "pcm,embedded-shorten-v2.00": ffmpeg's raw `shn` demuxer and shorten decoder. ffmpeg
  insists on a verbatim RIFF header chunk at the start of the stream, which standalone .shn
  files have and NIST's embedded shorten never has, so one is spliced in (see
  `_shn_for_ffmpeg`); the audio bits are passed through untouched.
- "ulaw,embedded-shorten-v2.00" (shorten file type 8, lossless mu-law, what CallHome ships):
  ffmpeg's shorten decoder rejects that file type ("unknown audio type"), so the
  `desphere-native` decoder is used; it returns G.711-expanded 16-bit PCM.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from stages.audio.decode import DecodedAudio, ffmpeg_decode_f32, sha256_file
from stages.errors import RejectError

HEADER_SIZE = 1024
MAGIC = b"NIST_1A"
LENGTH_TOLERANCE_S = 0.1
SILENCE_LEVEL = 1e-4
_MAX_HEADER_SIZE = 1 << 20
_ULAW_NAMES = ("ulaw", "mu-law", "mulaw")

# G.711 mu-law. Decode is the standard table (bias 0x84). Encoders in the wild differ only
# in how they round 16-bit input at decision boundaries (ffmpeg: nearest level; ITU G.191:
# one's complement truncation); ours is byte-identical to sox's (round to 14 bits, then
# Sun's g711 segment coding). All of them invert the decode table exactly.
_ULAW_BIAS = 0x84

FieldValue = Union[str, int, float]


@dataclass
class SphereHeader:
    header_size: int
    channel_count: int
    sample_rate: int
    sample_count: int
    sample_n_bytes: int
    sample_coding: str  # as in the file: "ulaw", "pcm", "pcm,embedded-shorten-v2.00", ...
    sample_byte_format: str  # "01" little endian, "10" big endian, "1" for 8-bit
    fields: dict[str, FieldValue] = field(default_factory=dict)

    @property
    def base_coding(self) -> str:
        return self.sample_coding.split(",")[0].strip().lower()

    @property
    def compression(self) -> Optional[str]:
        parts = [p.strip().lower() for p in self.sample_coding.split(",")]
        return parts[1] if len(parts) > 1 and parts[1] else None


def ulaw_encode(samples_int16: np.ndarray) -> np.ndarray:
    """G.711 mu-law encode of int16 samples to uint8 codes (byte-identical to sox)."""
    x14 = np.minimum((np.asarray(samples_int16).astype(np.int32) + 2) >> 2, 8191)
    sign = np.where(x14 < 0, 0x80, 0)
    mag = np.minimum(np.abs(x14), 8159) + 0x21  # in [33, 8192]
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 5
    mantissa = np.where(exponent > 7, 0x0F, (mag >> (np.minimum(exponent, 7) + 1)) & 0x0F)
    exponent = np.minimum(exponent, 7)
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)


def ulaw_decode(codes: np.ndarray) -> np.ndarray:
    """G.711 mu-law decode of uint8 codes to int16 (the standard table)."""
    u = (~np.asarray(codes).astype(np.int32)) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def sphere_header_bytes(
    channel_count: int,
    sample_count: int,
    sample_rate: int,
    coding: str = "ulaw",
    extra_fields: Optional[dict[str, FieldValue]] = None,
) -> bytes:
    """A 1024-byte NIST_1A header. `coding` is written as given ("ulaw", "pcm",
    "pcm,embedded-shorten-v2.00", ...); its base sets the sample width and byte format.
    `extra_fields` are added last and may override the standard ones."""
    if coding.split(",")[0].strip().lower() in _ULAW_NAMES:
        n_bytes, byte_format, sig_bits = 1, "1", 8
    else:
        n_bytes, byte_format, sig_bits = 2, "01", 16
    fields: dict[str, FieldValue] = {
        "channel_count": int(channel_count),
        "sample_count": int(sample_count),
        "sample_rate": int(sample_rate),
        "sample_n_bytes": n_bytes,
        "sample_byte_format": byte_format,
        "sample_coding": coding,
        "sample_sig_bits": sig_bits,
    }
    fields.update(extra_fields or {})
    lines = [MAGIC.decode(), f"{HEADER_SIZE:7d}"]
    for name, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            text = str(value)
            lines.append(f"{name} -s{len(text.encode())} {text}")
        elif isinstance(value, int):
            lines.append(f"{name} -i {value}")
        else:
            lines.append(f"{name} -r {value!r}")
    lines.append("end_head")
    text = ("\n".join(lines) + "\n").encode()
    if len(text) > HEADER_SIZE:
        raise ValueError("SPHERE header fields do not fit in 1024 bytes")
    return text + b" " * (HEADER_SIZE - len(text))


def write_sphere(
    path: str,
    samples_int16: np.ndarray,
    sample_rate: int,
    coding: str = "ulaw",
    extra_fields: Optional[dict[str, Union[str, int, float]]] = None,
) -> None:
    """Write (channels, frames) int16 samples as a SPHERE file, "ulaw" or "pcm" (16-bit LE)."""
    x = np.asarray(samples_int16)
    if x.ndim == 1:
        x = x[None, :]
    x = x.astype(np.int16)
    channels, frames = x.shape
    interleaved = x.T.reshape(-1)
    if coding in _ULAW_NAMES:
        payload = ulaw_encode(interleaved).tobytes()
    elif coding == "pcm":
        payload = interleaved.astype("<i2").tobytes()
    else:
        raise ValueError(f"write_sphere supports 'ulaw' and 'pcm', not {coding!r}")
    header = sphere_header_bytes(channels, frames, sample_rate, coding, extra_fields)
    with open(path, "wb") as f:
        f.write(header)
        f.write(payload)


# ---------------------------------------------------------------- header parsing


def _bad(path: str, why: str) -> RejectError:
    return RejectError("sphere_bad_header", f"{os.path.basename(path)}: {why}")


def read_sphere_header(path: str) -> SphereHeader:
    """Parse a NIST_1A header. Raises sphere_bad_header (audio_not_found, audio_empty)."""
    if not os.path.isfile(path):
        raise RejectError("audio_not_found", path)
    file_size = os.path.getsize(path)
    if file_size == 0:
        raise RejectError("audio_empty", f"{path}: zero-length file")
    with open(path, "rb") as f:
        head = f.read(HEADER_SIZE)
        if not head.startswith(MAGIC + b"\n"):
            raise _bad(path, "no NIST_1A magic")
        try:
            header_size = int(head[8:16].split(b"\n")[0].strip())
        except ValueError:
            raise _bad(path, "unparsable header size")
        if not 16 <= header_size <= _MAX_HEADER_SIZE:
            raise _bad(path, f"implausible header size {header_size}")
        if header_size > len(head):
            head += f.read(header_size - len(head))
    if file_size < header_size:
        raise _bad(path, f"file ({file_size} bytes) shorter than its header ({header_size})")
    text = head[:header_size].decode("latin-1")
    lines = text.split("\n")[2:]
    fields: dict[str, FieldValue] = {}
    ended = False
    for raw in lines:
        line = raw.rstrip("\r")
        if line.strip() == "end_head":
            ended = True
            break
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        parts = line.split(" ", 2)
        if len(parts) < 3 or not parts[1].startswith("-"):
            raise _bad(path, f"malformed header line {line[:60]!r}")
        name, kind, value = parts[0], parts[1], parts[2]
        try:
            if kind == "-i":
                fields[name] = int(value.strip())
            elif kind == "-r":
                fields[name] = float(value.strip())
            elif kind.startswith("-s"):
                n = int(kind[2:])
                fields[name] = value[:n] if 0 < n <= len(value) else value
            else:
                raise ValueError(kind)
        except ValueError:
            raise _bad(path, f"malformed header line {line[:60]!r}")
    if not ended:
        raise _bad(path, "no end_head")
    for required in ("sample_count", "sample_rate"):
        if not isinstance(fields.get(required), int):
            raise _bad(path, f"missing or non-integer {required}")
    coding = str(fields.get("sample_coding", "pcm")).strip()
    base = coding.split(",")[0].strip().lower()
    n_bytes = fields.get("sample_n_bytes", 1 if base in _ULAW_NAMES else 2)
    channels = fields.get("channel_count", 1)
    if not isinstance(n_bytes, int) or not isinstance(channels, int):
        raise _bad(path, "non-integer sample_n_bytes or channel_count")
    rate, count = int(fields["sample_rate"]), int(fields["sample_count"])
    if channels < 1 or rate <= 0 or count < 0 or n_bytes < 1:
        raise _bad(path, f"channels={channels} rate={rate} count={count} n_bytes={n_bytes}")
    byte_format = str(fields.get("sample_byte_format", "1" if n_bytes == 1 else "01")).strip()
    return SphereHeader(header_size, channels, rate, count, n_bytes, coding, byte_format,
                        fields)


# ---------------------------------------------------------------- shorten bitstream helpers


class BitReader:
    """MSB-first reader of shorten's Rice-coded header fields."""

    def __init__(self, data: bytes, bit_pos: int = 0):
        self.data = data
        self.pos = bit_pos

    def bit(self) -> int:
        byte = self.pos >> 3
        if byte >= len(self.data):
            raise EOFError("shorten stream ended inside its header")
        b = (self.data[byte] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return b

    def uvar(self, k: int) -> int:
        high = 0
        while self.bit() == 0:
            high += 1
            if high > 64:
                raise ValueError("implausible shorten code")
        low = 0
        for _ in range(k):
            low = (low << 1) | self.bit()
        return (high << k) | low

    def ulong(self) -> int:
        return self.uvar(self.uvar(2))


class BitWriter:
    """MSB-first packer for shorten's Rice codes."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.nbits = 0

    @property
    def bit_length(self) -> int:
        return len(self.out) * 8 + self.nbits

    def bits(self, value: int, n: int) -> None:
        if n == 0:
            return
        self.acc = (self.acc << n) | (value & ((1 << n) - 1))
        self.nbits += n
        while self.nbits >= 8:
            self.nbits -= 8
            self.out.append((self.acc >> self.nbits) & 0xFF)
        self.acc &= (1 << self.nbits) - 1

    def uvar(self, value: int, k: int) -> None:
        high = value >> k
        while high >= 24:
            self.bits(0, 24)
            high -= 24
        self.bits(1, high + 1)
        self.bits(value, k)

    def ulong(self, value: int) -> None:
        k = int(value).bit_length()
        self.uvar(k, 2)
        self.uvar(value, k)

    def var(self, value: int, k: int) -> None:
        self.uvar((value << 1) if value >= 0 else (((~value) << 1) | 1), k + 1)

    def getvalue(self) -> bytes:
        """All bits, the last byte zero-padded."""
        tail = bytes([(self.acc << (8 - self.nbits)) & 0xFF]) if self.nbits else b""
        return bytes(self.out) + tail

    def partial(self) -> tuple[bytes, int, int]:
        """(full bytes, pending bits value, pending bit count)."""
        return bytes(self.out), self.acc, self.nbits


@dataclass
class ShortenInfo:
    version: int
    ftype: int
    channels: int
    blocksize: int
    maxnlpc: int
    nmean: int
    nskip: int
    header_bits: int  # bit offset of the first command
    first_command: int


SHN_TYPE_S16HL, SHN_TYPE_S16LH, SHN_TYPE_AU2 = 3, 5, 8
_FN_VERBATIM = 9


def parse_shorten_header(payload: bytes) -> ShortenInfo:
    """The fixed fields of a shorten v1/v2 stream; ValueError when it is not one."""
    if payload[:4] != b"ajkg" or len(payload) < 6:
        raise ValueError("no shorten 'ajkg' magic")
    r = BitReader(payload, 40)
    try:
        ftype, channels, blocksize, maxnlpc, nmean, nskip = (r.ulong() for _ in range(6))
        header_bits = r.pos
        first = r.uvar(2)
    except EOFError as e:
        raise ValueError(str(e))
    return ShortenInfo(payload[4], ftype, channels, blocksize, maxnlpc, nmean, nskip,
                       header_bits, first)


def _wav_header(channels: int, sample_rate: int) -> bytes:
    import struct

    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, sample_rate * channels * 2,
                      channels * 2, 16)
    return (b"RIFF" + struct.pack("<I", 36) + b"WAVE" + b"fmt " + struct.pack("<I", 16)
            + fmt + b"data" + struct.pack("<I", 0))


def _shn_for_ffmpeg(payload: bytes, info: ShortenInfo, sample_rate: int) -> bytes:
    """The stream with a verbatim RIFF header chunk inserted after the shorten header, as
    ffmpeg's decoder requires. The chunk is padded by whole bytes (9 bits each) until the
    new prefix ends on the same bit phase as the original header, so the rest of the
    stream is appended byte for byte, not re-shifted."""
    if info.first_command == _FN_VERBATIM:
        return payload
    wav = _wav_header(info.channels, sample_rate)
    phase = info.header_bits % 8
    for pad in range(8):
        w = BitWriter()
        w.out += payload[:5]
        for v in (info.ftype, info.channels, info.blocksize, info.maxnlpc, info.nmean, 0):
            w.ulong(v)
        chunk = wav + bytes(pad)
        w.uvar(_FN_VERBATIM, 2)
        w.uvar(len(chunk), 5)
        for b in chunk:
            w.uvar(b, 8)
        if w.bit_length % 8 == phase:
            break
    full, pending, nbits = w.partial()
    start = info.header_bits // 8
    if nbits == 0:
        return full + payload[start:]
    low_mask = (1 << (8 - nbits)) - 1
    merged = (pending << (8 - nbits)) | (payload[start] & low_mask)
    return full + bytes([merged]) + payload[start + 1:]


# ---------------------------------------------------------------- decoding


def _tolerance_frames(sample_rate: int) -> int:
    return int(round(LENGTH_TOLERANCE_S * sample_rate))


def _check_length(path: str, have: int, header: SphereHeader) -> None:
    want, tol = header.sample_count, _tolerance_frames(header.sample_rate)
    name = os.path.basename(path)
    if have < want - tol:
        raise RejectError("sphere_truncated",
                          f"{name}: {have} frames present, header says {want}")
    if have > want + tol:
        raise RejectError("sphere_length_mismatch",
                          f"{name}: {have} frames present, header says only {want}")


def _decode_shorten(path: str, header: SphereHeader) -> tuple[np.ndarray, str]:
    with open(path, "rb") as f:
        f.seek(header.header_size)
        payload = f.read()
    name = os.path.basename(path)
    if not payload:
        raise RejectError("sphere_truncated", f"{name}: no shorten payload")
    try:
        info = parse_shorten_header(payload)
    except ValueError as e:
        raise RejectError("audio_decode_failed", f"{name}: {e}")
    if info.version > 3 or info.ftype > 11 or not 1 <= info.blocksize <= 65535 \
            or info.maxnlpc > 1024 or info.nmean > 1024:
        raise RejectError("audio_decode_failed", f"{name}: corrupt shorten header {info}")
    if info.channels != header.channel_count:
        raise RejectError("audio_decode_failed",
                          f"{name}: shorten has {info.channels} channels, header "
                          f"{header.channel_count}")
    if info.nskip:  # NIST's embedded shorten never skips header bytes
        raise RejectError("audio_decode_failed", f"{name}: corrupt shorten header {info}")
    if info.version != 2:
        raise RejectError("sphere_unsupported_coding",
                          f"{name}: shorten version {info.version} (NIST embeds v2)")
    if info.ftype in (SHN_TYPE_S16HL, SHN_TYPE_S16LH):
        stream = _shn_for_ffmpeg(payload, info, header.sample_rate)
        samples = ffmpeg_decode_f32(["-f", "shn", "-i", "pipe:0"], info.channels, stream)
        return samples, "shorten"
    if info.ftype == SHN_TYPE_AU2:
        try:
            import desphere_native
        except ImportError:
            raise RejectError("sphere_unsupported_coding",
                              f"{name}: mu-law shorten needs the desphere-native package")
        try:
            nchan, _, pcm = desphere_native.shorten_to_pcm(payload)
        except ValueError as e:
            msg = str(e)
            code = "sphere_truncated" if "truncat" in msg or "past end" in msg \
                else "audio_decode_failed"
            raise RejectError(code, f"{name}: shorten: {msg}")
        ints = np.frombuffer(bytes(pcm), dtype="<i2")
        ints = ints[: (ints.size // nchan) * nchan].reshape(-1, nchan).T
        return (ints.astype(np.float32) / 32768.0), "shorten_ulaw"
    raise RejectError("sphere_unsupported_coding", f"{name}: shorten file type {info.ftype}")


def decode_sphere(path: str, expected_channels: Optional[int] = None) -> DecodedAudio:
    """Decode a SPHERE file (pcm, mu-law, embedded shorten) to float32 (channels, frames),
    checking its length against the header and its channels for presence and signal."""
    header = read_sphere_header(path)
    name = os.path.basename(path)
    base, compression = header.base_coding, header.compression
    if base in _ULAW_NAMES:
        width_ok = header.sample_n_bytes == 1
    elif base == "pcm":
        width_ok = header.sample_n_bytes == 2 and header.sample_byte_format in ("01", "10")
    else:
        width_ok = False
    if not width_ok or (compression and not compression.startswith("embedded-shorten")):
        raise RejectError("sphere_unsupported_coding",
                          f"{name}: {header.sample_coding!r} with {header.sample_n_bytes} "
                          f"byte(s), byte format {header.sample_byte_format!r}")
    if expected_channels is not None and header.channel_count < expected_channels:
        raise RejectError("missing_channel", f"{name}: header has {header.channel_count} "
                                             f"channel(s), expected {expected_channels}")
    if header.sample_count == 0:
        raise RejectError("audio_empty", f"{name}: sample_count is 0")
    if compression:
        samples, encoding = _decode_shorten(path, header)
    else:
        frame_bytes = header.channel_count * header.sample_n_bytes
        present = (os.path.getsize(path) - header.header_size) // frame_bytes
        _check_length(path, present, header)
        if present == 0:
            raise RejectError("audio_empty", f"{name}: no sample data")
        samples = ffmpeg_decode_f32(["-f", "nistsphere", "-i", path], header.channel_count)
        encoding = "ulaw" if base in _ULAW_NAMES else \
            ("pcm_s16le" if header.sample_byte_format == "01" else "pcm_s16be")
    _check_length(path, samples.shape[1], header)
    samples = samples[:, : header.sample_count]
    if samples.shape[1] == 0:
        raise RejectError("audio_empty", f"{name}: no frames decoded")
    if expected_channels is not None and samples.shape[0] < expected_channels:
        raise RejectError("missing_channel", f"{name}: decoded {samples.shape[0]} "
                                             f"channel(s), expected {expected_channels}")
    if samples.shape[0] >= 2:
        peaks = np.max(np.abs(samples), axis=1)
        silent = [int(c) for c in np.flatnonzero(peaks < SILENCE_LEVEL)]
        if silent:
            raise RejectError("silent_channel", f"{name}: channel(s) {silent} are digital "
                                                "silence throughout")
    return DecodedAudio(np.ascontiguousarray(samples, dtype=np.float32), header.sample_rate,
                        encoding, sha256_file(path))
