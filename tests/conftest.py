"""Shared fixtures: tiny seeded models and real-model helpers."""

from __future__ import annotations

import pytest
import torch
from _nets import SmallNet, TinyNet, TinyNet3d  # noqa: F401  (re-exported: from conftest import TinyNet)
from torch import nn


@pytest.fixture
def tiny() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture
def tiny_input() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 3, 16, 16, generator=g)


def no_inplace(model: nn.Module) -> nn.Module:
    """Switch off in-place activations (the reference aliases in-place outputs on CPU)."""
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return model


def small_net(seed: int = 0) -> SmallNet:
    torch.manual_seed(seed)
    net = SmallNet()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # running statistics that are not the identity
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.weight.data[::3] *= -1  # a negative gamma flips a channel: min-max scaling cannot undo that
            m.bias.data.uniform_(-0.3, 0.3)
    return net.eval()


def out_of_place_resnet(monkeypatch) -> None:
    """The reference reads CPU activations that later in-place ops overwrite; remove those ops."""
    from torchvision.models import resnet

    def basic_forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)

    monkeypatch.setattr(resnet.BasicBlock, "forward", basic_forward)


def oriented_2d_projection(activation_batch):
    """pytorch-grad-cam's ``get_2d_projection`` with camanim's sign rule (agree with the channel sum).

    The reference keeps LAPACK's arbitrary sign; this is the same projection, oriented by the rule
    ``camanim.methods.base.first_component`` documents, so the two can be compared exactly.
    """
    import numpy as np
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    projections = get_2d_projection(activation_batch)
    batch = np.nan_to_num(np.asarray(activation_batch, dtype=np.float64))
    for i, acts in enumerate(batch):
        flat = acts.reshape(acts.shape[0], -1)
        channel_sum = (flat - flat.mean(axis=1, keepdims=True)).sum(axis=0)
        if float(projections[i].reshape(-1).astype(np.float64) @ channel_sum) < 0:
            projections[i] = -projections[i]
    return projections


@pytest.fixture
def oriented_reference(monkeypatch) -> None:
    """pytorch-grad-cam's eigen projections take camanim's sign rule for the test."""
    import importlib

    for name in ("base_cam", "eigen_cam", "eigen_grad_cam", "hirescam", "layer_cam", "grad_cam_elementwise",
                 "seg_eigen_cam"):
        module = importlib.import_module(f"pytorch_grad_cam.{name}")
        if hasattr(module, "get_2d_projection"):
            monkeypatch.setattr(module, "get_2d_projection", oriented_2d_projection)


def write_dicom(path, pixels, **tags):
    """Write a DICOM file with pydicom: ``pixels`` (H, W) or (frames, H, W) int16/uint16, MONOCHROME2
    unless ``tags`` say otherwise; every keyword is set as a DICOM attribute (PatientName=...)."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    arr = np.ascontiguousarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = int(arr.shape[-2]), int(arr.shape[-1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if arr.dtype == np.int16 else 0
    if arr.ndim == 3:
        ds.NumberOfFrames = int(arr.shape[0])
    ds.PixelData = arr.tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def tiny_net3d(seed: int = 0) -> TinyNet3d:
    torch.manual_seed(seed)
    net = TinyNet3d()
    net.bn1.running_mean.uniform_(-0.5, 0.5)
    net.bn1.running_var.uniform_(0.5, 2.0)
    return net.eval()


def tiny_volume(seed: int = 1, shape: tuple[int, int, int] = (8, 12, 16)) -> torch.Tensor:
    """A (1, 1, D, H, W) input with three different sides, so a swapped axis shows."""
    return torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(seed))


def spy_raw_maps(cam) -> list:
    """Make a pytorch-grad-cam object keep each map its ``get_cam_image`` returns, after a ReLU (before its
    min-max scaling): the list they are appended to, one (B, ...) array per target layer and call."""
    import numpy as np

    captured: list = []
    original = cam.get_cam_image

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        captured.append(np.maximum(out, 0))
        return out

    cam.get_cam_image = spy
    return captured


@pytest.fixture
def drawn_text(monkeypatch) -> list:
    """Every text PIL's ``ImageDraw.text`` draws during the test, in order (it still draws)."""
    from PIL import ImageDraw

    drawn: list[str] = []
    draw_text = ImageDraw.ImageDraw.text

    def spy(self, xy, text, *args, **kwargs):
        drawn.append(text)
        return draw_text(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", spy)
    return drawn
