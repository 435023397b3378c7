"""Judges: what scores the feedback documents. This package holds the array-level oracles."""

from __future__ import annotations

from refine_core.judges.oracle import noisy_oracle_scores, oracle_scores

__all__ = ["noisy_oracle_scores", "oracle_scores"]
