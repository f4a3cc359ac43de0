"""Evaluation: every metric is a plain function of tensors / arrays (no Lightning), plus the
``evaluate`` driver behind ``vaezoo evaluate`` and ``vaezoo benchmark``."""
