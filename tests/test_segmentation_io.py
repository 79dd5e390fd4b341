"""Segmentation's readers on real files (nibabel's NIfTI examples, pydicom's CT and DICOM-SEG), its geometry (RAS,
spacing), and validate's quarantine of unusable pairs; no training here."""

import shutil
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from nibabel.testing import data_path
from pydicom.data import get_testdata_file

from medflow.data.suite import ValidationFailed
from medflow.imaging.geometry import canonical, mismatch, onto
from medflow.imaging.volumes import SeriesGap, Volume, VolumeError, read_volume
from medflow.params import ParamsError, from_dict
from medflow.steps import validate
from medflow.tasks import for_params

NIFTI = f"{data_path}/anatomical.nii"


def _dicom(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's note that it cannot download its optional test files
        return get_testdata_file(name)


def test_nifti_keeps_its_spacing_and_orientation_and_reorients_to_ras(tmp_path):
    img = nib.load(NIFTI)
    vol = read_volume(NIFTI)
    assert vol.array.shape == img.shape
    assert np.allclose(vol.spacing, img.header.get_zooms()[:3])
    assert vol.orientation == "".join(nib.aff2axcodes(img.affine))
    # The same voxels stored flipped along x (LAS instead of RAS, or the reverse) come back identical once canonical.
    flipped_affine = img.affine @ np.array([[-1, 0, 0, img.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), flipped_affine), tmp_path / "flipped.nii.gz")
    other = read_volume(tmp_path / "flipped.nii.gz")
    assert other.orientation != vol.orientation
    a, affine_a = canonical(vol, None, is_mask=False)
    b, affine_b = canonical(other, None, is_mask=False)
    assert "".join(nib.aff2axcodes(affine_a)) == "RAS" and np.allclose(affine_a, affine_b)
    assert np.array_equal(a, b)
    # Resampled to 2 mm: the field of view is kept, the grid coarser.
    c, affine_c = canonical(vol, [2.0, 2.0, 2.0], is_mask=False)
    assert np.allclose(np.sqrt((affine_c[:3, :3] ** 2).sum(0)), 2.0)
    assert np.allclose(np.array(c.shape) * 2.0, np.array(a.shape) * vol.spacing, atol=2.5)


def _series(folder, positions):
    """CT_small.dcm copied once per slice position (mm along its normal), files named against slice order."""
    folder.mkdir()
    ds = pydicom.dcmread(_dicom("CT_small.dcm"))
    orientation = [float(v) for v in ds.ImageOrientationPatient]
    normal = np.cross(orientation[:3], orientation[3:])
    origin = np.array([float(v) for v in ds.ImagePositionPatient])
    for i, z in enumerate(positions):
        ds.ImagePositionPatient = [f"{v:.3f}" for v in origin + normal * z]
        ds.InstanceNumber = i
        ds.save_as(folder / f"s{len(positions) - i:02d}.dcm")
    return ds


def test_dicom_series_sorted_by_position_and_a_missing_slice_stops(tmp_path):
    ds = _series(tmp_path / "ok", [0, 2.5, 5, 7.5, 10])
    vol = read_volume(tmp_path / "ok")
    assert vol.array.shape == (ds.Columns, ds.Rows, 5)
    assert np.allclose(vol.spacing, [float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0]), 2.5], atol=1e-3)
    _series(tmp_path / "gap", [0, 2.5, 7.5, 10])  # the slice at 5 mm is missing
    with pytest.raises(SeriesGap) as err:
        read_volume(tmp_path / "gap")
    msg = str(err.value)
    assert "gap" in msg and "1 of 3 slice gaps" in msg and "evenly spaced" in msg and "\n" not in msg


def test_ct_slice_and_dicom_seg():
    ct = read_volume(_dicom("CT_small.dcm"))
    assert ct.array.shape == (128, 128) and np.allclose(ct.spacing, 0.661468, atol=1e-4)
    seg = read_volume(_dicom("liver_1frame.dcm"))
    assert seg.array.shape == (512, 512, 1) and set(np.unique(seg.array)) == {0, 1}
    assert np.allclose(seg.spacing, [0.810547, 0.810547, 1.0], atol=1e-4)


def _sparse_seg(folder, planes: list[float]):
    """pydicom's liver DICOM-SEG with one frame per plane (mm along its normal, from the file's own), each frame
    the file's liver outline: a SEG stores frames only where a segment is set."""
    from pydicom.pixels import pack_bits

    ds = pydicom.dcmread(_dicom("liver_1frame.dcm"))
    frame = ds.pixel_array
    groups = ds.PerFrameFunctionalGroupsSequence
    origin = np.array([float(v) for v in groups[0].PlanePositionSequence[0].ImagePositionPatient])
    for group, z in zip(groups, planes, strict=True):
        group.PlanePositionSequence[0].ImagePositionPatient = [f"{v:.3f}" for v in origin + [0, 0, z]]
    ds.NumberOfFrames = len(planes)
    ds.PixelData = pack_bits(np.stack([frame] * len(planes)))
    path = folder / f"seg{len(list(folder.iterdir()))}.dcm"
    ds.save_as(path)
    return path, frame


def test_a_dicom_seg_without_its_empty_slices_reads_them_as_background_on_the_images_grid(tmp_path):
    path, frame = _sparse_seg(tmp_path, [0, 2, 3])  # nothing segmented on the plane at 1 mm
    seg = read_volume(path)
    assert seg.array.shape == (512, 512, 4) and np.allclose(seg.spacing, [0.810547, 0.810547, 1.0], atol=1e-4)
    assert [int(seg.array[:, :, k].sum()) for k in range(4)] == [
        int(frame.sum()),
        0,
        int(frame.sum()),
        int(frame.sum()),
    ]
    with pytest.raises(VolumeError, match="no common slice grid"):
        read_volume(_sparse_seg(tmp_path, [0, 1.5, 2.2])[0])
    # The CT it labels has slices from 2 mm below the first frame to 3 mm above the last: placed at slice 2.
    image = Volume(np.zeros((512, 512, 10), np.float32), seg.affine @ np.array(
        [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -2], [0, 0, 0, 1]]))  # fmt: skip
    placed = onto(image, seg)
    assert mismatch(image, placed, [0, 1]) is None and np.array_equal(placed.affine, image.affine)
    assert np.array_equal(placed.array[:, :, 2:6], seg.array) and placed.array.sum() == seg.array.sum()
    # Half a slice off, or reaching past the image: left as it is, for mismatch to name.
    half = Volume(image.array, image.affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0.5], [0, 0, 0, 1]]))
    assert mismatch(half, onto(half, seg), [0, 1])[0] == "shape_mismatch"
    short = Volume(image.array[:, :, :5], image.affine)
    assert mismatch(short, onto(short, seg), [0, 1])[0] == "shape_mismatch"


def test_mismatched_pairs_are_named():
    image = read_volume(NIFTI)
    mask = read_volume(NIFTI)
    mask.array = (np.asarray(mask.array) > 0).astype(np.uint8)
    assert mismatch(image, mask, [0, 1]) is None
    coarse = type(mask)(mask.array, mask.affine @ np.diag([2, 1, 1, 1]))
    assert mismatch(image, coarse, [0, 1])[0] == "spacing_mismatch"
    assert mismatch(image, type(mask)(mask.array * 3, mask.affine), [0, 1])[0] == "labels_outside"


def _pair(folder, stem, spacing=(1.0, 1.0, 1.0), mask_spacing=None, labels=1, shape=(12, 12, 12)):
    rng = np.random.default_rng(len(stem))
    image = rng.normal(size=shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[3:8, 3:8, 3:8] = labels
    nib.save(nib.Nifti1Image(image, np.diag([*spacing, 1])), folder / f"{stem}_img.nii.gz")
    nib.save(nib.Nifti1Image(mask, np.diag([*(mask_spacing or spacing), 1])), folder / f"{stem}_seg.nii.gz")
    return f"{stem}_img.nii.gz", f"{stem}_seg.nii.gz"


def test_validate_quarantines_each_unusable_pair_with_its_rule(project, salted):
    folder = project.data_dir / "ct"
    folder.mkdir(parents=True)
    rows = [(*_pair(folder, f"ok{i}"), f"P{i}") for i in range(6)]
    rows.append((*_pair(folder, "spacing", mask_spacing=(1.0, 1.0, 2.0)), "P7"))
    rows.append((*_pair(folder, "labels", labels=3), "P8"))
    rows.append(("../../outside.nii.gz", rows[0][1], "P9"))
    rows.append(("gone.nii.gz", rows[0][1], "P10"))
    image, _ = _pair(folder, "shape", shape=(12, 12, 10))
    rows.append((image, rows[0][1], "P11"))
    # A mask stored for the slices it labels only (3-7 of 12, its affine 3 mm up): placed on the image's grid.
    image, mask = _pair(folder, "partial")
    cut = nib.load(folder / mask)
    up = cut.affine.copy()
    up[2, 3] += 3
    nib.save(nib.Nifti1Image(np.asarray(cut.dataobj)[:, :, 3:8], up), folder / mask)
    rows.append((image, mask, "P12"))
    pd.DataFrame(rows, columns=["img", "seg", "pid"]).to_csv(folder / "manifest.csv", index=False)
    data = {"kind": "image", "task": "segmentation", "source": "data/ct/manifest.csv", "image_column": "img",
            "mask_column": "seg", "target": "seg", "patient_id": "pid", "spacing": [1.0, 1.0, 1.5]}  # fmt: skip
    params = from_dict({"data": data, "train": {"model": "unet", "patch_size": [16, 16, 16]},
                        "validate": {"max_quarantine": 0.5}})  # fmt: skip
    summary = validate.run(params, project)
    q = pd.read_csv(project.step_dir("validate") / "quarantine.csv")
    assert dict(zip(q["_row_id"], q["rule"], strict=True)) == {
        6: "spacing_mismatch", 7: "labels_outside", 8: "path_outside_data", 9: "file_missing", 10: "shape_mismatch"
    }  # fmt: skip
    assert summary["rows_valid"] == 7 and summary["spacing"] == [1.0, 1.0, 1.5] and summary["orientation"] == "RAS"
    cached = np.load(project.step_dir("validate") / "cases" / "0_image.npy", mmap_mode="r")
    assert cached.shape == (12, 12, 8)  # 12 slices of 1 mm resampled to 1.5 mm
    assert "P0" not in (project.step_dir("validate") / "valid.parquet").read_bytes().decode("latin-1")
    with pytest.raises(ValidationFailed, match=r"5 of 12 pairs quarantined .*max_quarantine=0\.2"):
        validate.run(params.model_copy(update={"validate_": params.validate_.model_copy(
            update={"max_quarantine": 0.2})}), project)  # fmt: skip


def test_segmentation_params_refused_in_one_line():
    base = {"data": {"kind": "image", "task": "segmentation"}, "train": {"model": "unet"}}
    assert for_params(from_dict(base)).name == "segmentation"
    assert from_dict(base).evaluate.primary_metric == "mean_dice"
    for change, words in (
        ({"train": {"model": "cifar_convnet"}}, "segmentation trains unet"),
        ({"data": {**base["data"], "labels": [1, 2]}}, r"0 \(the background\) first"),
        ({"tune": {"metric": "val_accuracy"}}, "tunes val_loss or val_dice"),
    ):
        with pytest.raises(ParamsError, match=words):
            for_params(from_dict(base | change))


def test_monitor_takes_a_segmentation_project_and_names_a_missing_batch_in_one_line(project):
    import argparse

    from medflow import commands

    shutil.copy("examples/phantom_seg2d.yaml", project.params_file)
    with pytest.raises(FileNotFoundError, match=r"^batch incoming/cases.csv not found in .*: give a CSV/Parquet"):
        commands.cmd_monitor(argparse.Namespace(batch="incoming/cases.csv", log=None), project)


def test_a_series_with_a_missing_slice_stops_validate_naming_it(project, salted):
    folder = project.data_dir / "mr"
    folder.mkdir(parents=True)
    _series(folder / "study7", [0, 2.5, 7.5, 10])
    shutil.copytree(folder / "study7", folder / "study7_seg")
    pd.DataFrame({"img": ["study7"], "seg": ["study7_seg"], "pid": ["P1"]}).to_csv(folder / "m.csv", index=False)
    data = {"kind": "image", "task": "segmentation", "source": "data/mr/m.csv", "image_column": "img",
            "mask_column": "seg", "target": "seg", "patient_id": "pid"}  # fmt: skip
    params = from_dict({"data": data, "train": {"model": "unet", "patch_size": [16, 16, 16]}})
    with pytest.raises(ValidationFailed) as err:
        validate.run(params, project)
    assert str(err.value).startswith("image DICOM series study7: 1 of 3 slice gaps differ") and "\n" not in str(
        err.value
    )


def test_evaluate_the_gate_and_monitor_score_a_case_by_one_dice_rule():
    """A label neither mask holds scores 1, one only the prediction holds 0, whichever step scores the case: evaluate
    used to leave it out (and score a case with no label at all 0), monitor to score it 1."""
    import warnings

    from medflow.imaging.overlap import case_dice
    from medflow.segmentation.evaluate import case_metrics

    empty = np.zeros((12, 12), dtype=np.int64)
    first, both = empty.copy(), empty.copy()
    first[2:6, 2:6] = 1
    both[2:6, 2:6], both[8:11, 8:11] = 1, 2
    shifted = np.roll(both, 1, axis=0)
    cases = {"nothing in either": (empty, empty, 1.0), "only predicted": (first, empty, 0.5),
             "label 2 in neither": (first, first, 1.0), "label 2 missed": (first, both, 0.5)}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns that the distances of an empty mask are undefined
        for name, (pred, truth, expected) in cases.items():
            metrics = case_metrics(pred, truth, [0, 1, 2], [1.0, 1.0], 1.0)
            assert np.mean([metrics["dice_1"], metrics["dice_2"]]) == pytest.approx(expected), name
            assert case_dice(pred, truth, [0, 1, 2]) == pytest.approx(expected), name
        metrics = case_metrics(shifted, both, [0, 1, 2], [1.0, 1.0], 1.0)
    assert case_dice(shifted, both, [0, 1, 2]) == pytest.approx((metrics["dice_1"] + metrics["dice_2"]) / 2)
    assert 0 < metrics["dice_1"] < 1 and metrics["hd95_2"] == pytest.approx(1.0)
