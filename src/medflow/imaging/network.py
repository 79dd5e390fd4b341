"""MONAI's U-Net, its bundle (weights, model.json, preprocessor.json with the window, spacing and orientation it was
trained at, schema.json) and sliding-window inference with Gaussian overlap blending."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from medflow.data.features import Schema
from medflow.imaging.geometry import windowed

SLAB = 16  # slices turned from logits into labels at a time
OVERLAP = 0.25  # of the window on each side: a voxel near a window's edge is also seen nearer another's centre


def build(config: dict) -> torch.nn.Module:
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=config["spatial_dims"],
        in_channels=1,
        out_channels=config["out_channels"],
        channels=config["channels"],
        strides=config["strides"],
        num_res_units=config["num_res_units"],
    )


def config_of(params, dims: int) -> dict:
    t = params.train
    return {
        "name": "unet",
        "spatial_dims": dims,
        "out_channels": len(params.data.labels),
        "channels": list(t.unet_channels),
        "strides": list(t.unet_strides),
        "num_res_units": t.unet_res_units,
        "patch_size": list(t.patch_size),
        "overlap": OVERLAP,
    }


def save(out: Path, model: torch.nn.Module, config: dict, pre: dict, schema: Schema) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / "weights.pt")
    (out / "model.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out / "preprocessor.json").write_text(json.dumps(pre, indent=2, sort_keys=True) + "\n")
    schema.save(out / "schema.json")


class Segmenter:
    """A bundle loaded for inference: window, then sliding windows of the training patch size."""

    def __init__(self, bundle: Path, device: str | torch.device = "cpu"):
        bundle = Path(bundle)
        self.config = json.loads((bundle / "model.json").read_text())
        self.pre = json.loads((bundle / "preprocessor.json").read_text())
        self.schema = Schema.load(bundle / "schema.json")
        self.device = torch.device(device)
        self.model = build(self.config)
        self.model.load_state_dict(torch.load(bundle / "weights.pt", map_location="cpu", weights_only=True))
        self.model.to(self.device).eval()
        self.labels = [int(c) for c in self.schema.classes]

    def logits(self, image: np.ndarray, output_device: str | None = None) -> torch.Tensor:
        """(classes, *spatial) float logits of a canonical image; output_device "cpu" accumulates the blended output
        on the host while the windows run on the model's device (a volume larger than the device's memory)."""
        window = windowed(image, self.pre["window"])
        return infer(self.model, window, self.config["patch_size"], self.device, output_device)

    def predict(self, image: np.ndarray, output_device: str | None = None) -> np.ndarray:
        """Label values (uint8) of a canonical image (RAS, the bundle's spacing)."""
        logits = self.logits(image, output_device=output_device)
        index = np.empty(logits.shape[1:], dtype=np.uint8)
        # A slab at a time: argmax's int64 of a whole 512 x 512 x 300 volume alone would take 600 MiB.
        for start in range(0, logits.shape[-1], SLAB):
            index[..., start : start + SLAB] = logits[..., start : start + SLAB].argmax(0).numpy()
        return np.asarray(self.labels, dtype=np.uint8)[index]


@torch.no_grad()
def infer(
    model: torch.nn.Module,
    image: np.ndarray,
    patch: list[int],
    device: torch.device,
    output_device: str | None = None,
    batch: int = 4,
) -> torch.Tensor:
    """MONAI's sliding_window_inference over a windowed image, the windows on device and the blended output on
    output_device (default: device); the image is padded to at least one window. Returns the logits on the host."""
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    use_amp = device.type == "cuda"
    with torch.autocast(device.type, enabled=use_amp, dtype=torch.bfloat16 if use_amp else torch.float32):
        out = sliding_window_inference(
            x,
            roi_size=patch,
            sw_batch_size=batch,
            predictor=lambda window: model(window).float(),  # blended in float32, whatever autocast computed in
            overlap=OVERLAP,
            mode="gaussian",
            sw_device=device,
            device=torch.device(output_device) if output_device else device,
        )
    return out[0].cpu()
