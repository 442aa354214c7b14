"""Models: MLP, CNN and transfer (frozen backbone + trained head), and your own nn.Module
(`model.kind: module`, built by `runner.usercode`).

Every model is a `Net`: `features` (everything up to the last hidden layer) then `head` (the output
layer).  That split is what transfer learning reuses: a later job takes an earlier run's
`features` as its frozen backbone.  A model is described by an `arch` dict (JSON-able) stored in
`model.pt`, so it can be rebuilt without the job's data or the backbone's file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from jobs.errors import JobError
from jobs.spec import CNNSpec, MLPSpec, ModuleSpec, TransferSpec
from runner import usercode

MONOTONE = frozenset({"relu", "tanh", "sigmoid", "leaky_relu", "elu"})  # never decreasing: max(f(x)) = f(max(x))
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
               "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "silu": nn.SiLU}


class Net(nn.Module):
    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FrozenBackbone(nn.Module):
    """A pretrained feature extractor that stays in eval mode (batchnorm statistics, dropout)."""

    def __init__(self, backbone: nn.Module, size: tuple[int, int], channels: int, trainable: bool):
        super().__init__()
        self.backbone = backbone
        self.size = size
        self.channels = channels
        self.trainable = trainable
        for p in backbone.parameters():
            p.requires_grad_(trainable)

    def train(self, mode: bool = True) -> "FrozenBackbone":
        super().train(mode)
        if not self.trainable:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:  # flat rows from a table: treat as a 1-channel square image when possible
            raise RuntimeError("a transfer backbone needs image data")
        if x.shape[1] != self.channels:  # adapt channels: RGB -> grey by mean, grey -> RGB repeat
            x = x.mean(dim=1, keepdim=True) if self.channels == 1 else x[:, :1].expand(
                -1, self.channels, -1, -1)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.backbone(x)


def _dense_stack(sizes: list[int], in_dim: int, activation: str, dropout: float,
                 batchnorm: bool) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    for width in sizes:
        layers.append(nn.Linear(in_dim, width))
        if batchnorm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(ACTIVATIONS[activation]())
        if dropout:
            layers.append(nn.Dropout(dropout))
        in_dim = width
    return layers, in_dim


def build_mlp(spec: MLPSpec, input_shape: tuple[int, ...], n_outputs: int) -> Net:
    in_dim = int(torch.tensor(input_shape).prod())
    layers: list[nn.Module] = [nn.Flatten()] if len(input_shape) > 1 else []
    if spec.input_batchnorm:
        layers.append(nn.BatchNorm1d(in_dim))
    hidden, out_dim = _dense_stack(spec.hidden, in_dim, spec.activation, spec.dropout, spec.batchnorm)
    return Net(nn.Sequential(*layers, *hidden), nn.Linear(out_dim, n_outputs))


def build_cnn(spec: CNNSpec, input_shape: tuple[int, ...], n_outputs: int) -> Net:
    if len(input_shape) != 3:
        raise JobError("model.kind cnn needs image data (C,H,W); this dataset is a table of "
                       f"{input_shape[0]} features: use model.kind mlp")
    channels, h, w = input_shape
    layers: list[nn.Module] = []
    for i, block in enumerate(spec.conv_blocks()):
        pad = block.kernel // 2 if block.padding == "same" else block.padding
        out_h, out_w = h + 2 * pad - block.kernel + 1, w + 2 * pad - block.kernel + 1
        if out_h < 1 or out_w < 1:
            raise JobError(f"model: conv block {i + 1} (kernel {block.kernel}) does not fit the "
                           f"{h}x{w} feature map; use padding: same, a smaller kernel or fewer "
                           f"blocks (n_layers)")
        layers.append(nn.Conv2d(channels, block.filters, block.kernel, padding=pad))
        if block.batchnorm:
            layers.append(nn.BatchNorm2d(block.filters))
        act = ACTIVATIONS[spec.activation]()
        h, w, channels = out_h, out_w, block.filters
        if block.pool > 1:
            if h < block.pool or w < block.pool:
                raise JobError(f"model: pool {block.pool} after conv block {i + 1} does not fit "
                               f"the {h}x{w} feature map; use fewer blocks or pool: 0")
            # a monotone activation commutes with max pooling: pooled first, it runs on a quarter
            # of the values (the same outputs and gradients; a fifth of a small CNN's step on a CPU)
            layers += [nn.MaxPool2d(block.pool), act] if spec.activation in MONOTONE else [act, nn.MaxPool2d(block.pool)]
            h, w = h // block.pool, w // block.pool
        else:
            layers.append(act)
        drop = spec.dropout if block.dropout is None else block.dropout
        if drop:
            layers.append(nn.Dropout(drop))
    if spec.global_pool == "max":
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
        flat = channels
    elif spec.global_pool == "avg":
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        flat = channels
    else:
        layers.append(nn.Flatten())
        flat = channels * h * w
    hidden, out_dim = _dense_stack(spec.dense, flat, spec.activation, spec.dense_dropout, False)
    return Net(nn.Sequential(*layers, *hidden), nn.Linear(out_dim, n_outputs))


# ------------------------------------------------------------------------------------ transfer
def load_backbone_arch(spec: TransferSpec, base_dir: Path) -> dict[str, Any]:
    """The arch of the backbone named by a transfer job, read from its source (file or library)."""
    if spec.backbone.startswith("torchvision:"):
        name = spec.backbone.split(":", 1)[1]
        if name != "densenet121":
            raise JobError(f"model.backbone {spec.backbone}: only torchvision:densenet121 is known")
        if not spec.weights:
            raise JobError("model.weights: torchvision:densenet121 needs its weights file "
                           "(densenet121-*.pth); qtrain never downloads weights")
        weights = Path(spec.weights)
        weights = weights if weights.is_absolute() else base_dir / weights
        if not weights.is_file():
            raise JobError(f"model.weights {weights}: file not found")
        return {"source": "torchvision", "name": name, "weights_file": str(weights),
                "input_shape": [3, 160, 160]}
    path = Path(spec.backbone).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise JobError(f"model.backbone {path}: file not found",
                       hint="point it at the model.pt of an earlier run")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise JobError(f"model.backbone {path}: not a qtrain model.pt ({exc})") from exc
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise JobError(f"model.backbone {path}: not a qtrain model.pt")
    if saved["arch"]["model"].get("kind") == "module":
        raise JobError(f"model.backbone {path}: the model of a module job (your own nn.Module): qtrain cannot tell "
                       f"its feature layers from its head", hint="load its weights in your own module instead")
    return {"source": "qtrain", "arch": saved["arch"], "state": saved["model_state"],
            "input_shape": saved["arch"]["input_shape"]}


MODEL_FORMAT = "qtrain-model/1"


def _torchvision_densenet(weights_file: str | None) -> tuple[nn.Module, int]:
    try:
        import torchvision
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken install (operator errors)
        raise JobError("model.backbone torchvision:densenet121 needs a working torchvision",
                       hint="pip install a torchvision that matches torch") from exc
    net = torchvision.models.densenet121(weights=None)
    if weights_file:
        net.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
    features = nn.Sequential(net.features, nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten())
    return features, net.classifier.in_features


def build_transfer(spec: TransferSpec, input_shape: tuple[int, ...], n_outputs: int,
                   backbone: dict[str, Any]) -> Net:
    if len(input_shape) != 3:
        raise JobError("model.kind transfer needs image data (C,H,W)")
    b_shape = backbone["input_shape"]
    if backbone["source"] == "torchvision":
        extractor, feat_dim = _torchvision_densenet(backbone.get("weights_file"))
    else:
        inner = build_from_arch(backbone["arch"])
        if "state" in backbone:
            inner.load_state_dict(backbone["state"])
        extractor = inner.features
        with torch.no_grad():
            extractor.eval()
            feat_dim = int(extractor(torch.zeros(2, *b_shape)).shape[1])
    if len(b_shape) != 3:
        raise JobError("model.backbone: the backbone was trained on a table, not images")
    size = (spec.resize, spec.resize) if spec.resize else (b_shape[1], b_shape[2])
    frozen = FrozenBackbone(extractor, size, b_shape[0], trainable=not spec.freeze)
    head_layers: list[nn.Module] = [nn.BatchNorm1d(feat_dim)] if spec.head_batchnorm else []
    hidden, out_dim = _dense_stack(spec.head, feat_dim, spec.activation, spec.dropout, False)
    features = nn.Sequential(frozen, *head_layers, *hidden)
    return Net(features, nn.Linear(out_dim, n_outputs))


# ---------------------------------------------------------------------------------- building
def make_arch(model_spec: MLPSpec | CNNSpec | TransferSpec | ModuleSpec, input_shape: tuple[int, ...],
              n_outputs: int, base_dir: Path, classification: bool = True) -> dict[str, Any]:
    arch: dict[str, Any] = {"model": model_spec.model_dump(mode="json"),
                            "input_shape": list(input_shape), "n_outputs": n_outputs}
    if isinstance(model_spec, TransferSpec):
        arch["backbone"] = load_backbone_arch(model_spec, base_dir)
    if isinstance(model_spec, ModuleSpec):
        source = base_dir / model_spec.source
        package = model_spec.class_.split(":")[0].split(".")[0] == source.name and source.is_dir()
        arch["code"] = str(source.parent if source.suffix == ".py" or package else source)  # imported from
        arch["classification"] = classification
    return arch


def build_from_arch(arch: dict[str, Any], base: Path | None = None) -> nn.Module:
    """A freshly initialised model for `arch` (weights come from a state dict afterwards); `base`:
    the folder a stored arch's relative code path is in (a run's results folder)."""
    kind = arch["model"]["kind"]
    shape, n_out = tuple(arch["input_shape"]), arch["n_outputs"]
    if kind == "module":
        spec = ModuleSpec.model_validate(arch["model"])
        root = Path(arch["code"]) if base is None else base / arch["code"]
        single = spec.source if spec.source.endswith(".py") else None
        cls = usercode.load_class(root, *usercode.split_ref(spec.class_, single), spec.source)
        known = usercode.data_args(shape, n_out, arch.get("classification", True))
        return usercode.build_module(cls, spec.args, known, spec.source)
    if kind == "mlp":
        return build_mlp(MLPSpec.model_validate(arch["model"]), shape, n_out)
    if kind == "cnn":
        return build_cnn(CNNSpec.model_validate(arch["model"]), shape, n_out)
    return build_transfer(TransferSpec.model_validate(arch["model"]), shape, n_out,
                          arch["backbone"])


def storable_arch(arch: dict[str, Any]) -> dict[str, Any]:
    """The arch to save in model.pt: a backbone is rebuilt from the saved weights, not its file;
    a module's code is the `code/` folder saved beside model.pt (`save_code`)."""
    out = dict(arch)
    if "code" in arch:
        out["code"] = CODE_DIR
    if "backbone" in arch:
        b = {k: v for k, v in arch["backbone"].items() if k not in ("state", "weights_file")}
        out["backbone"] = b
    return out


def materialize(model: nn.Module, x: Any) -> nn.Module:
    """A model with lazy modules (nn.LazyLinear, nn.LazyConv2d, ...) given its shapes by one real
    batch (the first rows of `x`, a split's inputs) before anything counts, trains or saves its
    parameters; any other model as it is.  Its mode and its batchnorm statistics are kept."""
    from torch.nn.parameter import is_lazy

    if not any(is_lazy(t) for t in (*model.parameters(), *model.buffers())):
        return model
    probe(model, x)
    return model


def probe(model: nn.Module, x: Any) -> None:
    """One forward pass on the first rows of `x`, in eval mode and without gradients (what it
    learns: a lazy module's shapes; what the forward returns, `runner.outputs.returned`)."""
    batch = x[:2]
    batch = batch if isinstance(batch, torch.Tensor) else torch.as_tensor(batch)
    training = model.training
    model.eval()
    with torch.no_grad():
        model(batch)
    model.train(training)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


CODE_DIR = "code"  # beside model.pt: the module's code, so that the results folder rebuilds it


def save_code(files: list[tuple[str, Path]], out_dir: Path) -> None:
    """Copy a module model's code (what the job ships: `jobs.code.find_code`) beside its model.pt,
    as the task has it: `code/...`."""
    import shutil

    for remote, local in files:
        target = out_dir / remote
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)
