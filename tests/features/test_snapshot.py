"""Snapshot exports: the shipped mappings on the shared data sets, and clear errors for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from features.contract import DataContractError
from features.mapping import MAPPINGS_DIR
from features.snapshot import Snapshot, snake_case
from features.sources import dataset_name, load_data, load_tables

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
#: name -> (accounts, churned), as each data set's PROVENANCE.md states them.
SHIPPED = {"ibm-telco-churn": (7043, 1869), "orange-telecom-churn": (3333, 483),
           "bank-churn-records": (10_000, 2038)}


def _need(name: str) -> None:
    if not (SHARED / name).is_dir():
        pytest.skip(f"shared data set not found at {SHARED / name}")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_snapshot_mappings_read_every_account_and_churner(name):
    _need(name)
    snapshot = load_data(MAPPINGS_DIR / f"{name}.yaml")
    assert isinstance(snapshot, Snapshot) and snapshot.name == name
    assert dataset_name(MAPPINGS_DIR / f"{name}.yaml") == name
    accounts, churned = SHIPPED[name]
    frame = snapshot.frame
    assert (len(frame), int(frame["churned"].sum())) == (accounts, churned)
    assert frame["account_id"].is_unique
    assert set(frame.columns) == {"account_id", "churned", *snapshot.feature_names}
    for spec in snapshot.specs:  # typed as declared; the reasons have words to tell them with
        assert (str(frame[spec.name].dtype) == "float64") == (spec.dtype == "float")
        assert spec.description and spec.family == "account"
    assert snapshot.families()["account"] and not snapshot.families()["surveys"]


def test_the_bank_mapping_drops_its_leaking_complaint_column_saying_why():
    _need("bank-churn-records")
    snapshot = load_data(MAPPINGS_DIR / "bank-churn-records.yaml")
    assert "complain" not in snapshot.feature_names
    assert "leaks the label" in snapshot.dropped["Complain"]
    assert any(line.startswith("left out: Complain (leaks") for line in snapshot.lines())


def test_orange_reads_both_published_parts_with_ids_naming_file_and_line():
    _need("orange-telecom-churn")
    snapshot = load_data(MAPPINGS_DIR / "orange-telecom-churn.yaml")
    ids = snapshot.frame["account_id"]
    assert ids.iloc[0] == "churn-bigml-80:2" and ids.iloc[-1] == "churn-bigml-20:668"
    assert "total_day_charge" not in snapshot.feature_names  # collinear with the minutes


def test_check_describes_a_snapshot_mapping_and_other_commands_refuse_it():
    _need("ibm-telco-churn")
    path = MAPPINGS_DIR / "ibm-telco-churn.yaml"
    result = CliRunner().invoke(app, ["check", "--data", str(path)])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "a snapshot export" in out and "7,043 accounts" in out
    assert "Churn = Yes: 1,869 churned (26.5%)" in out
    assert "stratified 5-fold cross-validation" in out and "not point-in-time" in out
    with pytest.raises(DataContractError, match="snapshot export"):
        load_tables(path)


def test_snake_case_feature_names():
    assert snake_case("MonthlyCharges") == "monthly_charges"
    assert snake_case("customerID") == "customer_id"
    assert snake_case("Total day minutes") == "total_day_minutes"
    assert snake_case("3G plan") == "x_3g_plan"


# --- errors name the file, the column and the rows -------------------------------------------

CSV = "id,tier,spend,left,note\na1,basic,10,yes,x\na2,pro,abc,no,y\na3,pro,30,maybe,z\n"
SNAPSHOT = {"from": "crm", "id": "id", "label": {"column": "left", "churned": ["yes"],
                                                  "retained": ["no", "maybe"]},
            "numeric": ["spend"], "categorical": {"tier": "Tier"}, "drop": {"note": "free text"}}


def _load(tmp_path: Path, csv: str = CSV, **changes: object) -> Snapshot:
    (tmp_path / "crm.csv").write_text(csv)
    mapping = {"name": "crm", "data": ".", "snapshot": {**SNAPSHOT, **changes}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(mapping))
    return load_data(tmp_path / "m.yaml")


def test_a_non_number_names_file_column_and_line(tmp_path):
    with pytest.raises(DataContractError, match=r"crm\.csv, column 'spend': not a number: "
                       r"'abc'.*\(rows 3\)"):
        _load(tmp_path)


def test_an_unknown_label_value_is_refused(tmp_path):
    csv = CSV.replace(",abc,", ",20,")
    with pytest.raises(DataContractError, match=r"column 'left': label value 'maybe' is neither "
                       r"churned nor retained.*\(rows 4\)"):
        _load(tmp_path, csv, label={"column": "left", "churned": ["yes"], "retained": ["no"]})
    assert _load(tmp_path, csv).frame["churned"].tolist() == [1, 0, 0]


def test_every_column_must_be_declared_once(tmp_path):
    csv = CSV.replace(",abc,", ",20,")
    with pytest.raises(DataContractError, match=r"column 'note'.*not declared.*numeric, "
                       r"categorical or drop"):
        _load(tmp_path, csv, drop={})
    with pytest.raises(DataContractError, match=r"column 'spend'.*numeric and drop"):
        _load(tmp_path, csv, drop={"note": "x", "spend": "y"})
    with pytest.raises(DataContractError, match=r"not in the file: seats"):
        _load(tmp_path, csv, numeric=["spend", "seats"])
    with pytest.raises(DataContractError, match=r"column 'id'.*'a1' repeats"):
        _load(tmp_path, csv.replace("a2,", "a1,"))


def test_a_snapshot_mapping_has_no_tables(tmp_path):
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(
        {"name": "crm", "snapshot": SNAPSHOT, "tables": {"accounts": {"from": "a", "columns":
                                                                     {"account_id": "id"}}}}))
    with pytest.raises(DataContractError, match="a snapshot mapping has no tables section"):
        load_data(tmp_path / "m.yaml")


def test_a_feature_name_of_the_built_in_catalogue_must_be_renamed(tmp_path):
    csv = CSV.replace(",abc,", ",20,").replace("tier", "plan")
    with pytest.raises(DataContractError, match=r"column 'plan': its feature name 'plan' is "
                       "taken by the built-in catalogue; give it another with name:"):
        _load(tmp_path, csv, categorical={"plan": "Plan"})
    renamed = _load(tmp_path, csv, categorical={"plan": {"name": "crm_plan"}})
    assert "crm_plan" in renamed.feature_names
