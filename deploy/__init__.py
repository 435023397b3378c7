"""The team deployment: compose's topology rehearsed natively (``python deploy/rehearse.py``)."""
