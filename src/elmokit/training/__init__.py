"""Pre-training the biLM: data streaming and batching."""
