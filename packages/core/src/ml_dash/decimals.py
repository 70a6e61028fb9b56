"""JSON number tokens decoded to float64 in whole-array numpy passes, without a Python object per number.

``decode_field(buf, starts, ends)`` decodes the tokens of one field of many lines: the common shapes a float's
``repr`` (and orjson) writes for a training metric, ``-?D+`` and ``-?D{q}.D+``, where the integer part has the
same length ``q`` in every token (``0.8444218515250481``, ``1700000000.01``, ``-0.5``, ``12``). It returns the
values and which tokens it decoded; every other token (another integer-part length, an exponent, more than 19
digits, ``NaN``, ``true``, spaces, anything invalid) is left to the caller's JSON parser, as is the rare token
whose correct rounding it cannot prove.

How: the fraction's digits are read right-aligned in a 24-byte row ending at the token's end (one gather), the
integer part left-aligned in a word at its start (another); the digits are checked and turned into integers 8 at a
time with multiply-and-shift steps (SWAR) on 64-bit words. The value is then exact: the mantissa ``m < 2**64`` is
exact in the x87 80-bit ``long double`` (64 mantissa bits), and so is ``10**k`` for ``k <= 27``; one division rounds
``m / 10**k`` correctly to 64 bits, and rounding that to float64 gives the correctly rounded double unless the
64-bit result lies exactly halfway between two doubles (its low 11 bits ``0b10000000000``): those tokens, about
one in 2,048, go to the caller. A field whose every mantissa is below ``2**53`` and every ``k <= 22`` (a step, a
timestamp, a short decimal) takes one float64 division of exact operands instead, correctly rounded by IEEE 754;
where ``long double`` is not the x87 format, only such tokens are decoded.
"""

from __future__ import annotations

import numpy as np

ROW = 24  # the fraction (or a whole integer) is read right-aligned in a row this wide: up to 24 digits
MAX_INT = 8  # digits per 64-bit word; integer parts of up to two words are handled

_U = np.uint64
_X30 = _U(0x3030303030303030)
_H80 = _U(0x8080808080808080)
_L7F = _U(0x7F7F7F7F7F7F7F7F)
_ADD = _U(0x7676767676767676)
_M8, _M16, _M32 = _U(0x00FF00FF00FF00FF), _U(0x0000FFFF0000FFFF), _U(0x00000000FFFFFFFF)
_ONES = _U(0xFFFFFFFFFFFFFFFF)


def _extended() -> bool:
    """Whether long double is the x87 80-bit format rounding to a 64-bit mantissa (as on x86-64 Linux)."""
    try:
        if np.finfo(np.longdouble).nmant != 63 or np.dtype(np.longdouble).itemsize not in (12, 16):
            return False
        big = np.array([2**63 + 1], dtype=np.uint64).astype(np.longdouble)
        if int(big.astype(np.uint64)[0]) != 2**63 + 1:
            return False
        third = np.array([1], dtype=np.longdouble) / np.array([3], dtype=np.longdouble)
        return int(np.ascontiguousarray(third).view(np.uint64)[0]) == 0xAAAAAAAAAAAAAAAB
    except (TypeError, ValueError, OverflowError):  # pragma: no cover - exotic platforms
        return False


EXTENDED = _extended()
_P10_LD = np.ones(ROW + 1, dtype=np.longdouble)
for _k in range(1, ROW + 1):
    _P10_LD[_k] = _P10_LD[_k - 1] * 10  # exact where EXTENDED: 10**24 = 5**24 * 2**24 and 5**24 < 2**64
_P10_F = np.array([10.0**k for k in range(ROW + 1)])
_P10_U = np.array([10**k if k < 20 else 0 for k in range(ROW + 1)], dtype=np.uint64)


def _nondigits(x: np.ndarray) -> np.ndarray:
    """``x``: bytes XOR '0' in 64-bit words; the high bit of each byte that was not a digit."""
    out: np.ndarray = (((x & _L7F) + _ADD) | x) & _H80
    return out


def _swar(v: np.ndarray) -> np.ndarray:
    """Words of 8 digit values (0..9, the most significant in the low byte) -> their integers, in place."""
    v *= _U(10 * 256 + 1)  # each byte pair: first * 10 + second, in the second's byte
    v >>= _U(8)
    v &= _M8
    v *= _U(100 * 65536 + 1)
    v >>= _U(16)
    v &= _M16
    v *= _U(10000 * (1 << 32) + 1)
    v >>= _U(32)
    return v


def _keep_rows(width: int) -> np.ndarray:
    """Row k: 0xFF over the last k bytes of a ``width``-byte row (the k digits read right-aligned)."""
    t = np.zeros((ROW + 1, width), dtype=np.uint8)
    for k in range(ROW + 1):
        t[k, max(0, width - k) :] = 0xFF
    return t.view("<u8")  # (ROW + 1, width // 8) words: rows taken with np.take (faster than void items)


_KEEP = {w: _keep_rows(w) for w in (8, 16, ROW)}  # rows as wide as the longest token of a field needs


def decode_field(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, ok) for the tokens ``buf[starts[i]:ends[i]]`` of one field (``buf`` uint8 with at least 24 bytes
    before the first token and 8 after the last start; int64 positions); ``values[i]`` is meaningful where
    ``ok[i]``. None when the first token has no shape handled here (the caller decodes the field itself)."""
    n = len(ends)
    if not n:
        return np.zeros(0), np.zeros(0, dtype=bool)
    neg = buf[starts] == 45
    signed = bool(neg.any())
    s = starts + neg if signed else starts
    first = bytes(buf[int(s[0]) : int(ends[0])])
    q = first.find(b".")
    if q < 0:
        q = 0  # an integer: the whole token is read like a fraction (with no dot)
    elif not 1 <= q <= 2 * MAX_INT:
        return None
    k = ends - s
    if q:
        k -= q + 1  # digits read right-aligned: the fraction, or the whole integer
    ok = (k >= 1) & (k <= ROW)
    ku = np.minimum(k.astype(np.uint64), _U(ROW))  # (a negative k wraps to a large one)
    longest = int(ku.max())
    width = 8 if longest <= 8 else 16 if longest <= 16 else ROW  # (a row narrower than ROW: fewer words)
    # the row of ``width`` bytes ending at each token's end: its last k bytes must be digits
    win = np.ndarray(shape=(len(buf) - width + 1,), dtype=np.dtype(f"V{width}"), buffer=buf, strides=(1,))
    x = win[ends - width].view("<u8").reshape(n, width // 8)
    x ^= _X30
    x &= np.take(_KEEP[width], ku.astype(np.intp), axis=0)
    flags = _nondigits(x)
    if width == 8:
        ok &= flags[:, 0] == 0
        mant = _swar(x[:, 0])
    elif width == 16:
        ok &= (flags[:, 0] | flags[:, 1]) == 0
        _swar(x)
        mant = x[:, 0] * _U(10**8) + x[:, 1]
    else:
        ok &= (flags[:, 0] | flags[:, 1] | flags[:, 2]) == 0
        _swar(x)
        ok &= x[:, 0] <= _U(1843)  # below 2**64
        mant = (x[:, 0] * _U(10**8) + x[:, 1]) * _U(10**8) + x[:, 2]
    if q:
        ok &= buf[s + q] == 46  # the dot where the fraction starts
        if q == 1:
            ip = buf[s] - np.uint8(48)
            ok &= ip < 10
            ip = ip.astype(np.uint64)
        else:
            words = np.ndarray(shape=(len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
            hi = words[s] ^ _X30
            ok &= (buf[s] != 48)  # no leading zero
            if q <= MAX_INT:
                hi <<= _U(8 * (8 - q))  # right-aligned in its word (what follows shifted out)
                ok &= _nondigits(hi) == 0
                ip = _swar(hi)
            else:
                lo = (words[s + 8] ^ _X30) << _U(8 * (16 - q))
                ok &= (_nondigits(hi) | _nondigits(lo)) == 0
                ip = _swar(hi) * _U(10 ** (q - 8)) + _swar(lo)
        ok &= (ip == 0) | (ku + _U(q) <= _U(19))  # the mantissa stays below 10**19
        mant += ip * _P10_U[ku.astype(np.intp)]
        scale = ku.astype(np.intp)
    else:
        ok &= (buf[s] != 48) | (k == 1)  # no leading zero
        scale = None
    if int(mant.max()) < 1 << 53 and (scale is None or longest <= 22):
        # every mantissa and power of ten exact in a double: one correctly rounded division (IEEE 754), no x87
        out = mant.astype(np.float64)
        if scale is not None:
            out /= _P10_F[scale]
    elif EXTENDED:
        x87 = mant.astype(np.longdouble)
        if scale is not None:
            x87 /= _P10_LD[scale]
        bits = x87.view(np.uint64).reshape(n, -1)[:, 0]
        ok &= (bits & _U(0x7FF)) != _U(0x400)  # halfway between two doubles: leave it to the caller
        out = x87.astype(np.float64)
    else:
        ok &= mant < _U(1 << 53)
        out = mant.astype(np.float64)
        if scale is not None:
            ok &= scale <= 22
            out /= _P10_F[np.minimum(scale, 22)]
    if signed:  # a minus sign: negative; "-0" is the integer 0, "-0.0" the float -0.0
        np.negative(out, out=out, where=neg & ((mant != 0) | (q > 0)))
    return out, ok
