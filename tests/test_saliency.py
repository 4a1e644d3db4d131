"""Saliency backends, CAM / Grad-CAM and input-gradient saliency (gazemix.attention)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import timm
import torch
from torch import nn

from gazemix.attention.cam import CamInputError, class_activation_map, grad_cam, normalise_cam
from gazemix.attention.gradients import GradientInputError, input_gradient_saliency
from gazemix.attention.saliency import (SaliencyInputError, bottom_up_saliency, fine_grained_saliency,
                                        spectral_residual_saliency)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CONTRIB = pytest.mark.skipif(not hasattr(cv2, "saliency"), reason="needs OpenCV contrib (cv2.saliency)")
BLOBS = [(10, 12), (30, 40), (20, 50), (36, 10), (24, 32), (12, 44)]


def blob_images() -> torch.Tensor:
    """Faint noise with one bright 6x6 square per image (48 x 64)."""
    g = torch.Generator().manual_seed(0)
    x = 0.4 + 0.05 * torch.rand((len(BLOBS), 3, 48, 64), generator=g)
    for i, (r, c) in enumerate(BLOBS):
        x[i, :, r - 3:r + 3, c - 3:c + 3] = 0.95
    return x


def peak(m: torch.Tensor) -> tuple[int, int]:
    i = int(m.flatten().argmax())
    return i // m.shape[-1], i % m.shape[-1]


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet10t", pretrained=False, num_classes=5).eval()


@CONTRIB
def test_spectral_residual_agrees_with_opencv_per_image() -> None:
    x = blob_images()
    sal = spectral_residual_saliency(x)
    assert sal.shape == (6, 1, 48, 64) and float(sal.min()) >= 0 and float(sal.max()) == pytest.approx(1.0)
    ref = cv2.saliency.StaticSaliencySpectralResidual_create()
    for i, (r, c) in enumerate(BLOBS):
        bgr = np.ascontiguousarray((x[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)[:, :, ::-1])
        ok, m = ref.computeSaliency(bgr)
        assert ok
        (pr, pc), (qr, qc) = peak(sal[i, 0]), peak(torch.from_numpy(m))
        assert abs(pr - r) <= 5 and abs(pc - c) <= 5  # on the blob (6 px) or its rim
        assert abs(pr - qr) <= 6 and abs(pc - qc) <= 6
        assert np.corrcoef(sal[i, 0].numpy().ravel(), m.ravel())[0, 1] > 0.9


@CONTRIB
def test_fine_grained_finds_the_blob_and_is_per_image() -> None:
    x = blob_images()
    sal = fine_grained_saliency(x)
    assert sal.shape == (6, 1, 48, 64) and float(sal.min()) >= 0 and float(sal.max()) <= 1
    single = fine_grained_saliency(x[1:2])
    torch.testing.assert_close(single, sal[1:2])
    r, c = BLOBS[1]
    pr, pc = peak(sal[1, 0])
    assert abs(pr - r) <= 4 and abs(pc - c) <= 4


@CONTRIB
def test_backends_keep_dtype_and_do_not_modify_input() -> None:
    x = blob_images().double()
    before = x.clone()
    for backend in ("fine_grained", "spectral_residual"):
        out = bottom_up_saliency(x, backend)
        assert out.dtype == torch.float64
    torch.testing.assert_close(x, before)
    grey = spectral_residual_saliency(x[:, :1])
    assert grey.shape == (6, 1, 48, 64)


def test_saliency_bad_inputs() -> None:
    with pytest.raises(SaliencyInputError, match="1 or 3"):
        spectral_residual_saliency(torch.rand(2, 4, 8, 8))
    with pytest.raises(SaliencyInputError, match="floating point"):
        fine_grained_saliency(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="backend must be one of"):
        bottom_up_saliency(torch.rand(1, 3, 8, 8), "itti")


def test_cam_matches_hand_computation(cnn: nn.Module) -> None:
    x = torch.rand(3, 3, 64, 64)
    cls = torch.tensor([1, 4, 0])
    cam = class_activation_map(cnn, x, cls, size=(2, 2))
    feats = torch.relu(cnn.forward_features(x)).detach()  # (3, 512, 2, 2) at 64 px
    w, b = cnn.fc.weight.detach(), cnn.fc.bias.detach()
    for i in range(3):
        hand = (w[cls[i]].view(-1, 1, 1) * feats[i]).sum(0) + b[cls[i]]
        torch.testing.assert_close(cam[i, 0], hand, rtol=1e-4, atol=1e-5)
    # the spatial mean of the CAM is the class logit (GAP + linear head)
    torch.testing.assert_close(cam.mean(dim=(1, 2, 3)), cnn(x).gather(1, cls.view(-1, 1))[:, 0].detach(),
                               rtol=1e-4, atol=1e-5)
    full = class_activation_map(cnn, x, torch.nn.functional.one_hot(cls, 5).float())
    assert full.shape == (3, 1, 64, 64)


def test_grad_cam_and_normalise(cnn: nn.Module) -> None:
    x = torch.rand(2, 3, 64, 64)
    gc = grad_cam(cnn, x, torch.tensor([0, 3]))
    assert gc.shape == (2, 1, 64, 64) and float(gc.min()) >= 0 and not gc.requires_grad
    assert all(p.grad is None for p in cnn.parameters())
    spm = normalise_cam(torch.rand(2, 1, 8, 8))
    torch.testing.assert_close(spm.sum(dim=(1, 2, 3)), torch.ones(2))
    assert float(spm.flatten(1).min(dim=1).values.abs().max()) == 0.0


def test_cam_bad_inputs(cnn: nn.Module) -> None:
    with pytest.raises(CamInputError, match="get_classifier"):
        class_activation_map(nn.Linear(3, 2), torch.rand(1, 3, 8, 8), torch.tensor([0]))
    with pytest.raises(CamInputError, match=r"\[0, 4\]"):
        class_activation_map(cnn, torch.rand(1, 3, 64, 64), torch.tensor([7]))


def test_input_gradient_saliency_matches_autograd(cnn: nn.Module) -> None:
    x = torch.rand(2, 3, 32, 32)
    y = torch.tensor([1, 2])
    before = x.clone()
    s = input_gradient_saliency(cnn, x, y)
    torch.testing.assert_close(x, before)
    assert s.shape == (2, 1, 32, 32) and float(s.min()) >= 0
    assert all(p.grad is None for p in cnn.parameters())
    xr = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(cnn(xr), y, reduction="sum").backward()
    torch.testing.assert_close(s, xr.grad.pow(2).mean(1, keepdim=True).sqrt())
    # a sample's saliency does not depend on the rest of the batch
    torch.testing.assert_close(input_gradient_saliency(cnn, x[:1], y[:1]), s[:1], rtol=1e-4, atol=1e-7)
    soft = torch.nn.functional.one_hot(y, 5).float()
    torch.testing.assert_close(input_gradient_saliency(cnn, x, soft), s, rtol=1e-4, atol=1e-7)
    with pytest.raises(GradientInputError, match="soft targets"):
        input_gradient_saliency(cnn, x, torch.zeros(2, 3))


@CUDA
def test_saliency_on_cuda(cnn: nn.Module) -> None:
    x = blob_images().cuda()
    torch.testing.assert_close(spectral_residual_saliency(x).cpu(), spectral_residual_saliency(x.cpu()),
                               rtol=1e-3, atol=1e-4)
    if hasattr(cv2, "saliency"):
        assert fine_grained_saliency(x).device.type == "cuda"
    model = cnn.cuda()
    try:
        assert input_gradient_saliency(model, torch.rand(2, 3, 32, 32, device="cuda"),
                                       torch.tensor([0, 1], device="cuda")).device.type == "cuda"
        assert class_activation_map(model, torch.rand(2, 3, 64, 64, device="cuda"),
                                    torch.tensor([0, 1])).device.type == "cuda"
    finally:
        cnn.cpu()
