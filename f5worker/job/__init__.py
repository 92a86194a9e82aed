"""The job path: one request from JSON input to result items, and its RunPod adapter."""
