"""The survey rules (features.surveys), and that the feature builder and the scoring API apply
the same ones: one quadrant, one survey-due rule, one set of alarm thresholds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.definitions import catalogue_by_name
from features.rows import feature_rows
from features.surveys import (
    NPS_DUE,
    ONBOARDING_DUE,
    SurveyPolicy,
    nps_buckets,
    quadrant_alarms,
    quadrants,
    survey_due_reasons,
)


def test_quadrants():
    nps = np.array([9, 9, 3, 3, np.nan, 8])
    csat = np.array([0.9, 0.2, 0.9, 0.2, 0.9, np.nan])
    assert quadrants(nps, csat).tolist() == ["Advocate", "VIP-support", "Wildcard", "Churner",
                                             None, None]
    assert quadrants([7.0], [0.5]).tolist() == ["Advocate"]  # thresholds inclusive
    assert quadrants([7.0], [0.75], SurveyPolicy(nps_high=9, csat_high=0.8)).tolist() == ["Churner"]


def test_nps_buckets():
    assert nps_buckets([0, 6, 7, 8, 9, 10, np.nan]).tolist() == [
        "detractor", "detractor", "passive", "passive", "promoter", "promoter", None]


def test_survey_due():
    since = np.array([10, 181, 180, np.nan, np.nan, np.nan, 100, np.nan])
    tenure = np.array([400, 400, 400, 400, 45, 5, 60, np.nan])
    assert survey_due_reasons(since, tenure) == [
        [], [NPS_DUE], [], [NPS_DUE], [ONBOARDING_DUE], [],
        [ONBOARDING_DUE],  # the NPS was sent before this customer spell began
        []]
    assert survey_due_reasons([100], [400], SurveyPolicy(cadence_days=90)) == [[NPS_DUE]]


def test_reasons_are_named_like_the_catalogue_flags():
    catalogue = catalogue_by_name()
    assert NPS_DUE in catalogue and ONBOARDING_DUE in catalogue


def test_alarms_are_shares_of_the_accounts_on_the_map():
    """21 of 221 accounts with both answers are Churners (9.5 %): the alarm fires, although they
    are 4.4 % of all 478 accounts; the denominator and the coverage are stated."""
    counts = {"Churner": 21, "Wildcard": 40, "Advocate": 150, "VIP-support": 10, "none": 257}
    churners, wildcards = quadrant_alarms(counts, 478)
    assert (churners["share"], churners["firing"]) == (0.095, True)
    assert (churners["mapped_accounts"], churners["coverage"]) == (221, 0.4623)
    assert churners["message"].startswith("21 of the 221 accounts with both an NPS and a CSAT "
                                          "answer (9.5%) are Churners")
    assert wildcards["firing"] is False
    edge = {a["quadrant"]: a["firing"] for a in quadrant_alarms({"Churner": 20, "Wildcard": 80},
                                                                   100)}
    assert edge == {"Churner": True, "Wildcard": False}  # exactly 80 % is not above
    assert quadrant_alarms({"none": 50}, 50) == []  # nobody on the map: nothing to alarm on


@pytest.fixture(scope="module")
def scored(small_tables):
    """Feature rows of the generated data and the API's scores of the same rows."""
    from serving.batch import frame_records
    from serving.model import LoadedModel
    from serving.scoring import score_accounts
    from tests.serving.conftest import train_tiny_booster

    frame = feature_rows(small_tables, every="month")
    booster, encoder = train_tiny_booster()
    model = LoadedModel.build(booster, encoder, {})
    rules = ["csat_nps_quadrant", "nps_survey_due", "onboarding_survey_due", "nps_bucket"]
    sent = frame_records(frame.drop(columns=rules), list(frame.columns))
    return frame, score_accounts(model, sent)


def test_the_api_derives_the_builders_quadrant(scored):
    frame, scores = scored
    built = [None if pd.isna(q) else q for q in frame["csat_nps_quadrant"]]
    assert [s.quadrant for s in scores] == built
    assert {q for q in built if q} >= {"Advocate", "Churner"}  # the data has several quadrants


def test_the_api_derives_the_builders_survey_due_flags(scored):
    frame, scores = scored
    built = [([NPS_DUE] if a == 1 else []) + ([ONBOARDING_DUE] if b == 1 else [])
             for a, b in zip(frame["nps_survey_due"], frame["onboarding_survey_due"], strict=True)]
    assert [s.survey_due_reasons for s in scores] == built
    assert any(built) and not all(built)
