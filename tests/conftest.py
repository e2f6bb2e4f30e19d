import os

# Triton kernels (fewbit_design.torch) run in the interpreter on machines without a GPU.
os.environ.setdefault("TRITON_INTERPRET", "1")
