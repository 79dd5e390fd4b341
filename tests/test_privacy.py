import json

import numpy as np
import pandas as pd
import pytest

from medflow.privacy import classify
from medflow.privacy.scanner import PhiLeak, assert_clean, scan, scan_path, scan_text

PHI = {
    "email": ["contact jane.doe@example.org today", "J_Doe+lab@mail.hospital.co.uk"],
    "phone": [
        "+1-555-123-4567",
        "(555) 123-4567",
        "call 555-123-4567.",
        "555.123.4567",
        "+44 20 7946 0958",
        "07700 900123",
        "+49 30 123456",
        "0612345678",
        "(02) 9876 5432",
        "06.12.34.56.78",
        "+4930123456",
    ],
    "ssn": ["ssn 123-45-6789", "123 45 6789"],
    "mrn": ["MRN0001234", "mrn: 1234567", "MRN_00012345"],
}

# What logs and artifacts are full of: none of it may trip the scanner, or every run would fail.
BENIGN = [
    "0.9876543210",
    "test_roc_auc 0.9912 [0.9801, 0.9987] n_test 86",
    "1e+10 20 30",
    "-0.5551234567",
    "1234567890",
    "2024-01-15T10:20:30.123456+00:00",
    "2024-01-15 10:20:30",
    '"2024-01-15"',
    "5551234567abcdef0123456789abcdef",  # MLflow run id
    "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",  # git SHA
    "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3-dirty",
    "123e4567-e89b-12d3-a456-426614174000",
    "m-3fac4cf034b141cd91b845278ba55c8a",
    "192.168.1.10",
    "torch==2.13.0",
    "[128, 64, 32]",
    "100 200 3000",
    '{"a": 555.123, "b": 4567}',
    "0.555 123.4567",
    "000-12-3456",  # never-issued SSN area
    "01.02.2020",  # a date, not a French number
    "0.123456789",
    "0 0 0 0 0 0 0 0 0 0",
    "I21.4",
    "@property",
]


@pytest.mark.parametrize(("kind", "text"), [(k, t) for k, texts in PHI.items() for t in texts])
def test_finds_each_kind(kind, text):
    assert [f.kind for f in scan_text(text)] == [kind]


@pytest.mark.parametrize("text", BENIGN)
def test_no_false_positive(text):
    assert scan_text(text) == []


def test_metrics_json_is_clean():
    metrics = {"test_accuracy": 0.971264, "test_roc_auc": 0.995781, "n_test": 86, "lr": 3e-4, "seed": 42}
    assert scan_text(json.dumps(metrics, indent=2)) == []


def test_error_names_place_and_kind_never_the_value():
    with pytest.raises(PhiLeak) as exc:
        assert_clean({"note": "reach me at jane.doe@example.org"}, "tags of run 'train'")
    msg = str(exc.value)
    assert "tags of run 'train'" in msg and "email" in msg and "[note]" in msg
    assert "jane" not in msg and "example.org" not in msg


def test_phi_in_a_key_is_not_echoed_as_location():
    findings = scan({"MRN0001234": 0.5}, "metrics")
    assert findings and all("MRN0001234" not in f.location for f in findings)


def test_forbidden_values_match_whole_tokens_only():
    known = ["P-00017", "Smith", "12"]  # "12" is too short to search for without flagging every number
    assert [f.kind for f in scan_text("row of P-00017 and Smith", forbidden=known)] == ["identifier"] * 2
    assert scan_text("P-000171 Smithson 12 0.12", forbidden=known) == []


def test_scan_path_reads_text_files_and_skips_binaries(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "card.md").write_text("# Card\nall clean\n")
    (tmp_path / "sub" / "notes.txt").write_text("line one\nphone (555) 123-4567\n")
    (tmp_path / "weights.pt").write_bytes(b"\x00\x01 jane.doe@example.org \xff")
    findings = scan_path(tmp_path)
    assert [(f.kind, f.location) for f in findings] == [("phone", f"{tmp_path / 'sub' / 'notes.txt'}:2")]
    with pytest.raises(PhiLeak, match="artifact dir.*phone"):
        assert_clean(tmp_path, "artifact dir")
    assert_clean(tmp_path / "card.md", "card")


def test_nested_lists_and_numbers():
    assert scan([1, 2.5, None, ("ok", "x 123-45-6789")], "params")[0].location == "params[3][1]"
    assert_clean({"train": {"hidden": [64, 32], "lr": 0.001}}, "params")


# Identifiers as people write them, each in a column of its own table (300 rows), and what must pass the screen.
_N = 300
_GIVEN = ["maria", "jose", "wei", "fatima", "olivia", "kenji", "zanele", "ivan", "priya", "omar", "chloe", "lucas"]
_FAMILY = ["garcia", "nguyen", "okafor", "kowalski", "tanaka", "haddad", "murphy", "rossi", "dubois", "novak"]


def _names(fmt: str) -> list[str]:
    return [fmt.format(g=_GIVEN[i % 12], f=_FAMILY[i * 7 % 10]) for i in range(_N)]


def _sparse(fmt: str, every: int, rest: str = "routine follow up") -> list[str]:
    return [fmt.format(i) if i % every == 0 else rest for i in range(_N)]


IDENTIFIER_CORPUS = {
    "lowercase names": ("person names", _names("{g} {f}")),
    "upper-case family, given": ("person names", [v.upper() for v in _names("{f}, {g}")]),
    "names with a title": ("person names", _names("dr {g} {f}")),
    "uk mobile in notes": ("phone numbers", _sparse("ring 07700 9{:05d} re results", 20)),
    "uk landline": ("phone numbers", _sparse("+44 20 7946 {:04d}", 25)),
    "german": ("phone numbers", _sparse("tel +49 30 12{:04d}", 30)),
    "french": ("phone numbers", _sparse("06123{:05d}", 30)),
    "french spaced": ("phone numbers", _sparse("06 12 34 {:02d} 78", 30)),
    "australian": ("phone numbers", _sparse("(02) 9876 {:04d}", 30)),
    "us in notes": ("phone numbers", _sparse("seen by dr x; callback 617-555-{:04d}", 5)),
}
BENIGN_COLUMNS = {
    "lab numbers": [f"{v:.1f}" for v in np.random.default_rng(0).normal(220, 40, _N)],
    "levels": ["none", "low", "high"] * (_N // 3),
    "icd codes": ["I21.4", "I50.9", "E11.9", "J18.9", "C50.911"] * (_N // 5),
    "dates": [f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in range(_N)],
    "plans": ["routine follow up", "no change", "refer to cardiology", "repeat labs in two weeks"] * (_N // 4),
    "site_id": [str(i % 5) for i in range(_N)],
    "decimals": [f"0.{i:09d}" for i in range(_N)],
    "european dates": [f"{1 + i % 28:02d}.{1 + i % 12:02d}.2024" for i in range(_N)],
}


@pytest.mark.parametrize("case", IDENTIFIER_CORPUS)
def test_the_screen_finds_identifiers_in_the_formats_people_write_them(case):
    kind, values = IDENTIFIER_CORPUS[case]
    (found,) = classify.suspects(pd.DataFrame({"c": values}), set())
    assert found.kind == kind and str(found).startswith("column 'c': ")
    assert not {v for v in values if v in str(found)}


@pytest.mark.parametrize("column", ["ID", "id", "subject_id", "patientId", "PatientID", "record-id"])
def test_id_columns_of_arbitrary_ids_are_identifiers_and_repeated_ones_the_patient_id(column):
    ids = np.random.default_rng(1).choice(np.arange(10_000, 99_999), _N, replace=False)
    numbers = {column}
    (unique,) = classify.suspects(pd.DataFrame({column: ids}), set(), numbers, None, patient_id=True)
    assert unique.kind == "id" and unique.repeats is None
    visits = pd.DataFrame({column: np.repeat(ids[: _N // 3], 3)})
    (repeated,) = classify.suspects(visits, set(), numbers, None, patient_id=True)
    assert repeated.repeats == (_N // 3, _N) and str(repeated).endswith("a patient id")
    # Declared elsewhere, a patient id is not proposed twice.
    assert classify.suspects(visits, set(), numbers, None, patient_id=False)[0].repeats is None


def test_what_is_no_identifier_passes_the_screen():
    df = pd.DataFrame(BENIGN_COLUMNS | {"covid": ["yes", "no"] * (_N // 2), "paid": ["y", "n"] * (_N // 2)})
    assert classify.suspects(df, set(), {"lab numbers", "site_id"}) == []
