"""Downstream tasks on a frozen biLM: the ELMo paper's evaluations at small scale.

Modules:
- `data`: readers for the task data sets (CoNLL-2003, WNUT-17, CoNLL-2000, SST, MR, SUBJ,
  SICK, RTE, SQuAD/XQuAD, Raganato WSD, SemCor, WordNet, PTB and Brown POS);
- `features`: the HDF5 feature cache (every biLM layer per sentence) and word2vec baseline;
- `common`: representations ("elmo" mix, "layer0", "top", "word2vec"), training loop;
- heads: `tagger` (BiLSTM-CRF), `classifier` (BiLSTM + pooling), `pair` (ESIM-style),
  `qa` (small BiDAF), `wsd` (nearest sense centroid), `probe` (linear POS probe);
- `suite`: task registry, data splits, running heads over representations and seeds;
- `report`: Markdown table and plots.

The command line is `elmokit task train|evaluate|report` (docs/tasks.md).
"""
