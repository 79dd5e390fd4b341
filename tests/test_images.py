import gzip
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medflow.data import images
from medflow.data.columns import CONTENT_HASH
from medflow.data.sources import SourceError
from medflow.data.suite import ValidationFailed
from medflow.params import from_dict
from medflow.paths import Paths
from medflow.steps import validate

MANIFEST = {"kind": "image", "source": "data/xray/manifest.csv", "target": "label", "patient_id": "patient"}
RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _salt(monkeypatch):
    # validate replaces the patient id by its salted key.
    monkeypatch.setenv("MEDFLOW_SALT", "image-salt")


def params(**data):
    return from_dict({"data": {**MANIFEST, **data}})


def gray(h=64, w=64):
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


def png(path, array):
    Image.fromarray(array).save(path)
    return path.name


def write_manifest(root, extra_rows=(), drop=None):
    """A manifest of 64x64 grayscale images with one row per failure mode; returns (paths, pixels of row 0)."""
    paths = Paths(root=root)
    folder = paths.data_dir / "xray"
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    first = gray()
    png(folder / "imgs" / "a.png", first)
    Image.fromarray(gray()).save(folder / "b.jpg")
    np.save(folder / "c.npy", gray())
    np.save(folder / "d.npy", first[..., None])  # the same pixels as row 0, as NPY: the same content hash
    (folder / "corrupt.png").write_bytes(RNG.bytes(300))
    png(folder / "full.png", gray())
    full = (folder / "full.png").read_bytes()
    (folder / "truncated.png").write_bytes(full[: len(full) // 2])
    png(folder / "small.png", gray(32, 32))
    png(folder / "rgb.png", RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    png(folder / "e.png", gray())
    np.save(folder / "float.npy", gray().astype(np.float32))
    (folder / "x.gif").write_bytes(b"GIF89a")
    from pydicom.data import get_testdata_file

    # Copied in: a manifest may only reach files under data/ (an absolute path is quarantined).
    shutil.copy(get_testdata_file("MR_small.dcm"), folder / "mr.dcm")
    rows = [  # path, label, patient, view
        ("imgs/a.png", "normal", "p1", "PA"),
        ("b.jpg", "pneumonia", "p1", "PA"),
        ("c.npy", "normal", "p2", "AP"),
        ("d.npy", "pneumonia", "p2", "AP"),
        ("mr.dcm", "normal", "p3", "PA"),  # 64x64 int16
        ("corrupt.png", "normal", "p3", "PA"),
        ("truncated.png", "pneumonia", "p4", "AP"),
        ("missing.png", "normal", "p4", "AP"),
        ("small.png", "normal", "p5", "PA"),
        ("rgb.png", "pneumonia", "p5", "PA"),
        ("e.png", None, "p6", "AP"),
        ("float.npy", "normal", "p6", "AP"),
        ("x.gif", "pneumonia", "p7", "PA"),
        ("full.png", "pneumonia", None, "PA"),
        *extra_rows,
    ]
    df = pd.DataFrame(rows, columns=["path", "label", "patient", "view"])
    df.drop(columns=drop or []).to_csv(folder / "manifest.csv", index=False)
    return paths, first


EXPECTED_REASONS = {
    5: "path: decode_failed (not a readable .png image",
    6: "path: decode_failed (corrupt or truncated",
    7: "path: file_missing",
    8: "path: wrong_shape (32x32x1, expected 64x64x1)",
    9: "path: wrong_shape (64x64x3, expected 64x64x1)",
    10: "label: label_missing",
    11: "path: decode_failed (dtype float32: only uint8",
    12: "path: decode_failed (unsupported file type .gif",
    13: "patient: patient_id_missing",
}


def test_manifest_rows_quarantined_with_reasons_and_images_aligned(tmp_path):
    paths, first = write_manifest(tmp_path)
    summary = validate.run(params(), paths)
    out = paths.step_dir("validate")
    valid = pd.read_parquet(paths.valid_rows)
    held = pd.read_csv(out / "quarantine.csv")
    pixels = np.load(out / "images.npy")

    reasons = held.set_index("_row_id")["reason"]
    assert sorted(reasons.index) == sorted(EXPECTED_REASONS)
    for rid, reason in EXPECTED_REASONS.items():
        assert reasons[rid].startswith(reason), (rid, reasons[rid])
    assert "xray" not in " ".join(held["reason"])  # reasons never repeat a path
    assert summary["rows_in"] == 14 == summary["rows_valid"] + summary["rows_quarantined"]
    assert sorted([*valid["_row_id"], *held["_row_id"]]) == list(range(14))
    assert summary["quarantine_reasons"] == {
        "label: label_missing": 1,
        "path: decode_failed": 4,
        "path: file_missing": 1,
        "path: wrong_shape": 2,
        "patient: patient_id_missing": 1,
    }
    assert summary["image_shape"] == [64, 64, 1] and not summary["leakage_suspects"]

    assert pixels.shape == (5, 64, 64, 1) and pixels.dtype == np.uint8 and len(valid) == len(pixels)
    # The patient id leaves validate as its salted key; the quarantine holds no file path either.
    assert list(valid.columns) == ["_row_id", "_patient_key", "path", "label", "view", CONTENT_HASH]
    assert list(held.columns) == ["_row_id", "reason", "_patient_key"]  # no text: the row number finds the row
    assert held["_patient_key"].isna().sum() == 1 and not {"p1", "p2"} & set(valid["_patient_key"])
    row = valid.index[valid["path"] == "c.npy"][0]
    np.testing.assert_array_equal(pixels[row, ..., 0], np.load(paths.data_dir / "xray" / "c.npy"))
    np.testing.assert_array_equal(pixels[valid["_row_id"] == 0][0, ..., 0], first)
    dicom = pixels[valid["_row_id"] == 4][0]
    assert (dicom.min(), dicom.max()) == (0, 255)  # min/max windowed per image
    hashes = valid.set_index("_row_id")[CONTENT_HASH]
    assert hashes[0] == hashes[3] and hashes.nunique() == 4  # PNG and NPY of the same pixels; kept, not removed

    kinds = json.loads((out / "columns.json").read_text())
    assert kinds == {"path": "image", "label": "target", "patient": "patient_id", "view": "categorical"}
    suite = json.loads(paths.suite("manifest").read_text())
    assert suite["image_shape"] == [64, 64, 1] and suite["labels"] == ["normal", "pneumonia"]
    assert suite["required_columns"] == ["path", "label", "patient"]
    assert "p1" not in paths.suite("manifest").read_text()
    profile = (out / "profile" / "profile.md").read_text()
    assert "| normal | <5 |" in profile and (out / "profile" / "target.png").exists()
    assert json.loads(paths.summary("validate").read_text()) == summary


def test_dicom_is_windowed_per_image_and_monochrome1_inverted(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    a = ds.pixel_array.astype(np.float64)
    expected = np.rint((a - a.min()) * 255 / (a.max() - a.min())).astype(np.uint8)[..., None]
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "inverted")  # no extension: recognised by the DICM marker
    np.testing.assert_array_equal(images.read_image(Path(get_testdata_file("MR_small.dcm"))), expected)
    np.testing.assert_array_equal(images.read_image(tmp_path / "inverted"), 255 - expected)


def test_second_run_checks_against_the_suite(tmp_path):
    paths, _ = write_manifest(tmp_path)
    assert validate.run(params(), paths)["suite_created"]
    again = validate.run(params(), paths)
    assert not again["suite_created"] and again["rows_valid"] == 5

    paths, _ = write_manifest(tmp_path, extra_rows=[("c.npy", "covid", "p8", "PA")] * 2)
    with pytest.raises(ValidationFailed) as exc:
        validate.run(params(), paths)
    msg = str(exc.value)
    assert "data/xray/manifest.csv" in msg and "label_in_suite_set: label" in msg and "2 of 15 rows" in msg
    assert "'covid' (2)" in msg
    report = json.loads((paths.step_dir("validate") / "report.json").read_text())
    assert not report["success"] and not paths.valid_rows.exists()


def test_suite_shape_wins_over_the_batch(tmp_path):
    paths, _ = write_manifest(tmp_path)
    validate.run(params(), paths)
    suite = json.loads(paths.suite("manifest").read_text())
    paths.suite("manifest").write_text(json.dumps(suite | {"image_shape": [32, 32, 1]}))
    summary = validate.run(params(), paths)
    assert summary["rows_valid"] == 1 and summary["quarantine_reasons"]["path: wrong_shape"] == 8


@pytest.mark.parametrize(
    ("drop", "data", "column"),
    [(["label"], {}, "label"), (["patient"], {}, "patient"), (None, {"image_column": "file"}, "file")],
)
def test_missing_manifest_column_stops_naming_file_and_column(tmp_path, drop, data, column):
    paths, _ = write_manifest(tmp_path, drop=drop)
    with pytest.raises(ValidationFailed, match=rf"data/xray/manifest.csv: missing required column\(s\) \['{column}'\]"):
        validate.run(params(**data), paths)
    assert not json.loads((paths.step_dir("validate") / "report.json").read_text())["success"]


def test_no_valid_image_stops(tmp_path):
    paths, _ = write_manifest(tmp_path)
    pd.DataFrame({"path": ["missing.png", "corrupt.png"], "label": ["a", "b"], "patient": ["p1", "p2"]}).to_csv(
        paths.data_dir / "xray" / "manifest.csv", index=False
    )
    with pytest.raises(
        ValidationFailed,
        match=r"has_valid_image: no valid image among 2 rows \(path: file_missing 1, path: decode_failed 1\)",
    ):
        validate.run(params(), paths)
    assert not paths.suite("manifest").exists()


def write_idx(path, array, gz):
    raw = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes() + array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("folder", ["mnist", "fashion"])
def test_idx_folder_reads_back_exactly(tmp_path, gz, folder):
    root = tmp_path / folder
    root.mkdir()
    ext = ".gz" if gz else ""
    train, test = RNG.integers(0, 256, (5, 4, 3), dtype=np.uint8), RNG.integers(0, 256, (2, 4, 3), dtype=np.uint8)
    write_idx(root / f"t10k-images-idx3-ubyte{ext}", test, gz)
    write_idx(root / f"t10k-labels-idx1-ubyte{ext}", np.array([9, 0], np.uint8), gz)
    write_idx(root / f"train-images-idx3-ubyte{ext}", train, gz)
    write_idx(root / f"train-labels-idx1-ubyte{ext}", np.array([0, 1, 2, 3, 4], np.uint8), gz)
    np.testing.assert_array_equal(images.read_idx(root / f"train-images-idx3-ubyte{ext}"), train)

    data = params(source=str(root), patient_id=None).data
    src = images.load_image_source(data, Paths(root=tmp_path))
    np.testing.assert_array_equal(src.images, np.concatenate([train, test])[..., None])
    names = images.FASHION_MNIST_CLASSES if folder == "fashion" else [str(i) for i in range(10)]
    assert src.table["label"].tolist() == [names[i] for i in [0, 1, 2, 3, 4, 9, 0]]
    assert src.table["path"].iloc[5] == f"t10k-images-idx3-ubyte{ext}#0"
    assert src.table["_row_id"].tolist() == list(range(7))
    assert len(images.load_image_source(data.model_copy(update={"max_rows": 3}), Paths(root=tmp_path)).images) == 3


def test_cifar_batches_decode_chw_to_hwc(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    chw = RNG.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    dump = [({b"data": chw[:2].reshape(2, -1), b"labels": [1, 0]}, "data_batch_1")]
    dump += [({b"data": chw[2:].reshape(1, -1), b"labels": [1]}, "test_batch")]
    dump += [({b"label_names": [b"cat", b"dog"]}, "batches.meta")]
    for obj, name in dump:
        (root / name).write_bytes(pickle.dumps(obj, protocol=2))
    src = images.load_image_source(params(source="cifar-10-batches-py", patient_id=None).data, Paths(root=tmp_path))
    assert src.images.shape == (3, 32, 32, 3) and src.table["label"].tolist() == ["dog", "cat", "dog"]
    assert tuple(src.images[2, 5, 7]) == tuple(chw[2, :, 5, 7])  # image 2, row 5, column 7: (R, G, B)
    assert src.table["path"].tolist() == ["data_batch_1#0", "data_batch_1#1", "test_batch#0"]

    (root / "test_batch").write_bytes(pickle.dumps({b"data": print}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"\.print is not allowed in a data file"):
        images.load_image_source(params(source="cifar-10-batches-py", patient_id=None).data, Paths(root=tmp_path))


def test_digits_demo(tmp_path):
    summary = validate.run(params(source="digits", patient_id=None), Paths(root=tmp_path))
    assert summary["rows_valid"] == 1797 == summary["rows_in"] and summary["image_shape"] == [8, 8, 1]
    pixels = np.load(Paths(root=tmp_path).step_dir("validate") / "images.npy")
    assert pixels.shape == (1797, 8, 8, 1) and pixels.max() == 255
    valid = pd.read_parquet(Paths(root=tmp_path).valid_rows)
    assert sorted(valid["label"].unique()) == [str(i) for i in range(10)]
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.testing.assert_array_equal(pixels[10, ..., 0], np.rint(digits.images[10] * 255 / 16))
    assert valid["label"][10] == str(digits.target[10]) and valid["path"][10] == "digits#10"


def test_fashion_mnist_demo_names_the_package_when_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(SourceError, match="dataset-fashion-mnist"):
        images.load_image_source(params(source="fashion_mnist", patient_id=None).data, Paths(root=tmp_path))


@pytest.mark.skipif(not images.FASHION_MNIST_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_real_files(tmp_path):
    src = images.load_image_source(params(source="fashion_mnist", patient_id=None).data, Paths(root=tmp_path))
    assert src.images.shape == (70000, 28, 28, 1) and src.images.dtype == np.uint8
    assert set(src.table["label"]) == set(images.FASHION_MNIST_CLASSES)
    assert src.table["label"].iloc[0] == "Ankle boot"  # the first training label is 9
    assert src.table["path"].iloc[60000] == "t10k-images-idx3-ubyte.gz#0"
