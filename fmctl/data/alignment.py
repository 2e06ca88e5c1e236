"""Between words or characters and sub-word tokens.

Token classification labels words, the model labels tokens: the first piece of each word
carries the word's label and the other pieces are left out of the loss; predictions are
read back from first pieces. Extractive QA answers are character spans of the context:
they become start/end token positions for training through the tokenizer's offset
mapping, and predicted token spans become character spans again the same way.

Pure functions over lists, so the round trips are tested with generated inputs.
"""
from __future__ import annotations

from collections.abc import Sequence

from fmctl.data.collate import IGNORE_INDEX

NO_WORD = -1


def first_pieces(word_ids: Sequence[int | None]) -> list[int]:
    """For each token, the index of the word it starts, or NO_WORD (special tokens and
    the second and later pieces of a word)."""
    out, previous = [], None
    for word in word_ids:
        out.append(word if word is not None and word != previous else NO_WORD)
        previous = word
    return out


def token_labels(word_index: Sequence[int], word_labels: Sequence[int]) -> list[int]:
    """Per-token training labels: the word's label on its first piece, IGNORE_INDEX elsewhere."""
    return [word_labels[w] if w != NO_WORD else IGNORE_INDEX for w in word_index]


def word_predictions(word_index: Sequence[int], token_predictions: Sequence[int], num_words: int,
                     fill: int) -> tuple[list[int], int]:
    """Per-word predictions from per-token ones; words without a token (cut off by the
    length limit, or made of characters the tokenizer drops) get `fill`. Returns the
    predictions and how many words were filled."""
    words = [fill] * num_words
    seen = 0
    for w, prediction in zip(word_index, token_predictions):
        if w != NO_WORD and w < num_words:
            words[w] = int(prediction)
            seen += 1
    return words, num_words - seen


def char_span_to_tokens(offsets: Sequence[tuple[int, int] | None], start_char: int,
                        end_char: int) -> tuple[int, int] | None:
    """(start token, end token) of the tokens covering context characters
    [start_char, end_char), or None when the span is not fully inside this window.
    offsets[i] is token i's character span in the context, None for tokens outside it."""
    context = [i for i, span in enumerate(offsets) if span is not None]
    if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return None
    start = next((i for i in context if offsets[i][1] > start_char), None)
    end = next((i for i in reversed(context) if offsets[i][0] < end_char), None)
    if start is None or end is None or end < start:
        return None
    return start, end


def tokens_to_char_span(offsets: Sequence[tuple[int, int] | None], start: int, end: int) -> tuple[int, int]:
    """Character span [first char of token `start`, last char of token `end`)."""
    return offsets[start][0], offsets[end][1]
