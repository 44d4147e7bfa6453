"""litbench harness: specs, runner, launcher and CLI (`litbench`, `python -m benchmarks`).

Importing it changes nothing in the process; ``benchmarks.process.configure_process`` does what
the command line needs before torch loads.
"""
