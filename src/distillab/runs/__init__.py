"""The commands' runs, one module per family: each run function wires the concepts together (data, models, kd,
condense, evaluation) over one skeleton (``run.Run``: clock, reporter, recorded call, output folder, metrics, last
line). ``distillab.api`` is their public face."""
