"""Golden test: the single-label retrieval report keeps its values to the last digit.

``tests/evaluation/data/golden_single_label.npz`` holds fixed 16-bit codes of 120 items in 6
classes (noisy class prototypes, so distances tie a lot) and
``golden_single_label_report.json`` the reports that ``compute_report`` gave for them before
relevance moved to :mod:`hpsh_tf2.evaluation.relevance` (captured once, before that change).
Every key and every value must stay identical: single-label retrieval is the special case of
the multi-label code path, not a second product.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hpsh_tf2.evaluation.report import compute_report
from tests.conftest import TEST_DATA

GOLDEN = TEST_DATA.parent / "evaluation" / "data"


def _golden():
    with np.load(GOLDEN / "golden_single_label.npz") as data:
        codes, labels = data["codes"], data["labels"]
    reports = json.loads((GOLDEN / "golden_single_label_report.json").read_text())
    return codes, labels, reports


@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("ties", ["expected", "index"])
def test_single_label_report_is_unchanged_to_the_digit(exclude_self, ties):
    codes, labels, reports = _golden()
    db, db_labels = (codes, labels) if exclude_self else (codes[::-1], labels[::-1])
    report, _ = compute_report(
        query_codes=codes,
        query_labels=labels,
        db_codes=db,
        db_labels=db_labels,
        k=10,
        exclude_self=exclude_self,
        ties=ties,
    )
    golden = reports[f"exclude_self={exclude_self},ties={ties}"]
    # ``code_health`` (bit balance, duplicate codes) joined the report later, on another branch;
    # it reads the codes only. Every key captured before must keep its place and value.
    assert [key for key in report if key != "code_health"] == list(golden)
    for key, value in golden.items():
        assert json.loads(json.dumps(report[key])) == value, key
