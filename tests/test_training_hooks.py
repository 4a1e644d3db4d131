"""The training-hook protocol: what a mixer asks of the forward arrives as asked, its losses and update are applied,
and the training package itself names no mixer."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Mapping

import pytest
import torch
from torch import Tensor, nn

from gazemix.contract import ForwardOutputs, ForwardRequest, Mixer, MixResult, TrainingHooks, blend, sample_beta
from gazemix.models import build_model, eval_no_grad
from gazemix.registry import create_mixer
from gazemix.training.data import BatchAugment
from gazemix.training.engine import Classifier, Trainer
from gazemix.training.trainer import token_head_for

K = 3
ROOT = Path(__file__).resolve().parents[1]


class ProbeHooks(TrainingHooks):
    """Asks for everything, records what it is given, adds one loss term, counts updates."""

    def __init__(self) -> None:
        self.seen: list[ForwardOutputs] = []
        self.updates = 0

    def token_head(self, model: nn.Module, num_classes: int) -> nn.Module | None:
        return nn.Linear(model.num_features, num_classes)

    def request(self, result: MixResult) -> ForwardRequest:
        return ForwardRequest(teacher_logits=True, clean_logits=True, features=True)

    def losses(self, out: ForwardOutputs) -> dict[str, Tensor]:
        self.seen.append(out)
        return {"probe": 0.25 * out.token_head(out.features[:, 0].float()).square().mean()}

    def after_step(self) -> None:
        self.updates += 1


class ProbeMixer(Mixer):
    """Mixup with the probe hooks (a mixer the training package has never heard of)."""

    name = "probe"

    def __init__(self, hooks: ProbeHooks, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hooks = hooks

    def training_hooks(self, *, auxiliary_losses: bool = True) -> TrainingHooks:
        return self._hooks if auxiliary_losses else TrainingHooks()

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b = images.shape[0]
        return {"lam": sample_beta(1.0, b, generator), "index": torch.randperm(b, generator=generator)}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        lam = params["lam"].to(images.device)
        share = lam.view(-1, 1, 1, 1)
        return self.pair_result(images, blend(images, params["index"], share), targets, params["index"], share, lam,
                                params)


def _trainer(mixer: Mixer, backbone: nn.Module, **kw: Any) -> Trainer:
    core = Classifier(backbone, token_head_for(mixer, backbone, K, kw.get("square_losses", True)))
    opt = torch.optim.SGD(core.parameters(), lr=0.0)  # lr 0: the weights stay put, so forwards can be compared

    class NoSchedule:
        def step_update(self, num_updates: int) -> None:
            pass

    return Trainer(core, core, mixer, opt, NoSchedule(), BatchAugment(32), num_classes=K, label_smoothing=0.0,
                   generator=torch.Generator().manual_seed(0), clip_grad=None, amp=False, device=torch.device("cpu"),
                   **kw)


def test_a_new_mixer_gets_what_it_asks_for_through_the_hooks_alone():
    torch.manual_seed(0)
    backbone = build_model("test_vit", K, 32, patch_size=8, drop_path=0.0)
    hooks = ProbeHooks()
    trainer = _trainer(ProbeMixer(hooks, num_classes=K, seed=0), backbone)
    assert isinstance(trainer.core.token_head, nn.Linear)  # built from the hooks, trained with the model
    images, labels = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    out = trainer.step(images, labels, None, epoch=0)
    seen = hooks.seen[-1]
    backbone.train()
    with torch.no_grad():
        train_clean = backbone(images)  # the clean batch in train mode (no dropout in test_vit): same logits
    with eval_no_grad(backbone):
        teacher = backbone(images)
    torch.testing.assert_close(seen.teacher_logits, teacher)
    torch.testing.assert_close(seen.clean_logits, train_clean, atol=1e-5, rtol=1e-5)
    assert seen.features.shape == (4, 1 + 16, backbone.num_features)  # tokens of the mixed batch only
    assert seen.logits.dtype == torch.float32 and seen.logits.shape == (4, K)
    assert seen.clean_logits.requires_grad and not seen.teacher_logits.requires_grad
    assert set(out.parts) == {"ce", "probe"} and hooks.updates == 1
    torch.testing.assert_close(out.loss, out.parts["ce"] + out.parts["probe"])


def test_auxiliary_losses_off_leaves_the_hooks_out():
    hooks = ProbeHooks()
    backbone = build_model("test_vit", K, 32, patch_size=8)
    trainer = _trainer(ProbeMixer(hooks, num_classes=K, seed=0), backbone, square_losses=False)
    out = trainer.step(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]), None, epoch=0)
    assert trainer.core.token_head is None and set(out.parts) == {"ce"} and not hooks.seen


@pytest.mark.parametrize("name, options, wants", [
    ("smmix", {"switch_prob": 1.0}, dict(teacher_logits=True, features=True)),
    ("smmix", {"switch_prob": 0.0}, {}),
    ("tdattenmix", {"switch_prob": 1.0}, dict(teacher_logits=True, features=True)),
    ("cutmix", {}, {}),
])
def test_square_mixers_ask_for_a_teacher_and_tokens_on_square_batches_only(name, options, wants):
    backbone = build_model("test_vit", K, 32, patch_size=8).eval()
    mixer = create_mixer(name, num_classes=K, seed=0, patch_size=8, **options) if name == "tdattenmix" else \
        create_mixer(name, num_classes=K, seed=0, **options)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    result = mixer(x, y, model=backbone)
    request = mixer.training_hooks().request(result)
    assert (request.teacher_logits, request.features, request.clean_logits) == \
        (wants.get("teacher_logits", False), wants.get("features", False), False)
    if name == "smmix" and request.teacher_logits:  # SMMix's own eval forward is reused as the teacher
        torch.testing.assert_close(request.kept_teacher, result.params["clean_logits"])
    assert not mixer.training_hooks(auxiliary_losses=False).request(result).teacher_logits


def test_token_head_only_for_vits_and_only_with_auxiliary_losses():
    vit, cnn = build_model("test_vit", K, 32, patch_size=8), build_model("test_resnet", K, 32)
    smmix = create_mixer("smmix", num_classes=K)
    assert isinstance(token_head_for(smmix, vit, K), nn.Linear)
    assert token_head_for(smmix, vit, K, square_losses=False) is None
    assert token_head_for(create_mixer("tdattenmix", num_classes=K, gaze_weight=1.0), cnn, K) is None
    assert token_head_for(create_mixer("cutmix", num_classes=K), vit, K) is None and token_head_for(None, vit, K) is None


def test_learned_mixer_hooks_drive_setup_losses_update_and_save(tmp_path):
    torch.manual_seed(0)
    backbone = build_model("test_resnet", K, 32)
    mixer = create_mixer("automix", num_classes=K, seed=0)
    hooks = mixer.training_hooks()
    hooks.setup(backbone, loader=[], augment=None, total_steps=10, device=torch.device("cpu"), state_dir=tmp_path)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    result = mixer(x, y)
    assert hooks.request(result) == ForwardRequest(clean_logits=True)  # AutoMix's one-hot CE on the clean batch
    logits = backbone(result.images).float()
    out = ForwardOutputs(images=x, labels=y, result=result, logits=logits, model=backbone, clean_logits=logits)
    assert set(hooks.losses(out)) == {"mix_block", "mask", "clean_ce"}
    hooks.save(tmp_path)
    assert (tmp_path / "mixer.pt").is_file()
    again = create_mixer("automix", num_classes=K).training_hooks()
    again.setup(backbone, loader=[], augment=None, total_steps=10, device=torch.device("cpu"), state_dir=tmp_path,
                resume=True)  # the saved Mix Block is read back
    for a, b in zip(mixer.block.state_dict().values(), again.mixer.block.state_dict().values()):
        torch.testing.assert_close(a, b)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_training_package_names_no_mixer():
    mixer_modules = {f"gazemix.mixers.{p.stem}" for p in (ROOT / "gazemix" / "mixers").glob("*.py")}
    mixer_modules |= {f"gazemix.learned.{p.stem}" for p in (ROOT / "gazemix" / "learned").glob("*.py")}
    classes = {node.name for p in (ROOT / "gazemix").glob("*/*.py") if p.parent.name in ("mixers", "learned")
               for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.ClassDef)}
    for path in (ROOT / "gazemix" / "training").glob("*.py"):
        imported = {m for m in _imports(path) if m in mixer_modules or m in ("gazemix.mixers", "gazemix.learned")}
        assert not imported, f"{path.name} imports {imported}"
        tree = ast.parse(path.read_text())
        named = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} & classes
        assert not named, f"{path.name} names mixer classes {named}"
