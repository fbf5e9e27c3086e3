"""The bad-file corpus through ``churn score`` (:func:`serving.batch.score_data`): every kind of
file that cannot be read or cannot be true gives an error naming the file, and the score store is
never created or written.

The reading rules themselves are tested case by case in ``tests/features/test_sources.py`` and
``test_contract.py``; this corpus checks that a command that writes stops before it writes.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from features.contract import DataContractError
from serving.batch import score_data
from serving.settings import ServingSettings
from tests.features.test_contract import GOOD, write


def _truncated(data: Path) -> None:
    whole = gzip.compress(GOOD["usage_events.csv"].encode() * 50)
    (data / "usage_events.csv").unlink()
    (data / "usage_events.csv.gz").write_bytes(whole[: len(whole) // 2])


def _corrupt_parquet(data: Path) -> None:
    pd.read_csv(data / "accounts.csv").to_parquet(data / "accounts.parquet")
    (data / "accounts.csv").unlink()
    raw = (data / "accounts.parquet").read_bytes()
    (data / "accounts.parquet").write_bytes(raw[:20] + b"\x00" * 40 + raw[60:])


CORPUS = {
    "truncated": (_truncated, "usage_events.csv.gz"),
    "undecodable": ({"accounts.csv": "account_id,plan\na,st\xe9rter\n".encode("latin-1")},
                    "accounts.csv"),
    "empty": ({"subscriptions.csv": b""}, "subscriptions.csv"),
    "corrupt_parquet": (_corrupt_parquet, "accounts.parquet"),
    "future_dated": ({"touchpoints.csv": GOOD["touchpoints.csv"] + "b,2099-06-01,call,company,\n"},
                     "touchpoints.csv"),
    "duplicate_keys": ({"accounts.csv": "account_id\na\nb\na\n"}, "accounts.csv"),
    "absurd_values": ({"subscriptions.csv": GOOD["subscriptions.csv"].replace(",100\n", ",1e12\n")},
                      "subscriptions.csv"),
    "missing_table": ({"subscriptions.csv": None}, "subscriptions"),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_a_bad_file_is_named_and_nothing_is_written(case, tmp_path, tiny_model_dir):
    change, named = CORPUS[case]
    if callable(change):
        data = write(tmp_path)
        change(data)
    else:
        data = tmp_path
        for name, content in change.items():
            write(tmp_path)
            if content is None:
                (data / name).unlink()
            elif isinstance(content, bytes):
                (data / name).write_bytes(content)
            else:
                (data / name).write_text(content)
    store = tmp_path / "out" / "scores.db"
    store.parent.mkdir()
    settings = ServingSettings(model_uri=str(tiny_model_dir), score_store_url=f"sqlite:///{store}",
                               tracking_uri=f"sqlite:///{tmp_path / 'none.db'}")
    with pytest.raises(DataContractError) as info:
        score_data(data, settings)
    assert named in str(info.value), str(info.value)
    assert list(store.parent.iterdir()) == []  # no store, no temp file left behind
