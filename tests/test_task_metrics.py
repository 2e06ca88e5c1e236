"""Each task's metric functions on hand-made predictions: the numbers a person computes
by the published definition, and the same numbers the library gives when called
directly."""
import math

import pytest

from fmctl.data.squad import QARow
from fmctl.tasks.extractive_qa import squad_scores
from fmctl.tasks.multilabel_classification import multilabel_scores
from fmctl.tasks.regression import regression_scores
from fmctl.tasks.seq2seq import translation_scores
from fmctl.tasks.token_classification import tagging_scores


def test_entity_scores_by_hand_and_by_seqeval():
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    gold = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "O", "B-LOC", "I-LOC"]]
    # PER right; LOC in sentence 1 missed; ORG right; the second LOC has the wrong end.
    predicted = [["B-PER", "I-PER", "O", "O", "O"], ["B-ORG", "O", "B-LOC", "O"]]
    scores = tagging_scores(gold, predicted, entities=True)
    # 4 gold entities, 3 predicted, 2 exact matches.
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert scores["accuracy"] == pytest.approx(7 / 9)
    assert scores == pytest.approx({"precision": precision_score(gold, predicted),
                                    "recall": recall_score(gold, predicted), "f1": f1_score(gold, predicted),
                                    "accuracy": accuracy_score(gold, predicted)})
    # the same tags read as plain tags: word accuracy and the macro-F1 over tags, no entities
    assert set(tagging_scores(gold, predicted, entities=False)) == {"accuracy", "macro_f1"}


def test_regression_scores_by_hand_and_by_scipy():
    from scipy.stats import pearsonr, spearmanr

    targets = [1.0, 2.0, 3.0, 4.0]
    predictions = [1.5, 2.0, 2.5, 5.0]
    scores = regression_scores(targets, predictions)
    assert scores["mse"] == pytest.approx((0.25 + 0 + 0.25 + 1) / 4)
    assert scores["mae"] == pytest.approx((0.5 + 0 + 0.5 + 1) / 4)
    assert scores["rmse"] == pytest.approx(math.sqrt(0.375))
    assert scores["pearson"] == pytest.approx(pearsonr(targets, predictions).statistic)
    assert scores["spearman"] == pytest.approx(1.0) == pytest.approx(spearmanr(targets, predictions).statistic)
    assert regression_scores(targets, [-t for t in targets])["pearson"] == pytest.approx(-1.0)
    constant = regression_scores(targets, [2.5] * 4)
    assert constant["pearson"] == 0.0 and constant["spearman"] == 0.0  # undefined, reported as no relation


def test_multilabel_scores_by_hand_and_by_sklearn():
    from sklearn.metrics import f1_score

    gold = [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]]
    predicted = [[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 0]]
    scores = multilabel_scores(gold, predicted)
    # true positives 4, false positives 1, false negatives 1
    assert scores["micro_precision"] == pytest.approx(4 / 5) and scores["micro_recall"] == pytest.approx(4 / 5)
    assert scores["micro_f1"] == pytest.approx(0.8) == pytest.approx(f1_score(gold, predicted, average="micro"))
    # per label F1: 1.0, 1.0, 0.0
    assert scores["macro_f1"] == pytest.approx(2 / 3) == pytest.approx(f1_score(gold, predicted, average="macro"))
    assert scores["subset_accuracy"] == pytest.approx(2 / 4)
    # a fourth label nobody has and nobody predicts: no say in the macro average
    absent = multilabel_scores([row + [0] for row in gold], [row + [0] for row in predicted])
    assert absent["macro_f1"] == pytest.approx(2 / 3)


def test_classification_macro_f1_ignores_classes_absent_from_gold_and_predictions():
    import torch

    from fmctl.tasks.classification import ClassificationMetrics

    metrics = ClassificationMetrics(["a", "b", "rare"])
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 2.0, -1.0], [2.0, 0.0, -1.0], [2.0, 0.0, -1.0]])
    metrics.update(logits, {"labels": torch.tensor([0, 1, 0, 1])}, None)
    scores = metrics.compute()
    # a: P 2/3 R 1 -> 0.8; b: P 1 R 1/2 -> 2/3; 'rare' has no gold row and no prediction
    assert scores["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert [row["support"] for row in metrics.report()["per_class"].values()] == [2, 2, 0]  # still listed


def qa(qid, answers):
    return QARow(qid, "q?", "context", [(a, 0) for a in answers], not answers, "data[0]", None, list(answers))


def test_squad_scores_follow_the_official_definition():
    rows = [qa("1", ["the cat sat on the mat"]), qa("2", ["Paris", "paris, France"]), qa("3", []), qa("4", []),
            qa("5", ["42"])]
    predictions = ["a cat sat", "PARIS!", "", "something", ""]
    scores = squad_scores(rows, predictions)
    # 1: normalised 'cat sat' vs 'cat sat on mat': precision 1, recall 1/2 -> F1 2/3, EM 0
    # 2: 'paris' matches the first answer exactly: EM 1, F1 1
    # 3: no answer, predicted none: 1 / 1;  4: no answer, predicted text: 0 / 0;  5: answer, predicted none: 0 / 0
    assert scores["exact_match"] == pytest.approx(100 * 2 / 5)
    assert scores["f1"] == pytest.approx(100 * (2 / 3 + 1 + 1) / 5)
    assert scores["has_answer_exact_match"] == pytest.approx(100 / 3)
    assert scores["has_answer_f1"] == pytest.approx(100 * (2 / 3 + 1) / 3)
    assert scores["no_answer_exact_match"] == pytest.approx(50.0) == pytest.approx(scores["no_answer_f1"])
    only_answerable = squad_scores(rows[:2], predictions[:2])
    assert set(only_answerable) == {"exact_match", "f1"}


def test_translation_scores_agree_with_sacrebleu():
    import sacrebleu

    hypotheses = ["the cat sat on the mat", "a dog ran", "hello"]
    references = ["the cat sat on the mat", "the dog ran away", "hello world"]
    scores = translation_scores(hypotheses, references, signatures=True)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score)
    assert translation_scores(references, references)["bleu"] == pytest.approx(100.0)
    assert translation_scores(["zzz qqq"] * 3, references)["bleu"] == pytest.approx(0.0)
    assert "tok:13a" in scores["bleu_signature"]


def test_many_classes_give_a_sparse_matrix_and_top_probabilities(tmp_path):
    """150 classes: no C x C matrix (50k classes would need 18 GiB), no unreadable picture,
    and each prediction lists its top classes rather than all of them."""
    import torch

    from fmctl.tasks.classification import TOP_PROBABILITIES, ClassificationMetrics

    names = [f"c{i}" for i in range(150)]
    metrics = ClassificationMetrics(names)
    logits = torch.full((4, 150), -5.0)
    for row, cls in enumerate([3, 3, 7, 120]):
        logits[row, cls] = 5.0
    metrics.update(logits, {"labels": torch.tensor([3, 4, 7, 120])}, None)
    report = metrics.report()
    assert report["confusion_matrix"]["cells"] == [[3, 3, 1], [4, 3, 1], [7, 7, 1], [120, 120, 1]]
    metrics.write_files(tmp_path, report)
    assert not (tmp_path / "confusion_matrix.png").exists()
    rows = [type("Row", (), {"label": names[k]})() for k in (3, 4, 7, 120)]
    records = list(metrics.records(rows, lambda row: {}))
    assert all(len(r["probabilities"]) == TOP_PROBABILITIES for r in records)
    assert next(iter(records[3]["probabilities"])) == "c120"  # the most likely first
