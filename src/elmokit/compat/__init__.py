"""Compatibility with the code ELMo users have: AllenNLP's names and state dicts (allennlp.py,
state_dict.py). docs/migrating.md shows the import changes."""
