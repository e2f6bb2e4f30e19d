"""python -m fewbit_design: the command line (cli step), as the fewbit-design script."""
from .cli import run

run()
