"""Caption scores: sacrebleu's corpus BLEU and chrF (as translation reports them) and
CIDEr-D, from the coco-caption scorer (`pycocoevalcap`'s Cider: tf-idf n-gram vectors
with document frequencies over the evaluated references, clipped counts, a Gaussian
length penalty with sigma 6, times 10).

coco-caption tokenises with the Stanford PTB tokenizer, which needs Java; fmctl
tokenises for CIDEr-D itself, simply: lower case, words and numbers kept, punctuation
dropped (as the PTB step drops it). BLEU and chrF keep sacrebleu's own tokenisation.
Every image's references are the captions of the rows that show that image file (one
per row in the icon tables; several where a table repeats an image).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

_WORDS = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def cider_tokens(text: str) -> str:
    """'A status icon: audio-volume high.' -> 'a status icon audio volume high'."""
    return " ".join(_WORDS.findall(text.lower()))


def cider_d(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus CIDEr-D on coco-caption's 0-10 scale (papers often print it times 100): the
    mean over images of each hypothesis's score against its references. References with
    no word at all (punctuation only) give 0 rather than the scorer's empty max()."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    tokenized = [[cider_tokens(r) for r in refs] for refs in references]
    if not hypotheses or not any(r for refs in tokenized for r in refs):
        return 0.0
    scorer = CiderScorer(n=4, sigma=6.0)
    for hypothesis, refs in zip(hypotheses, tokenized, strict=True):
        scorer += (cider_tokens(hypothesis), refs)
    score, _ = scorer.compute_score()
    return float(score)


def caption_scores(hypotheses: list[str], references: list[list[str]], signatures: bool = False) -> dict[str, Any]:
    """BLEU and chrF (0-100, sacrebleu defaults, all references of each image) and CIDEr-D."""
    from sacrebleu.metrics import BLEU, CHRF

    width = max((len(r) for r in references), default=1)
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(width)]
    bleu, chrf = BLEU(), CHRF()
    out: dict[str, Any] = {"bleu": float(bleu.corpus_score(hypotheses, streams).score),
                           "chrf": float(chrf.corpus_score(hypotheses, streams).score),
                           "cider": cider_d(hypotheses, references)}
    if signatures:
        out |= {"bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature()),
                "cider_tokenization": "lower case, punctuation dropped (no PTB tokenizer: it needs Java)"}
    return out


class CaptionMetrics:
    """Generated captions per row (by the batch's `pair` index), scored per distinct image."""

    def __init__(self, rows: list[Any], tokenizer: Any):
        self.rows = rows
        self.tokenizer = tokenizer
        self.hypotheses: dict[int, str] = {}
        self.loss_sum = 0.0
        self.count = 0

    def update(self, outputs: Any, batch: dict[str, Any], loss: Any) -> None:
        from fmctl.data.collate import IGNORE_INDEX

        sequences = getattr(outputs, "sequences", None)
        if sequences is not None:
            texts = decode_captions(self.tokenizer, sequences.tolist())
            for i, text in zip(batch["pair"].cpu().tolist(), texts):
                self.hypotheses[i] = text
        if loss is not None:  # a mean over caption tokens: weighted by them, so batch size does not matter
            n = int((batch["labels"] != IGNORE_INDEX).sum())
            self.loss_sum += float(loss) * n
            self.count += n

    def by_image(self) -> tuple[list[str], list[list[str]]]:
        """One hypothesis per distinct image (its first row's) and all its rows' captions."""
        refs: dict[Path, list[str]] = {}
        first: dict[Path, int] = {}
        for i in sorted(self.hypotheses):
            row = self.rows[i]
            refs.setdefault(row.path, []).append(row.text)
            first.setdefault(row.path, i)
        return [self.hypotheses[first[p]] for p in first], [refs[p] for p in first]

    def _scores(self, signatures: bool = False) -> dict[str, Any]:
        from fmctl.tasks.text_inputs import mean_loss

        scores = caption_scores(*self.by_image(), signatures=signatures) if self.hypotheses else {}
        return scores | mean_loss(self.loss_sum, self.count)

    def compute(self) -> dict[str, float]:
        return self._scores()

    def report(self) -> dict[str, Any]:
        return {**self._scores(signatures=True), "num_examples": len(self.hypotheses)}

    def records(self, rows: list[Any], example_fields: Callable[[Any], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        order = sorted(self.hypotheses)
        if len(order) != len(rows):
            raise RuntimeError(f"{len(order)} captions for {len(rows)} rows")
        for row, i in zip(rows, order):
            yield {**example_fields(row), "target": row.text, "prediction": self.hypotheses[i]}

    def write_files(self, folder: Path, report: dict[str, Any]) -> None:
        return None

    def tables(self, report: dict[str, Any]) -> list[Any]:
        return []


def decode_captions(tokenizer: Any, sequences: list[list[int]]) -> list[str]:
    """Generated ids (start token already dropped) as text: cut at the first end token."""
    eos = tokenizer.eos_token_id
    cut = [row[: row.index(eos)] if eos in row else row for row in sequences]
    texts = tokenizer.batch_decode(cut, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return [t.strip() for t in texts]
