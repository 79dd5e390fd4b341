"""Segmentation: each case is an image with a mask of label values (data.labels, 0 the background); the network
(MONAI's U-Net, train.model=unet) outputs one channel per label and learns by Dice + cross-entropy; the per-epoch score
is the validation cases' foreground Dice (val_dice) and the primary metric the test cases' mean Dice, higher better.
The steps hand the work to medflow.segmentation; the members here are what the other steps and commands ask of a
task. Baselines: none (an empty mask scores Dice 0, a bar no model needs a gate to pass).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medflow.params import Params, ParamsError

if TYPE_CHECKING:
    from medflow.data.features import Schema


class Segmentation:
    name = "segmentation"
    direction = {"mean_dice": True, "dice": True}  # dice: val_dice, which `medflow tune` may maximise
    primaries = ("mean_dice",)
    has_classes = True  # the schema lists the label values, background first
    epoch_metric = "dice"  # val_dice: the validation cases' foreground Dice by sliding windows

    def check_params(self, params: Params) -> None:
        data, train = params.data, params.train
        if params.evaluate.primary_metric not in self.primaries:
            raise ParamsError(
                f"evaluate.primary_metric={params.evaluate.primary_metric!r}: segmentation takes mean_dice"
            )
        if data.kind != "image":
            raise ParamsError("data.task=segmentation takes images and masks (data.kind=image)")
        if train.model != "unet":
            raise ParamsError(f"train.model={train.model}: segmentation trains unet (MONAI's U-Net)")
        if sorted(set(data.labels)) != list(data.labels) or data.labels[0] != 0:
            raise ParamsError("data.labels: distinct label values in rising order, 0 (the background) first")
        if data.spacing is not None and len(data.spacing) != len(train.patch_size):
            raise ParamsError("data.spacing and train.patch_size: one value per spatial axis each (2 or 3)")
        if params.tune.metric not in ("val_loss", "val_dice"):
            raise ParamsError(f"tune.metric={params.tune.metric}: segmentation tunes val_loss or val_dice")
        if params.evaluate.subgroups:
            raise ParamsError("evaluate.subgroups: not yet for segmentation; set evaluate.subgroups=[]")
        floor = params.register.min_primary
        floors = floor.values() if isinstance(floor, dict) else [] if floor is None else [floor]
        if any(not 0 <= f <= 1 for f in floors):
            raise ParamsError("register.min_primary: a Dice floor lies between 0 and 1")

    def higher_is_better(self, metric: str) -> bool:
        return self.direction[metric]

    def head_width(self, schema: Schema) -> int:
        return len(schema.classes)  # background included

    def loss(self, cfg, device):
        from monai.losses import DiceCELoss

        return DiceCELoss(to_onehot_y=True, softmax=True)
