"""Batches without regions (only text-only rows, as when skip mode drops every image-text row of a micro batch) run
forward and backward in both layouts and on every kernel backend; every parameter gets a gradient (the visual ones an
exact zero, so ZeRO ranks reduce the same set; visual_ln_text and the learned aux vector, which text-only tokens add,
a real one), the padded and packed paths agree, and such batches train."""

import dataclasses

import pytest
import torch

from vlbert_fast.data import IGNORE_INDEX, collate
from vlbert_fast.data.collate import Example
from vlbert_fast.model import VLBertForPretraining

VISUAL_ONLY = ("region_encoder.", "object_word_embedding", "object_mask_word_embedding", "visual_ln_object")
TEXT_ONLY_VISUAL = ("text_visual_embedding", "visual_ln_text")  # a text-only token adds visual_ln_text(aux), as the
# original's text-only rows do (README, "The model, exactly")


def text_only_batch(seed: int = 0, lengths=(9, 6, 13)):
    gen = torch.Generator().manual_seed(seed)
    examples = []
    for n in lengths:
        ids = torch.randint(5, 211, (n,), generator=gen)
        labels = torch.full((n,), IGNORE_INDEX)
        labels[1:-1:3] = ids[1:-1:3]
        examples.append(Example(input_ids=ids, mlm_labels=labels))
    batch = collate(examples)
    assert batch.num_regions == 0
    return batch


@pytest.mark.parametrize("kernels", ["reference", "triton"])
@pytest.mark.parametrize("packed", [False, True])
def test_a_text_only_batch_runs_and_every_parameter_gets_a_gradient(tiny_cfg, packed, kernels):
    torch.manual_seed(0)
    model = VLBertForPretraining(dataclasses.replace(tiny_cfg, packed=packed, kernels=kernels))
    out = model(text_only_batch())
    assert set(out.losses) == {"mlm_text"} and torch.isfinite(out.loss)
    assert out.roi_logits.shape[0] == 0
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    visual = [p.grad for n, p in model.named_parameters() if any(key in n for key in VISUAL_ONLY)]
    assert visual and all(torch.count_nonzero(g) == 0 for g in visual)  # zeros: the update leaves them (AdamW aside)
    aux = [p.grad for n, p in model.named_parameters() if any(key in n for key in TEXT_ONLY_VISUAL)]
    assert len(aux) == 3 and torch.count_nonzero(aux[-1]) > 0  # visual_ln_text's shift: the text-only rows' own
    # visual part (the aux vector's gradient passes through the LayerNorm's gain, zero when it starts at 0)


def test_padded_and_packed_agree_on_a_text_only_batch(tiny_cfg):
    torch.manual_seed(0)
    padded = VLBertForPretraining(dataclasses.replace(tiny_cfg, packed=False))
    packed = VLBertForPretraining(dataclasses.replace(tiny_cfg, packed=True))
    packed.load_state_dict(padded.state_dict())
    batch = text_only_batch(3)
    a, b = padded(batch), packed(batch)
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-5, atol=1e-5)
    a.loss.backward()
    b.loss.backward()
    for (name, pa), pb in zip(padded.named_parameters(), packed.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("packed", [False, True])
def test_text_only_batches_train(tiny_cfg, packed):
    torch.manual_seed(0)
    model = VLBertForPretraining(
        dataclasses.replace(tiny_cfg, packed=packed, kernels="reference")
    )  # the interpreter is slow
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = text_only_batch(5)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        out = model(batch)
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
