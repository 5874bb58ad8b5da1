"""The task names, without importing the suite (torch, the heads): the command line builds its
help from these. tasks/suite.py checks at import that its registry has exactly these names."""

TASK_NAMES = (
    "ner",
    "wnut17",
    "chunk",
    "sst5",
    "sst2",
    "mr",
    "subj",
    "sick",
    "rte",
    "qa",
    "wsd",
    "pos",
    "pos_brown",
)
DEFAULT_TASKS = ("ner", "sst5", "sick", "wsd", "pos")
