import os
import shutil

# Triton kernels (fewbit_design.torch) run in the interpreter on machines without a GPU;
# where there is one they are compiled (set TRITON_INTERPRET=1 yourself to force the interpreter).
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")
