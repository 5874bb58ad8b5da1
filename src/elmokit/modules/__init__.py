"""Building blocks of the biLM and of ELMo feature mixing."""
