"""Translation metrics: corpus BLEU and chrF of the generated targets against the
references (sacrebleu, its default settings), and the teacher-forced loss weighted by
target tokens; hypotheses are decoded with the tokenizer the targets are written with."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from fmctl.data.collate import IGNORE_INDEX
from fmctl.data.pairs import PairRow
from fmctl.tasks.text_inputs import mean_loss


@dataclass
class Generated:
    """An evaluation batch's outputs: logits for the loss, generated token ids for BLEU."""

    logits: Any
    sequences: Any


class TranslationMetrics:
    def __init__(self, pairs: list[PairRow], tokenizer: Any):
        self.pairs = pairs
        self.tokenizer = tokenizer
        self.hypotheses: dict[int, str] = {}
        self.loss_sum = 0.0
        self.count = 0

    def update(self, outputs: Any, batch: dict[str, Any], loss: Any) -> None:
        if isinstance(outputs, Generated):
            texts = self.tokenizer.batch_decode(outputs.sequences, skip_special_tokens=True,
                                                clean_up_tokenization_spaces=False)
            for i, text in zip(batch["pair"].cpu().tolist(), texts):
                self.hypotheses[i] = text.strip()
        if loss is not None:  # the loss is a mean over target tokens: weighted by them, not by rows,
            n = int((batch["labels"] != IGNORE_INDEX).sum())  # so it does not depend on the batch size
            self.loss_sum += float(loss) * n
            self.count += n

    def texts(self) -> tuple[list[str], list[str]]:
        order = sorted(self.hypotheses)
        return [self.hypotheses[i] for i in order], [self.pairs[i].target for i in order]

    def compute(self) -> dict[str, float]:
        scores = translation_scores(*self.texts()) if self.hypotheses else {}
        return scores | mean_loss(self.loss_sum, self.count)

    def report(self) -> dict[str, Any]:
        return {**translation_scores(*self.texts(), signatures=True), **mean_loss(self.loss_sum, self.count),
                "num_examples": len(self.hypotheses)}

    def records(self, rows: list[PairRow], example_fields: Callable[[Any], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        hypotheses, _ = self.texts()
        if len(hypotheses) != len(rows):
            raise RuntimeError(f"{len(hypotheses)} translations for {len(rows)} rows")
        for row, hypothesis in zip(rows, hypotheses):
            yield {**example_fields(row), "target": row.target, "prediction": hypothesis}

    def write_files(self, folder: Path, report: dict[str, Any]) -> None:
        return None

    def tables(self, report: dict[str, Any]) -> list[Any]:
        return []


def translation_scores(hypotheses: list[str], references: list[str], signatures: bool = False) -> dict[str, Any]:
    """Corpus BLEU and chrF (0-100) with sacrebleu's defaults (13a tokenisation), one
    reference per hypothesis; with signatures, sacrebleu's strings that say how they were
    computed (to quote next to the numbers)."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(), CHRF()
    out: dict[str, Any] = {"bleu": float(bleu.corpus_score(hypotheses, [references]).score),
                           "chrf": float(chrf.corpus_score(hypotheses, [references]).score)}
    if signatures:
        out |= {"bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}
    return out
