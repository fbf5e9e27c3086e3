"""docs/features.md is generated from the declarations and must match them."""

from __future__ import annotations

from features.definitions import CATALOGUE
from features.docs import DOC_PATH, render


def test_committed_catalogue_page_is_up_to_date() -> None:
    assert DOC_PATH.read_text() == render(), "run: python -m features.docs"


def test_every_feature_is_documented_with_its_description() -> None:
    page = render()
    for spec in CATALOGUE:
        assert f"| `{spec.name}` | {spec.description} |" in page
