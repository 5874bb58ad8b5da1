"""The part of AllenNLP's data API that ELMo code uses to make its inputs: `Token`, `TextField`,
`Instance`, `Vocabulary`, `Batch`, `ELMoTokenCharactersIndexer`, `SingleIdTokenIndexer`,
`AllennlpDataset` and `PyTorchDataLoader`, with AllenNLP 2.x's tensor layout:
`batch.as_tensor_dict()["field"]["indexer name"]["elmo_tokens" | "tokens"]`.

Enough for code that indexes sentences for ELMo the AllenNLP way to keep running; not a
general replacement for AllenNLP's data pipeline (no other fields, readers or samplers).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from elmokit.chars import MAX_CHARS_PER_TOKEN, token_to_char_ids

PADDING_TOKEN = "@@PADDING@@"
OOV_TOKEN = "@@UNKNOWN@@"


@dataclass(frozen=True)
class Token:
    text: str


class TokenIndexer(Protocol):
    namespace: str | None

    def tokens_to_indices(
        self, tokens: Sequence[Token], vocabulary: Vocabulary
    ) -> dict[str, Any]: ...

    def as_padded_tensor_dict(
        self, tokens: dict[str, Any], padding_lengths: dict[str, int]
    ) -> dict[str, torch.Tensor]: ...


class ELMoTokenCharactersIndexer:
    """Each token as its 50 ELMo character ids (elmokit.chars; the same ids as AllenNLP's)."""

    namespace: str | None = None

    def __init__(self, namespace: str = "elmo_characters", tokens_to_add: Any = None) -> None:
        if tokens_to_add:
            raise ValueError("tokens_to_add is not supported by elmokit's ELMo indexer")

    def tokens_to_indices(
        self, tokens: Sequence[Token], vocabulary: Vocabulary
    ) -> dict[str, list[list[int]]]:
        return {"elmo_tokens": [list(token_to_char_ids(token.text)) for token in tokens]}

    def as_padded_tensor_dict(
        self, tokens: dict[str, Any], padding_lengths: dict[str, int]
    ) -> dict[str, torch.Tensor]:
        rows = tokens["elmo_tokens"]
        padded = torch.zeros(padding_lengths["elmo_tokens"], MAX_CHARS_PER_TOKEN, dtype=torch.long)
        if rows:
            padded[: len(rows)] = torch.tensor(rows[: padded.shape[0]], dtype=torch.long)
        return {"elmo_tokens": padded}


class SingleIdTokenIndexer:
    """Each token as its id in a vocabulary namespace (padding 0, unknown 1)."""

    def __init__(self, namespace: str = "tokens", lowercase_tokens: bool = False) -> None:
        self.namespace: str | None = namespace
        self.lowercase_tokens = lowercase_tokens

    def text(self, token: Token) -> str:
        return token.text.lower() if self.lowercase_tokens else token.text

    def tokens_to_indices(
        self, tokens: Sequence[Token], vocabulary: Vocabulary
    ) -> dict[str, list[int]]:
        namespace = self.namespace or "tokens"
        return {"tokens": [vocabulary.get_token_index(self.text(t), namespace) for t in tokens]}

    def as_padded_tensor_dict(
        self, tokens: dict[str, Any], padding_lengths: dict[str, int]
    ) -> dict[str, torch.Tensor]:
        padded = torch.zeros(padding_lengths["tokens"], dtype=torch.long)
        padded[: len(tokens["tokens"])] = torch.tensor(tokens["tokens"], dtype=torch.long)
        return {"tokens": padded}


class Vocabulary:
    """Namespaced token <-> id maps; "tokens"-like namespaces start with padding and OOV."""

    def __init__(self) -> None:
        self._token_to_index: dict[str, dict[str, int]] = {}

    @classmethod
    def from_instances(cls, instances: Iterable[Instance]) -> Vocabulary:
        counts: dict[str, Counter[str]] = {}
        for instance in instances:
            for field in instance.fields.values():
                for indexer in field.token_indexers.values():
                    if isinstance(indexer, SingleIdTokenIndexer) and indexer.namespace:
                        counter = counts.setdefault(indexer.namespace, Counter())
                        counter.update(indexer.text(token) for token in field.tokens)
        vocabulary = cls()
        for namespace, counter in counts.items():
            table = vocabulary._namespace(namespace)
            for token, _ in sorted(counter.items(), key=lambda item: item[1], reverse=True):
                table.setdefault(token, len(table))
        return vocabulary

    def _namespace(self, namespace: str) -> dict[str, int]:
        if namespace not in self._token_to_index:
            self._token_to_index[namespace] = {PADDING_TOKEN: 0, OOV_TOKEN: 1}
        return self._token_to_index[namespace]

    def get_token_to_index_vocabulary(self, namespace: str = "tokens") -> dict[str, int]:
        return dict(self._namespace(namespace))

    def get_token_index(self, token: str, namespace: str = "tokens") -> int:
        table = self._namespace(namespace)
        return table.get(token, table[OOV_TOKEN])

    def get_vocab_size(self, namespace: str = "tokens") -> int:
        return len(self._namespace(namespace))


class TextField:
    def __init__(self, tokens: Sequence[Token], token_indexers: dict[str, Any]) -> None:
        for token in tokens:
            if not isinstance(token, Token):
                raise TypeError(f"TextField takes Token objects, got {type(token).__name__}")
        self.tokens = list(tokens)
        self.token_indexers = token_indexers
        self._indexed: dict[str, dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def index(self, vocabulary: Vocabulary) -> None:
        self._indexed = {
            name: indexer.tokens_to_indices(self.tokens, vocabulary)
            for name, indexer in self.token_indexers.items()
        }

    def as_tensor(self, length: int) -> dict[str, dict[str, torch.Tensor]]:
        if self._indexed is None:
            raise ValueError("index the field first (Batch.index_instances or AllennlpDataset)")
        return {
            name: indexer.as_padded_tensor_dict(
                self._indexed[name], {"elmo_tokens": length, "tokens": length}
            )
            for name, indexer in self.token_indexers.items()
        }


class Instance:
    def __init__(self, fields: dict[str, TextField]) -> None:
        self.fields = fields

    def index_fields(self, vocabulary: Vocabulary) -> None:
        for field in self.fields.values():
            field.index(vocabulary)


class Batch:
    """Instances indexed and padded together: as_tensor_dict() -> {field: {indexer: {key:
    tensor [B, T, ...]}}}."""

    def __init__(self, instances: Iterable[Instance]) -> None:
        self.instances = list(instances)

    def index_instances(self, vocabulary: Vocabulary) -> None:
        for instance in self.instances:
            instance.index_fields(vocabulary)

    def as_tensor_dict(self) -> dict[str, dict[str, dict[str, torch.Tensor]]]:
        if not self.instances:
            return {}
        out: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
        for name in self.instances[0].fields:
            length = max(len(instance.fields[name]) for instance in self.instances)
            per_instance = [instance.fields[name].as_tensor(length) for instance in self.instances]
            out[name] = {
                indexer: {
                    key: torch.stack([tensors[indexer][key] for tensors in per_instance])
                    for key in per_instance[0][indexer]
                }
                for indexer in per_instance[0]
            }
        return out


class AllennlpDataset(Sequence[Instance]):
    """A list of instances, indexed with `vocab` when one is given (AllenNLP 1.x / 2.x)."""

    def __init__(self, instances: Sequence[Instance], vocab: Vocabulary | None = None) -> None:
        self.instances = list(instances)
        self.vocab = vocab
        if vocab is not None:
            self.index_with(vocab)

    def index_with(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        for instance in self.instances:
            instance.index_fields(vocab)

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, index: Any) -> Any:
        return self.instances[index]


class PyTorchDataLoader:
    """Batches of `batch_size` instances, in order, as Batch.as_tensor_dict()."""

    def __init__(self, dataset: AllennlpDataset, batch_size: int = 1, **_: Any) -> None:
        self.dataset = dataset
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, dict[str, dict[str, torch.Tensor]]]]:
        instances = self.dataset.instances
        for start in range(0, len(instances), self.batch_size):
            yield Batch(instances[start : start + self.batch_size]).as_tensor_dict()
