"""Speed, memory and convergence benchmarks, run from the repository root as modules:

    python -m benchmarks.memory_models --models bert-base --layers 1 --repeat 1 --batch 2 --seq 32
    python -m benchmarks.convergence --quick

A package, so that its modules never shadow an installed one (transformers imports the PyPI
package ``kernels``; a script folder on ``sys.path`` with a kernels.py broke it).
"""
