"""The benchmark scripts (run each as ``python benchmarks/NAME.py``) and what they share."""
