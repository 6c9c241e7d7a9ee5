"""Backend dispatch: what `auto` picks, the errors that list every rejected backend, the Triton capability checks,
and the model config's `kernels` field."""

import pytest
import torch

from vlbert_fast.config import ModelConfig
from vlbert_fast.ops import REGISTRY, BackendNotSupported, box_geometry_embedding, dispatch, fused_embedding
from vlbert_fast.ops.dispatch import Backend, Op, triton_reasons

from .streams import op_args, random_visual, random_weights, token_stream


def fake_op(fast_reasons=(), fast_skip=(), slow_reasons=()):
    return Op(
        "fake",
        [
            Backend("fast", lambda x: ("fast", x), lambda x: list(fast_reasons), auto_skip=lambda x: list(fast_skip)),
            Backend("slow", lambda x: ("slow", x), lambda x: list(slow_reasons)),
        ],
    )


def test_auto_takes_the_first_backend_that_can_run():
    assert fake_op()(1) == ("fast", 1)
    assert fake_op(fast_reasons=["no GPU"])(1) == ("slow", 1)


def test_auto_passes_over_a_skipped_backend_but_falls_back_to_it():
    assert fake_op(fast_skip=["interpreted"])(1) == ("slow", 1)
    assert fake_op(fast_skip=["interpreted"], slow_reasons=["too big"])(1) == ("fast", 1)
    assert fake_op(fast_skip=["interpreted"])(1, backend="fast") == ("fast", 1)  # explicit: skip does not apply


def test_errors_list_every_rejected_backend_and_why():
    with pytest.raises(BackendNotSupported, match=r"no backend can run these inputs:\n  fast: no GPU\n  slow: too big"):
        fake_op(fast_reasons=["no GPU"], slow_reasons=["too big"])(1)
    with pytest.raises(BackendNotSupported, match="backend 'fast' cannot run these inputs: no GPU; fp64"):
        fake_op(fast_reasons=["no GPU", "fp64"])(1, backend="fast")
    with pytest.raises(
        BackendNotSupported, match=r"unknown backend 'native'; choose one of \['auto', 'fast', 'slow'\]"
    ):
        fake_op()(1, backend="native")


def test_triton_reasons_name_the_tensor_and_the_problem(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    ok = torch.zeros(2)
    assert triton_reasons({"a": ok, "b": None}) == []
    assert triton_reasons({"a": ok, "idx": torch.zeros(2, dtype=torch.long)}) == []
    assert triton_reasons({"x": ok.double()}) == [
        "x: dtype torch.float64 is not supported (supported: torch.float32, torch.float16, torch.bfloat16)"
    ]
    assert "x: bfloat16 gives wrong results in the Triton interpreter" in triton_reasons({"x": ok.bfloat16()})[0]
    reasons = triton_reasons({"a": ok, "m": torch.zeros(2, device="meta")})
    assert any("different devices (a on cpu, m on meta)" in r for r in reasons)
    assert any("device meta is not supported" in r for r in reasons)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert triton_reasons({"a": ok}) == [
        "tensors are on the CPU: Triton runs on CUDA GPUs (or under TRITON_INTERPRET=1, for tests)"
    ]
    monkeypatch.setattr(dispatch, "triton_import_error", lambda: "ImportError: no triton")
    assert triton_reasons({"a": ok}) == ["triton is not importable (ImportError: no triton)"]


def test_ops_are_registered_with_their_backends():
    assert list(REGISTRY["fused_embedding"].backends) == ["triton", "reference"]
    assert list(REGISTRY["box_geometry_embedding"].backends) == ["triton", "reference"]


def test_auto_prefers_the_reference_on_cpu_and_explicit_triton_runs_interpreted():
    boxes, size = torch.tensor([[1.0, 2.0, 30.0, 40.0]]), torch.tensor([[50.0, 60.0]])
    geometry = REGISTRY["box_geometry_embedding"]
    assert geometry.select("auto", boxes, size, 16).name == "reference"
    assert geometry.select("triton", boxes, size, 16).name == "triton"
    stream = token_stream([(2, 1)])
    args = op_args(stream, random_visual(stream, 8), random_weights(8))
    assert REGISTRY["fused_embedding"].select("auto", *args).name == "reference"


def test_explicit_triton_on_unsupported_input_says_why():
    stream = token_stream([(2, 1)])
    args = op_args(stream, random_visual(stream, 8, dtype=torch.float64), random_weights(8, dtype=torch.float64))
    with pytest.raises(
        BackendNotSupported, match=r"fused_embedding: backend 'triton'.*weights\.word: dtype torch\.float64"
    ):
        fused_embedding(*args, backend="triton")
    with pytest.raises(BackendNotSupported, match="boxes: dtype torch.float64"):
        box_geometry_embedding(torch.zeros(1, 4, dtype=torch.float64), torch.ones(1, 2), dim=16, backend="triton")


def test_hidden_size_above_the_fused_maximum_is_declared():
    from vlbert_fast.kernels.utils import MAX_FUSED_HIDDEN

    hidden = MAX_FUSED_HIDDEN + 8
    stream = token_stream([(1, 0)], vocab=1)
    w = random_weights(hidden, vocab=1, positions=3, requires_grad=False)
    reasons = REGISTRY["fused_embedding"].not_supported_reasons(*op_args(stream, torch.zeros(0, hidden), w))
    assert reasons["triton"] == [f"hidden size {hidden} is above the fused kernel's maximum {MAX_FUSED_HIDDEN}"]
    assert reasons["reference"] == []


def test_config_kernels_field_is_validated():
    assert ModelConfig().kernels == "auto"
    assert ModelConfig(kernels="triton").kernels == "triton"
    with pytest.raises(ValueError, match="kernels must be one of auto, reference, triton, found 'cuda'"):
        ModelConfig(kernels="cuda")
