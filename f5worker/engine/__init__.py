"""The engine: the only torch / f5-tts user (load, sample, batch, one torch thread)."""
