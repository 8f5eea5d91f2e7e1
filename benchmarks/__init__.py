"""meshgen benchmarks: ``python benchmarks/run.py`` (full) or ``--smoke`` (tiny sizes, no thresholds)."""
