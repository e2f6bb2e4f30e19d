"""Bit-plane packing: the documented layout byte for byte, round trips, sizes."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fewbit_design.torch.packing import pack_codes, packed_nbytes, unpack_codes  # noqa: E402

SIZES = [0, 1, 7, 8, 9, 341, 1023]


def naive_pack(codes, bits):
    """The layout as written in the docstring, one bit at a time."""
    n = len(codes)
    nbytes = (n + 7) // 8
    out = np.zeros(bits * nbytes, dtype=np.uint8)
    for i, c in enumerate(codes):
        for p in range(bits):
            if (int(c) >> p) & 1:
                out[p * nbytes + i // 8] |= 1 << (i % 8)
    return out


def test_docstring_example_byte_for_byte():
    codes = torch.tensor([5, 3, 0, 7, 1, 6, 2, 4, 6], dtype=torch.uint8)
    packed = pack_codes(codes, 3)
    assert packed.tolist() == [0x1B, 0x00, 0x6A, 0x01, 0xA9, 0x01]
    assert unpack_codes(packed, 3, 9).tolist() == codes.tolist()


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", SIZES)
def test_round_trip_and_layout(bits, n):
    gen = torch.Generator().manual_seed(1000 * bits + n)
    codes = torch.randint(0, 2 ** bits, (n,), generator=gen, dtype=torch.int64).to(torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.is_contiguous()
    assert packed.numel() == packed_nbytes(n, bits) == bits * math.ceil(n / 8)
    assert packed.numel() <= math.ceil(n * bits / 8) + 7
    np.testing.assert_array_equal(packed.numpy(), naive_pack(codes.numpy(), bits))
    back = unpack_codes(packed, bits, n)
    torch.testing.assert_close(back, codes, rtol=0, atol=0)


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_any_shape_is_read_row_major_and_high_bits_ignored(bits):
    codes = torch.arange(60, dtype=torch.uint8).view(3, 4, 5)
    packed = pack_codes(codes, bits)
    want = (codes.reshape(-1) & (2 ** bits - 1))
    torch.testing.assert_close(unpack_codes(packed, bits, 60), want, rtol=0, atol=0)
    # a non-contiguous view packs its logical (row-major) order
    t = codes.transpose(0, 2)
    torch.testing.assert_close(unpack_codes(pack_codes(t, bits), bits, 60),
                               t.reshape(-1) & (2 ** bits - 1), rtol=0, atol=0)


def test_bad_input():
    with pytest.raises(ValueError, match="bits"):
        pack_codes(torch.zeros(3, dtype=torch.uint8), 9)
    with pytest.raises(ValueError, match="bits"):
        pack_codes(torch.zeros(3, dtype=torch.uint8), 0)
    with pytest.raises(TypeError, match="uint8"):
        pack_codes(torch.zeros(3, dtype=torch.int32), 2)
    with pytest.raises(ValueError, match="bytes"):
        unpack_codes(torch.zeros(5, dtype=torch.uint8), 2, 9)
