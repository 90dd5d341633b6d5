"""G.711 against the ITU-T G.191 reference: every linear input and every code, both laws."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest

from simplesip.wire import g711

with warnings.catch_warnings():
    # Only a cross-check where G.191 and CPython agree; audioop leaves the stdlib in 3.13.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

STL = Path(__file__).parent / "data" / "g711" / "stl_test_data"
G711_DATA = Path(__file__).parent / "data" / "g711"


def _words(name: str, dtype: str) -> np.ndarray:
    return np.fromfile(STL / name, dtype=dtype)


@pytest.fixture(scope="module")
def sweep() -> np.ndarray:
    values = _words("sweep.src", "<i2")
    assert values.size == 65536
    return values


@pytest.mark.parametrize(("codec", "encoded", "decoded"), [
    ("PCMU", "sweep-r.u", "sweep-r.u-u"),
    ("PCMA", "sweep-r.a", "sweep-r.a-a"),
])
def test_stl_sweep_bit_exact(sweep: np.ndarray, codec: str, encoded: str, decoded: str) -> None:
    reference_codes = _words(encoded, "<u2").astype(np.uint8)
    reference_linear = _words(decoded, "<i2")
    codes = g711.encode(sweep, codec)
    assert codes.dtype == np.uint8
    mismatches = np.flatnonzero(codes != reference_codes)
    assert mismatches.size == 0, f"first mismatch at linear {sweep[mismatches[0]]}"
    np.testing.assert_array_equal(g711.decode(codes, codec), reference_linear)


def test_tsv_tables_match_all_inputs_and_codes() -> None:
    with open(G711_DATA / "linear16_to_g711.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    linear = np.array([int(r["linear16"]) for r in rows], dtype=np.int16)
    ulaw = bytes(int(r["ulaw_hex"], 16) for r in rows)
    alaw = bytes(int(r["alaw_hex"], 16) for r in rows)
    assert len(rows) == 65536
    assert g711.pcm_to_ulaw(linear.astype("<i2").tobytes()) == ulaw
    assert g711.pcm_to_alaw(linear.astype("<i2").tobytes()) == alaw

    with open(G711_DATA / "g711_decode.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    codes = bytes(int(r["code_hex"], 16) for r in rows)
    assert sorted(codes) == list(range(256))
    ulaw_pcm = np.frombuffer(g711.ulaw_to_pcm(codes), dtype="<i2")
    alaw_pcm = np.frombuffer(g711.alaw_to_pcm(codes), dtype="<i2")
    assert ulaw_pcm.tolist() == [int(r["ulaw_to_linear16"]) for r in rows]
    assert alaw_pcm.tolist() == [int(r["alaw_to_linear16"]) for r in rows]


def test_ulaw_decoder_removes_bias() -> None:
    # The seed's bug: without subtracting 0x84 the quietest codes decode to +-132, not 0.
    assert np.frombuffer(g711.ulaw_to_pcm(bytes([0xFF, 0x7F])), "<i2").tolist() == [0, 0]
    assert g711.ulaw_to_pcm(bytes([0x80])) == (32124).to_bytes(2, "little", signed=True)


def test_negative_inputs_use_ones_complement_unlike_audioop() -> None:
    pcm = np.array([-1, -2, -3, -31612], dtype="<i2").tobytes()
    assert g711.pcm_to_ulaw(pcm) == bytes([0x7F, 0x7F, 0x7F, 0x01])
    assert audioop.lin2ulaw(pcm, 2) != g711.pcm_to_ulaw(pcm)  # CPython is not the reference here


def test_agrees_with_audioop_where_it_matches_g191(sweep: np.ndarray) -> None:
    pcm = sweep.astype("<i2").tobytes()
    assert g711.pcm_to_alaw(pcm) == audioop.lin2alaw(pcm, 2)
    codes = bytes(range(256))
    assert g711.ulaw_to_pcm(codes) == audioop.ulaw2lin(codes, 2)
    assert g711.alaw_to_pcm(codes) == audioop.alaw2lin(codes, 2)


def test_batch_forms_keep_shape() -> None:
    rng = np.random.default_rng(7)
    pcm = rng.integers(-32768, 32768, size=(5, 160), dtype=np.int16)
    for codec in ("PCMU", "PCMA"):
        codes = g711.encode(pcm, codec)
        assert codes.shape == (5, 160) and codes.dtype == np.uint8
        decoded = g711.decode(codes, codec)
        assert decoded.shape == (5, 160) and decoded.dtype == np.int16
        # Row i of the batch is exactly the bytes API applied to row i.
        assert codes[3].tobytes() == (g711.pcm_to_ulaw if codec == "PCMU" else g711.pcm_to_alaw)(
            pcm[3].astype("<i2").tobytes())


def test_encode_saturates_wide_input() -> None:
    wide = np.array([40000, -40000, 100], dtype=np.int32)
    expected = g711.encode(np.array([32767, -32768, 100], dtype=np.int16), "PCMU")
    np.testing.assert_array_equal(g711.encode(wide, "PCMU"), expected)


def test_transcode_tables_equal_decode_then_encode() -> None:
    codes = bytes(range(256))
    via_linear_a = g711.pcm_to_alaw(g711.ulaw_to_pcm(codes))
    via_linear_u = g711.pcm_to_ulaw(g711.alaw_to_pcm(codes))
    assert g711.transcode(codes, "PCMU", "PCMA") == via_linear_a
    assert g711.transcode(codes, "pcma", "ulaw") == via_linear_u
    assert g711.transcode(codes, "PCMU", "PCMU") == codes
    assert g711.ULAW_TO_ALAW[0xFF] == g711.ALAW_SILENCE


def test_silence_codes_decode_to_zero() -> None:
    assert g711.ulaw_to_pcm(bytes([g711.ULAW_SILENCE])) == b"\x00\x00"
    assert abs(int(np.frombuffer(g711.alaw_to_pcm(bytes([g711.ALAW_SILENCE])), "<i2")[0])) == 8


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        g711.pcm_to_ulaw(b"\x00\x01\x02")
    with pytest.raises(ValueError):
        g711.decode(np.zeros(3, dtype=np.uint8), "G729")
    with pytest.raises(ValueError):
        g711._ULAW_DECODE[0] = 1  # the shared tables are read-only


@pytest.mark.parametrize(("name", "silence"), [
    ("PCMU", g711.ULAW_SILENCE), ("ulaw", 0xFF), ("g711u", 0xFF), ("mulaw", 0xFF),
    ("PCMA", g711.ALAW_SILENCE), ("alaw", 0xD5), ("a-law", 0xD5), ("g711a", 0xD5),
])
def test_silence_byte_per_law_and_alias(name: str, silence: int) -> None:
    assert g711.silence_byte(name) == silence
    # It is the code a zero sample encodes to in that law.
    assert g711.encode(np.zeros(1, dtype=np.int16), name)[0] == silence


def test_unknown_codec_error_names_it() -> None:
    with pytest.raises(ValueError, match="not a G.711 codec: 'opus'"):
        g711.normalize_codec("opus")
    with pytest.raises(ValueError, match="'G729'"):
        g711.silence_byte("G729")


@pytest.mark.parametrize("samples", [1, 2, 3, 5, 7, 160])
def test_bytes_api_agrees_with_array_api_for_any_length(samples: int) -> None:
    pcm = np.linspace(-30000, 30000, samples).astype(np.int16)
    raw = pcm.astype("<i2").tobytes()
    for law, to_codes, to_pcm in (("PCMU", g711.pcm_to_ulaw, g711.ulaw_to_pcm),
                                  ("PCMA", g711.pcm_to_alaw, g711.alaw_to_pcm)):
        codes = to_codes(raw)
        assert codes == g711.encode(pcm, law).tobytes() and len(codes) == samples
        assert to_pcm(codes) == g711.decode(np.frombuffer(codes, np.uint8), law).astype("<i2").tobytes()
    with pytest.raises(ValueError, match="even number of bytes"):
        g711.pcm_to_alaw(raw + b"\x00")
