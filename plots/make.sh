#!/bin/sh
# Regenerate the README figures (from the repository root, after the shipped tables):
#
#     sh plots/make.sh
#
# Uses the installed `fewbit-design`, or `python -m fewbit_design` from a checkout.
set -e
if command -v fewbit-design >/dev/null 2>&1; then FB=fewbit-design; else FB="python -m fewbit_design"; fi

$FB plot error gelu silu tanh sigmoid elu --bits 1-8 -o plots/error_vs_bits.png
$FB plot error relu6 hardtanh hardswish leaky_relu --bits 1-8 -o plots/error_vs_bits_piecewise.png
$FB plot error gelu -d normal:0,1 -d uniform:-10,10 --bits 1-8 -o plots/gelu_error_by_distribution.png
$FB plot table tables/normal_0_1/gelu-3bit-auto.json -o plots/gelu_3bit.png
$FB plot table tables/normal_0_1/tanh-2bit-auto.json -o plots/tanh_2bit.png
