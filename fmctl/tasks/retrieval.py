"""Image-text retrieval figures over an evaluation split: recall@1/5/10 both ways and the
median rank, as CLIP-style papers (and open_clip's evaluation) report them.

The candidates are what a search would index: image -> text ranks the split's distinct
captions for each image (its own caption is the hit); text -> image ranks every image of
the split for each distinct caption (any image with that caption is a hit). So a caption
shared by two images is neither counted twice nor a wrong answer for either. A rank is
1 + the number of wrong candidates scored at least as high as the best hit (a tie counts
against the model, so a collapsed model whose embeddings are all alike ranks last, not
first); recall@k is the fraction of queries ranked within k; chance levels are what
random scores would give.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

KS = (1, 5, 10)
DIRECTIONS = ("i2t", "t2i")
METRICS = ("recall_sum", *(f"{d}_r{k}" for d in DIRECTIONS for k in KS), "i2t_median_rank", "t2i_median_rank",
           "loss")
CHUNK = 1024          # queries scored at once (a 10k x 10k float matrix would need 400 MB)
SHOWN = 5             # retrieved captions kept per image in predictions.jsonl


def ranks(images: Any, texts: Any, caption_ids: Any) -> dict[str, Any]:
    """Best-hit rank (1-based) of every query: 'i2t' per image, 't2i' per distinct caption;
    also the distinct captions' row indices ('captions') and each image's top captions."""
    import torch

    first: dict[int, int] = {}
    for row, cid in enumerate(caption_ids.tolist()):
        first.setdefault(cid, row)
    caption_rows = torch.tensor(list(first.values()))
    captions, caption_labels = texts[caption_rows], caption_ids[caption_rows]
    i2t, top = [], []
    for start in range(0, len(images), CHUNK):
        sims = images[start:start + CHUNK] @ captions.T
        hit = caption_ids[start:start + CHUNK, None] == caption_labels[None, :]
        best = sims.masked_fill(~hit, float("-inf")).max(1, keepdim=True).values
        i2t.append(((sims >= best) & ~hit).sum(1) + 1)
        top.append(sims.topk(min(SHOWN, sims.shape[1]), dim=1).indices)
    t2i = []
    for start in range(0, len(captions), CHUNK):
        sims = captions[start:start + CHUNK] @ images.T
        hit = caption_labels[start:start + CHUNK, None] == caption_ids[None, :]
        best = sims.masked_fill(~hit, float("-inf")).max(1, keepdim=True).values
        t2i.append(((sims >= best) & ~hit).sum(1) + 1)
    return {"i2t": torch.cat(i2t), "t2i": torch.cat(t2i), "captions": caption_rows, "top": torch.cat(top)}


def figures(found: dict[str, Any]) -> dict[str, float]:
    """recall@k per direction, their sum (the main metric) and the median ranks."""
    out: dict[str, float] = {}
    for direction in DIRECTIONS:
        rank = found[direction].float()
        for k in KS:
            out[f"{direction}_r{k}"] = float((rank <= k).float().mean())
        out[f"{direction}_median_rank"] = float(rank.quantile(0.5))
    out["recall_sum"] = sum(out[f"{d}_r{k}"] for d in DIRECTIONS for k in KS)
    return out


def chance(caption_ids: Any) -> dict[str, float]:
    """recall@k that random scores would give: k of the distinct captions for an image; for
    a caption, 1 - P(none of its m images among the top k of n) (hypergeometric)."""
    from math import comb

    counts = caption_ids.bincount().tolist()
    n, distinct = len(caption_ids), len(set(caption_ids.tolist()))
    out = {}
    for k in KS:
        out[f"chance_i2t_r{k}"] = min(1.0, k / distinct)
        misses = [comb(n - m, k) / comb(n, k) if n - m >= k else 0.0 for m in counts if m]
        out[f"chance_t2i_r{k}"] = 1.0 - sum(misses) / len(misses)
    return out


class RetrievalMetrics:
    """Collects normalised embeddings of an evaluation pass; scores them at the end."""

    def __init__(self) -> None:
        self.images: list[Any] = []
        self.texts: list[Any] = []
        self.ids: list[Any] = []
        self.loss_sum = 0.0
        self.count = 0
        self._found: dict[str, Any] | None = None

    def update(self, outputs: Any, batch: dict[str, Any], loss: Any) -> None:
        image, text = outputs[0], outputs[1]
        self.images.append(image.float().cpu())
        self.texts.append(text.float().cpu())
        self.ids.append(batch["labels"].cpu())
        if loss is not None:
            self.loss_sum += float(loss) * image.shape[0]
            self.count += image.shape[0]
        self._found = None

    def _ranked(self) -> tuple[dict[str, Any], Any]:
        import torch

        ids = torch.cat(self.ids)
        if self._found is None:
            self._found = ranks(torch.cat(self.images), torch.cat(self.texts), ids)
        return self._found, ids

    def compute(self) -> dict[str, float]:
        if not self.images:
            return {}
        out = figures(self._ranked()[0])
        if self.count:
            out["loss"] = self.loss_sum / self.count
        return out

    def report(self) -> dict[str, Any]:
        found, ids = self._ranked()
        out: dict[str, Any] = {**self.compute(), **chance(ids)}
        out.update({"num_examples": int(len(ids)), "num_images": int(len(ids)),
                    "num_captions": int(len(found["captions"]))})
        return out

    def records(self, rows: list[Any], example_fields: Callable[[Any], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Per pair: the image, its caption, the rank of its caption among the split's
        distinct captions, and the captions the image retrieves first."""
        found, _ = self._ranked()
        captions = [rows[int(i)].text for i in found["captions"]]
        for i, row in enumerate(rows):
            yield {**example_fields(row), "caption_rank": int(found["i2t"][i]),
                   "retrieved": [captions[int(j)] for j in found["top"][i]]}

    def write_files(self, folder: Path, report: dict[str, Any]) -> None:
        return None

    def tables(self, report: dict[str, Any]) -> list[Any]:
        from rich.table import Table

        table = Table(title="retrieval", title_justify="left")
        for column in ("direction", *(f"R@{k}" for k in KS), "median rank", "chance R@10"):
            table.add_column(column, justify="right" if column != "direction" else "left")
        for direction, name in (("i2t", "image -> text"), ("t2i", "text -> image")):
            table.add_row(name, *(f"{report[f'{direction}_r{k}']:.3f}" for k in KS),
                          f"{report[f'{direction}_median_rank']:g}", f"{report[f'chance_{direction}_r10']:.3f}")
        return [table]
