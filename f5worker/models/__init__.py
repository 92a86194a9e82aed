"""The model store: where a model directory comes from and how it is kept whole."""
