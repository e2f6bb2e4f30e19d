"""Runtime behaviour found unguarded by mutation testing (tools/mutation.sh)."""

import pytest

torch = pytest.importorskip("torch")

from fewbit_design.torch.packing import pack_codes, unpack_codes  # noqa: E402


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
