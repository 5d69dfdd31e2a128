"""
The benchmark suite: the relay against real baselines, measured in the same run on the same machine.

Run it with C{python -m benchmarks} (see C{docs/benchmarks.md}); nothing here is imported by the gateway.
"""
