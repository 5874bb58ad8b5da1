"""elmokit inside other libraries' pipelines: spaCy (`spacy.py`)."""
