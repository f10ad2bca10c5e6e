"""Benchmarks of mixtral_edu: speed against transformers 4.41.2, the cost of seeing inside,
MoE dispatch, the KV cache, notebook and docs build times, and memory.

One command runs them all and writes results.md, results.json and plots:

    python -m benchmarks.run            # full run (~10 min on a quiet 2-core machine)
    python -m benchmarks.run --quick    # tiny sizes, seconds (what the smoke test runs)

See benchmarks/README.md for what each benchmark measures and how.
"""
