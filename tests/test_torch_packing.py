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


# ==================================================================================================
# Claims. Runtime behaviour found unguarded by mutation testing (tools/mutation.sh).
# ==================================================================================================


@pytest.mark.parametrize("bits", [True, False, 0, 9, 2.0, "3", None])
def test_mutant_packing_refuses_bits_that_are_not_an_int_in_1_to_8(bits):
    codes = torch.zeros(16, dtype=torch.uint8)
    msg = f"^bits must be an integer in 1..8, got {bits!r}$".replace(".", r"\.").replace("(", r"\(")
    with pytest.raises(ValueError, match=msg):
        pack_codes(codes, bits)
    with pytest.raises(ValueError, match=msg):
        unpack_codes(torch.zeros(2, dtype=torch.uint8), bits, 16)


def _naive_pack(codes, bits):
    """Bit p of code j goes to bit j % 8 of byte j // 8 in plane p (the module docstring)."""
    n = codes.numel()
    nbytes = (n + 7) // 8
    out = torch.zeros(bits, nbytes, dtype=torch.uint8)
    for j, c in enumerate(codes.tolist()):
        for p in range(bits):
            out[p, j // 8] |= ((c >> p) & 1) << (j % 8)
    return out.view(-1)


@pytest.mark.parametrize("offset", range(0, 18))
def test_mutant_packing_a_view_at_any_storage_offset(offset):
    # a slice starting at any byte: the int64 view needs 8-byte alignment, so it is copied first
    base = torch.randint(0, 8, (offset + 77,), dtype=torch.uint8, generator=torch.Generator().manual_seed(offset))
    codes = base[offset:offset + 64 + offset % 9]
    assert codes.storage_offset() == offset
    torch.testing.assert_close(pack_codes(codes, 3), _naive_pack(codes, 3), rtol=0, atol=0)


def test_mutant_packing_stays_on_the_input_device():
    # "on the same device": the meta device stands in for CUDA on a CPU-only machine
    codes = torch.zeros(64, dtype=torch.uint8, device="meta")
    assert pack_codes(codes, 3).device.type == "meta"
    assert unpack_codes(torch.zeros(24, dtype=torch.uint8, device="meta"), 3, 64).device.type == "meta"


def test_mutant_unpack_names_the_expected_size():
    with pytest.raises(ValueError, match=r"^packed must be 6 uint8 bytes for n=16, bits=3; got 5 torch\.uint8$"):
        unpack_codes(torch.zeros(5, dtype=torch.uint8), 3, 16)
