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
