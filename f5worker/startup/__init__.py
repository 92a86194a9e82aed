"""Start-up: the timeline of the image's CMD, the diagnostics report, flash-attn."""
