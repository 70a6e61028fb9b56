"""The vectorised decoder of number tokens (`ml_dash.decimals`) against orjson, bit for bit: every token it says
it decoded must give exactly the double orjson (the column parser's reference) gives, sign of zero included."""

from __future__ import annotations

import random
import struct

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ml_dash import decimals


def run(tokens: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """decode_field over the tokens laid out as one field of many lines (each after a key, before a ',')."""
    buf = bytearray(b" " * 40)
    starts, ends = [], []
    for t in tokens:
        buf += b'"x":'
        starts.append(len(buf))
        buf += t
        ends.append(len(buf))
        buf += b',"y":1}\n{'
    buf += b" " * 40
    got = decimals.decode_field(np.frombuffer(bytes(buf), np.uint8), np.array(starts), np.array(ends))
    if got is None:
        return np.zeros(len(tokens)), np.zeros(len(tokens), dtype=bool)
    return got


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def check(tokens: list[bytes]) -> np.ndarray:
    values, ok = run(tokens)
    for t, v, o in zip(tokens, values, ok, strict=True):
        if not o:
            continue
        ref = orjson.loads(t)  # raises for a token that is not JSON: it must not have been decoded
        assert isinstance(ref, (int, float)) and not isinstance(ref, bool), t
        assert bits(float(ref)) == bits(float(v)), (t, float(v), float(ref))
    return ok


def test_hand_written_forms() -> None:
    same_shape = {
        0: [b"0", b"-0", b"7", b"10", b"-10", b"123456789", b"9999999999999999999", b"18446744073709551615",
            b"9007199254740993", b"1234567890123456789", b"12345678901234567890"],
        1: [b"0.0", b"-0.0", b"0.1", b"0.5", b"1.5", b"-1.5", b"9.999999999999999", b"0.30000000000000004",
            b"5.0", b"0.000420571580830845", b"0.00042057158083084503", b"2.2250738585072014"],
        10: [b"1700000000.01", b"1700000000.0", b"-1700000000.5", b"1234567890.123456"],
        16: [b"1234567890123456.5"],
    }
    for q, toks in same_shape.items():
        ok = check(toks)
        assert ok.mean() > 0.5, (q, ok)
    # forms it leaves to the JSON parser, in a field of the shape it reads
    odd = [b"01", b"1.", b".5", b"-", b"1.2.3", b"--1", b"1-", b"00", b"-01.5", b"1e5", b"1E-7", b" 1", b"1 ",
           b"NaN", b"Infinity", b"-Infinity", b"true", b"null", b"0.5e3", b"123456789012345678901", b"0x10",
           b"+1", b"1.5.", b"1,5"]
    for t in odd:
        for shape in (b"7", b"0.5"):
            ok = check([shape] * 3 + [t])
            assert ok[:3].all() and not ok[3], (shape, t)


def test_random_doubles_bit_exact() -> None:
    rng = random.Random(5)
    toks: list[bytes] = []
    toks += [repr(rng.random()).encode() for _ in range(20000)]
    toks += [repr(rng.random() * 1e-3).encode() for _ in range(20000)]
    toks += [repr(-rng.random()).encode() for _ in range(5000)]
    toks += [repr(1.7e9 + rng.random() * 1e6).encode() for _ in range(20000)]
    toks += [str(rng.randrange(0, 10**19)).encode() for _ in range(5000)]
    toks += [repr(struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]).encode() for _ in range(20000)]
    rng.shuffle(toks)
    taken = 0
    for i in range(0, len(toks), 997):  # fields of mixed shapes: each decodes the tokens of its first's shape
        taken += int(check(toks[i : i + 997]).sum())
    assert taken > len(toks) // 5


def test_near_halfway_tokens() -> None:
    """19-digit decimals within 10**-19 of the midpoint between two neighbouring doubles (where a second rounding
    could go wrong): every token decoded agrees with orjson."""
    from decimal import Decimal, getcontext

    getcontext().prec = 60
    rng = random.Random(2)
    toks = []
    for _ in range(3000):
        x = rng.random() * 0.9 + 0.1
        mid = (Decimal(x) + Decimal(float(np.nextafter(x, 2.0)))) / 2
        toks.append(format(mid, "f")[:20].encode())  # "0." and 18 digits: below or at the midpoint
        toks.append(format(mid + Decimal(10) ** -18, "f")[:20].encode())  # just above it
    check(toks)


@pytest.mark.skipif(not decimals.EXTENDED, reason="long double is not the x87 80-bit format here")
def test_extended_precision_detected() -> None:
    assert np.finfo(np.longdouble).nmant == 63


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=40),
       st.sampled_from(["repr", "orjson"]))
def test_any_double_bit_exact(xs: list[float], writer: str) -> None:
    toks = [repr(x).encode() if writer == "repr" else orjson.dumps(x) for x in xs]
    check(toks)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.from_regex(rb"\A-?[0-9]{1,12}(\.[0-9]{1,12})?\Z"), min_size=1, max_size=30))
def test_any_plain_decimal_bit_exact(toks: list[bytes]) -> None:
    check(toks)


@pytest.mark.parametrize("digits", [(1, 8), (9, 16), (17, 19)])
def test_fields_of_short_and_long_tokens(digits: tuple[int, int]) -> None:
    """A field is read in rows as wide as its longest token needs (8, 16 or 24 bytes): each width decodes every
    well-formed token of its lengths, and still leaves what it cannot read (a non-digit at either edge)."""
    rng = random.Random(digits[0])
    lo, hi = digits
    fraction = [b"0." + bytes(rng.choice(b"0123456789") for _ in range(rng.randint(lo, hi))) for _ in range(3000)]
    whole = [bytes([rng.choice(b"123456789")]) + bytes(rng.choice(b"0123456789") for _ in range(rng.randint(lo, hi) - 1))
             for _ in range(3000)]
    for toks in (fraction, whole):
        ok = check(toks)  # (integers above 2**53 on a midpoint between two doubles, 6 % of these, go to orjson)
        assert ok.mean() > (0.99 if toks is fraction or hi < 17 else 0.9), (digits, ok.mean())
        bad = list(toks[:50]) + [toks[0][:-1] + b"x", b"x" + toks[1][1:], toks[2] + b" "]
        ok = check(bad)
        assert ok[:50].mean() > 0.9 and not ok[50:].any()
