"""tumorscope: one shared encoder that finds, outlines and predicts the outcome of a tumour.

Research software. Not a diagnostic device.
"""

from __future__ import annotations

__version__ = "0.2.0"
DISCLAIMER = (
    "Research use only. tumorscope is not a medical device and must not be used for diagnosis."
)
