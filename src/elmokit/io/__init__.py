"""Reading, writing and fetching ELMo model files (options.json + weights.hdf5)."""
