"""`vlbert-fast convert-checkpoint` on state dicts built in the original VL-BERT's names and shapes: the converted
model computes what the original's formulas (written here from pretrain/modules/resnet_vlbert_for_pretraining_
multitask.py, common/visual_linguistic_bert.py, common/fast_rcnn.py, common/utils/bbox.py and
common/backbone/resnet/resnet.py) compute on the same tensors; the report; weights-only reading; e2e ResNets."""

import math

import pytest
import torch
import torch.nn.functional as F

from tests.shared import output_tail, run_cli
from vlbert_fast.data import Example, collate
from vlbert_fast.model import from_pretrained
from vlbert_fast.model.original_checkpoint import (
    OriginalCheckpointError,
    convert_original_checkpoint,
    read_original_checkpoint,
)
from vlbert_fast.ops import roi_align_reference

H, LAYERS, HEADS, INTER, VOCAB, POS, CLASSES = 48, 2, 4, 96, 211, 64, 17
EPS_BERT, EPS_BN = 1e-12, 1e-5


# ---------------------------------------------------------------------------------------------------------------------
# a checkpoint in the original's names and shapes


def original_state(appearance: int = 40, seed: int = 0, e2e: bool = False) -> dict[str, torch.Tensor]:
    """The state dict of the original's ResNetVLBERTForPretrainingMultitask (names and shapes), random values."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    s = {
        "vlbert.word_embeddings.weight": r(VOCAB, H),
        "vlbert.end_embedding.weight": r(1, H),
        "vlbert.position_embeddings.weight": r(POS, H),
        "vlbert.token_type_embeddings.weight": r(3, H),
    }
    for ln in ("embedding_LayerNorm", "visual_ln_text", "visual_ln_object"):
        s[f"vlbert.{ln}.weight"], s[f"vlbert.{ln}.bias"] = 1 + r(H), r(H)
    for i in range(LAYERS):
        p = f"vlbert.encoder.layer.{i}."
        for name, (rows, cols) in {
            "attention.self.query": (H, H),
            "attention.self.key": (H, H),
            "attention.self.value": (H, H),
            "attention.output.dense": (H, H),
            "intermediate.dense": (INTER, H),
            "output.dense": (H, INTER),
        }.items():
            s[f"{p}{name}.weight"], s[f"{p}{name}.bias"] = r(rows, cols), r(rows)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            s[f"{p}{ln}.weight"], s[f"{p}{ln}.bias"] = 1 + r(H), r(H)
    m = "vlbert.mlm_head.predictions."
    s[f"{m}transform.dense.weight"], s[f"{m}transform.dense.bias"] = r(H, H), r(H)
    s[f"{m}transform.LayerNorm.weight"], s[f"{m}transform.LayerNorm.bias"] = 1 + r(H), r(H)
    s[f"{m}bias"] = r(VOCAB)
    s[f"{m}decoder.weight"] = s["vlbert.word_embeddings.weight"]  # tied
    s["vlbert.mvrc_head.transform.dense.weight"], s["vlbert.mvrc_head.transform.dense.bias"] = r(H, H), r(H)
    s["vlbert.mvrc_head.region_cls_pred.weight"], s["vlbert.mvrc_head.region_cls_pred.bias"] = r(CLASSES, H), r(CLASSES)
    s["object_linguistic_embeddings.weight"] = r(1, H)
    s["object_mask_word_embedding.weight"] = r(1, H)
    s["aux_text_visual_embedding.weight"] = r(1, H)
    if not e2e:
        s["object_mask_visual_embedding.weight"] = r(1, appearance)
    s["image_feature_extractor.obj_downsample.1.weight"] = r(H, 2048 + appearance, scale=0.05)
    s["image_feature_extractor.obj_downsample.1.bias"] = r(H)
    if e2e:
        s.update(original_resnet50(g))
    return s


def original_resnet50(g: torch.Generator) -> dict[str, torch.Tensor]:
    """The original's e2e ResNet-50 C4 (backbone layer1-3) and dilated res5 (roi_head_feature_extractor, and again
    as head.0), BatchNorms with running statistics."""
    s = {}

    def conv(name, c_out, c_in, k):
        s[name] = torch.randn(c_out, c_in, k, k, generator=g) * math.sqrt(2.0 / (c_in * k * k)) * 0.5

    def bn(name, c):
        s[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        s[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)
        s[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=g)
        s[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=g)
        s[f"{name}.num_batches_tracked"] = torch.tensor(1000)

    b = "image_feature_extractor.backbone."
    conv(f"{b}conv1.weight", 64, 3, 7)
    bn(f"{b}bn1", 64)
    c_in = 64
    stages = [(f"{b}layer1.", 64, 3), (f"{b}layer2.", 128, 4), (f"{b}layer3.", 256, 6)]
    stages.append(("image_feature_extractor.roi_head_feature_extractor.", 512, 3))
    for prefix, planes, blocks in stages:
        for k in range(blocks):
            p = f"{prefix}{k}."
            conv(f"{p}conv1.weight", planes, c_in if k == 0 else planes * 4, 1)
            bn(f"{p}bn1", planes)
            conv(f"{p}conv2.weight", planes, planes, 3)
            bn(f"{p}bn2", planes)
            conv(f"{p}conv3.weight", planes * 4, planes, 1)
            bn(f"{p}bn3", planes * 4)
            if k == 0:
                conv(f"{p}downsample.0.weight", planes * 4, c_in, 1)
                bn(f"{p}downsample.1", planes * 4)
        c_in = planes * 4
    res5 = "image_feature_extractor.roi_head_feature_extractor."
    s.update({"image_feature_extractor.head.0." + k.removeprefix(res5): v for k, v in s.items() if k.startswith(res5)})
    return s


def save_original(path, state: dict[str, torch.Tensor], prefix: str = "module.") -> None:
    """As the original's Checkpoint callback saves: state_dict (of the DDP module), optimizer, validation_monitor."""
    optimizer = {"state": {0: {"step": 3, "exp_avg": torch.zeros(2)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]}
    checkpoint = {
        "state_dict": {prefix + k: v for k, v in state.items()},
        "optimizer": optimizer,
        "validation_monitor": {"best_epoch": 2, "best_val": 0.71},
    }
    torch.save(checkpoint, path)


# ---------------------------------------------------------------------------------------------------------------------
# the original's formulas


def layer_norm(x, s, name, eps=EPS_BERT):
    return F.layer_norm(x, (x.shape[-1],), s[f"{name}.weight"], s[f"{name}.bias"], eps)


def linear(x, s, name):
    return x @ s[f"{name}.weight"].T + s[f"{name}.bias"]


def coordinate_embeddings(boxes, w, h, dim=256):
    """common/utils/bbox.py: centre x/y, width, height over the image size x 100; sin then cos per coordinate."""
    centre = torch.stack(
        [
            (boxes[:, 0] + boxes[:, 2]) / 2,
            (boxes[:, 1] + boxes[:, 3]) / 2,
            boxes[:, 2] - boxes[:, 0],
            boxes[:, 3] - boxes[:, 1],
        ],
        1,
    )
    pos = centre / torch.tensor([w, h, w, h]) * 100
    dim_mat = 1000 ** (torch.arange(dim, dtype=torch.float32) / dim)
    angles = pos[:, :, None] / dim_mat
    return torch.cat([angles.sin(), angles.cos()], -1).reshape(boxes.shape[0], -1)


def object_reps(s, boxes, appearance, w, h, ops=None):
    """fast_rcnn.py's obj_downsample on concat(geometry, appearance), masked appearance replaced first."""
    if ops is not None:
        appearance = torch.where(ops[:, None], s["object_mask_visual_embedding.weight"][0], appearance)
    x = torch.cat([coordinate_embeddings(boxes, w, h), appearance], -1)
    return torch.relu(linear(x, s, "image_feature_extractor.obj_downsample.1"))


def bert_encoder(s, x):
    """BERT's encoder (external/pytorch_pretrained_bert) on one row [T, H], separate query/key/value, erf GELU."""
    t, d = x.shape[0], H // HEADS
    for i in range(LAYERS):
        p = f"vlbert.encoder.layer.{i}."

        def heads(y):
            return y.view(t, HEADS, d).transpose(0, 1)

        q, k, v = (heads(linear(x, s, f"{p}attention.self.{n}")) for n in ("query", "key", "value"))
        probs = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d), -1)
        context = (probs @ v).transpose(0, 1).reshape(t, H)
        attended = layer_norm(linear(context, s, f"{p}attention.output.dense") + x, s, f"{p}attention.output.LayerNorm")
        inter = F.gelu(linear(attended, s, f"{p}intermediate.dense"))
        x = layer_norm(linear(inter, s, f"{p}output.dense") + attended, s, f"{p}output.LayerNorm")
    return x


def embed_row(s, text_vl, objects_vl, types_text):
    """visual_linguistic_bert.py's embedding of one row: text, objects, [END]; types 0/2; positions i, T, T + 1."""
    t, r = text_vl.shape[0], objects_vl.shape[0]
    vl = torch.cat([text_vl, objects_vl, s["vlbert.end_embedding.weight"]])
    types = torch.tensor(types_text + [2] * (r + 1))
    positions = torch.cat([torch.arange(t), torch.full((r,), t), torch.tensor([t + 1])])
    x = vl + s["vlbert.position_embeddings.weight"][positions] + s["vlbert.token_type_embeddings.weight"][types]
    return layer_norm(x, s, "vlbert.embedding_LayerNorm")


def original_pretraining_forward(s, ids, boxes, appearance, w, h, ops, aux_ids, obj_reps=None):
    """The multitask module on one caption row and one text-only row: hidden states of both rows, the caption
    row's MLM logits (text positions) and masked-RoI logits (RoI positions), and the text-only row's MLM logits."""
    if obj_reps is None:
        obj_reps = object_reps(s, boxes, appearance, w, h, ops)
    words = s["vlbert.word_embeddings.weight"]
    text_vl = words[ids] + layer_norm(obj_reps[0].expand(len(ids), H), s, "vlbert.visual_ln_text")
    object_words = torch.where(
        ops[:, None], s["object_mask_word_embedding.weight"][0], s["object_linguistic_embeddings.weight"][0]
    )
    objects_vl = object_words + layer_norm(obj_reps, s, "vlbert.visual_ln_object")
    caption = bert_encoder(s, embed_row(s, text_vl, objects_vl, [0] * len(ids)))
    aux_vl = words[aux_ids] + layer_norm(s["aux_text_visual_embedding.weight"], s, "vlbert.visual_ln_text")
    text_only = bert_encoder(s, embed_row(s, aux_vl, torch.zeros(0, H), [0] * len(aux_ids)))

    def mlm(x):
        m = "vlbert.mlm_head.predictions."
        y = layer_norm(F.gelu(linear(x, s, f"{m}transform.dense")), s, f"{m}transform.LayerNorm")
        return y @ words.T + s[f"{m}bias"]

    mvrc = F.gelu(linear(caption[len(ids) : len(ids) + len(boxes)], s, "vlbert.mvrc_head.transform.dense"))
    return {
        "caption": caption,
        "text_only": text_only,
        "mlm": mlm(caption[: len(ids)]),
        "mlm_text_only": mlm(text_only[: len(aux_ids)]),
        "mvrc": linear(mvrc, s, "vlbert.mvrc_head.region_cls_pred"),
    }


def original_res50_appearance(s, image, boxes):
    """fast_rcnn.py end to end: the ResNet C4 trunk, RoIAlign 14 x 14 at 1/16 (sampling 1, not aligned), the dilated
    res5 and a 14 x 14 average pool; BatchNorm in eval mode (frozen) with eps 1e-5, stride in the 1x1 convolution."""

    def bn(x, name):
        scale = s[f"{name}.weight"] / torch.sqrt(s[f"{name}.running_var"] + EPS_BN)
        return x * scale[:, None, None] + (s[f"{name}.bias"] - s[f"{name}.running_mean"] * scale)[:, None, None]

    def block(x, p, stride, dilation, first):
        out = torch.relu(bn(F.conv2d(x, s[f"{p}conv1.weight"], stride=stride), f"{p}bn1"))
        out = torch.relu(bn(F.conv2d(out, s[f"{p}conv2.weight"], padding=dilation, dilation=dilation), f"{p}bn2"))
        out = bn(F.conv2d(out, s[f"{p}conv3.weight"]), f"{p}bn3")
        residual = bn(F.conv2d(x, s[f"{p}downsample.0.weight"], stride=stride), f"{p}downsample.1") if first else x
        return torch.relu(out + residual)

    b = "image_feature_extractor.backbone."
    x = torch.relu(bn(F.conv2d(image, s[f"{b}conv1.weight"], stride=2, padding=3), f"{b}bn1"))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    for layer, blocks, stride in ((1, 3, 1), (2, 4, 2), (3, 6, 2)):
        for k in range(blocks):
            x = block(x, f"{b}layer{layer}.{k}.", stride if k == 0 else 1, 1, k == 0)
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], 1)
    x = roi_align_reference(x, rois, (14, 14), 1 / 16, 1, False)
    for k in range(3):
        x = block(x, f"image_feature_extractor.roi_head_feature_extractor.{k}.", 1, 2, k == 0)
    return x.mean(dim=(2, 3))


# ---------------------------------------------------------------------------------------------------------------------
# the tests


def caption_inputs(appearance: int):
    g = torch.Generator().manual_seed(7)
    boxes = torch.tensor([[0.0, 0.0, 63.0, 47.0], [4.0, 5.0, 30.0, 40.0], [20.0, 2.0, 60.0, 22.0], [1, 1, 9, 9]])
    ids = torch.tensor([2, 17, 45, 9, 101, 3])
    ops = torch.tensor([False, True, False, False])
    return ids, boxes, torch.rand(len(boxes), appearance, generator=g), 64.0, 48.0, ops, torch.tensor([5, 88, 13, 7])


def our_outputs(model, ids, boxes, appearance, w, h, ops, aux_ids, image=None):
    caption = Example(
        input_ids=ids,
        boxes=boxes,
        image_size=(w, h),
        region_features=appearance if image is None else None,
        region_masked=ops,
        image=image,
    )
    batch = collate([caption, Example(input_ids=aux_ids)])
    with torch.no_grad():
        hidden = model.vlbert(batch)
        t, r = len(ids), len(boxes)
        words = model.vlbert.embeddings.word_embeddings.weight
        return {
            "caption": hidden[0, : t + r + 1],
            "text_only": hidden[1, : len(aux_ids) + 1],
            "mlm": model.mlm_head(hidden[0, :t], words),
            "mlm_text_only": model.mlm_head(hidden[1, : len(aux_ids)], words),
            "mvrc": model.roi_head(hidden[0, t : t + r]),
        }, batch


def test_converted_checkpoint_computes_the_original_formulas(tmp_path):
    state = original_state()
    save_original(tmp_path / "vl-bert-tiny-prec.model", state)
    report = convert_original_checkpoint(
        tmp_path / "vl-bert-tiny-prec.model", tmp_path / "out", [f"model.num_attention_heads={HEADS}"]
    )
    model = from_pretrained(tmp_path / "out")
    cfg = model.cfg
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, cfg.vocab_size) == (H, LAYERS, INTER, VOCAB)
    assert (cfg.visual_feature_dim, cfg.num_roi_classes, cfg.max_position_embeddings) == (40, CLASSES, POS)
    assert not cfg.visual.end_to_end and cfg.hidden_dropout_prob == 0.1
    inputs = caption_inputs(40)
    ours, _ = our_outputs(model, *inputs)
    want = original_pretraining_forward(state, *inputs)
    for key, value in want.items():
        torch.testing.assert_close(ours[key], value, rtol=1e-4, atol=2e-5, msg=key)
    # every source tensor is accounted for: mapped, or checked (the tied decoder); nothing new, nothing unused
    assert report.new == [] and report.unused == [] and report.checked == ["vlbert.mlm_head.predictions.decoder.weight"]
    assert len(report.mapped) == len(model.state_dict())


def test_projection_columns_swap_and_vectors_flatten(tmp_path):
    state = original_state()
    save_original(tmp_path / "a.model", state, prefix="")  # a bare (non-DDP) state dict loads the same
    convert_original_checkpoint(tmp_path / "a.model", tmp_path / "out", ["num_attention_heads=4"])
    ours = from_pretrained(tmp_path / "out").state_dict()
    w = state["image_feature_extractor.obj_downsample.1.weight"]
    assert torch.equal(ours["vlbert.region_encoder.projection.weight"][:, :40], w[:, 2048:])  # appearance
    assert torch.equal(ours["vlbert.region_encoder.projection.weight"][:, 40:], w[:, :2048])  # geometry
    assert torch.equal(ours["vlbert.embeddings.end_embedding"], state["vlbert.end_embedding.weight"][0])
    assert torch.equal(ours["vlbert.region_encoder.mask_appearance"], state["object_mask_visual_embedding.weight"][0])
    q, k, v = (state[f"vlbert.encoder.layer.1.attention.self.{n}.weight"] for n in ("query", "key", "value"))
    assert torch.equal(ours["vlbert.encoder.layers.1.attention.qkv.weight"], torch.cat([q, k, v]))


def test_the_command_reports_and_refuses(tmp_path):
    state = original_state()
    del state["aux_text_visual_embedding.weight"]  # pretrained without the text corpus
    state["final_mlp.1.weight"] = torch.zeros(3, H)  # a task head the pretraining model has no place for
    save_original(tmp_path / "v.model", state)
    out = tmp_path / "out"
    result = run_cli(
        ["convert-checkpoint", str(tmp_path / "v.model"), str(out), "model.num_attention_heads=4"],
        tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, output_tail(result)
    text = result.stdout
    assert "tensors mapped" in text and "vlbert.embeddings.text_visual_embedding" in text
    assert "source tensors not used: 1" in text and "final_mlp.1.weight" in text
    assert "vlbert.region_encoder.projection.weight <- image_feature_extractor.obj_downsample.1.weight" in text
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    again = run_cli(["convert-checkpoint", str(tmp_path / "v.model"), str(out)], tmp_path, timeout=300)
    assert again.returncode == 2 and "already holds an export" in again.stderr
    missing = run_cli(["convert-checkpoint", str(tmp_path / "none.model"), str(tmp_path / "o2")], tmp_path, timeout=300)
    assert missing.returncode == 2 and "no such file" in missing.stderr


class Payload:
    """Unpickling this would run code (its __reduce__); a weights-only load refuses it."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_weights_only_reading(tmp_path):
    torch.save(
        {"state_dict": {"module.vlbert.word_embeddings.weight": torch.zeros(2, 2)}, "x": Payload()}, tmp_path / "p"
    )
    with pytest.raises(OriginalCheckpointError, match="cannot be read weights-only"):
        read_original_checkpoint(tmp_path / "p")
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, tmp_path / "q")
    with pytest.raises(OriginalCheckpointError, match="not a VL-BERT checkpoint"):
        read_original_checkpoint(tmp_path / "q")
    state = original_state()
    state["vlbert.mlm_head.predictions.decoder.weight"] = state["vlbert.word_embeddings.weight"] + 1
    save_original(tmp_path / "untied.model", state)
    with pytest.raises(OriginalCheckpointError, match="tied"):
        convert_original_checkpoint(tmp_path / "untied.model", tmp_path / "o", ["num_attention_heads=4"])


def test_bert_pooler_added_for_vcr(tmp_path, tiny_cfg):
    from tests.model.helpers import random_hf_bert
    from vlbert_fast.model.vlbert_finetuning import pretraining_state
    from vlbert_fast.tasks.vcr.head import VCRHead, init_pooler

    cfg = tiny_cfg.__class__(**{**tiny_cfg.__dict__, "hidden_size": H, "vocab_size": VOCAB})
    hf = random_hf_bert(cfg)
    hf.save_pretrained(tmp_path / "bert")
    save_original(tmp_path / "v.model", original_state())
    convert_original_checkpoint(
        tmp_path / "v.model", tmp_path / "out", ["num_attention_heads=4"], bert=tmp_path / "bert"
    )
    exported = from_pretrained(tmp_path / "out")
    assert exported.cfg.with_pooler and torch.equal(exported.pooler.dense.weight, hf.bert.pooler.dense.weight)
    head = VCRHead(H)
    init_pooler(head, pretraining_state(tmp_path / "out", exported.cfg))
    assert torch.equal(head.pooler.bias, hf.bert.pooler.dense.bias)


def test_e2e_checkpoint_resnet_becomes_our_visual_branch(tmp_path):
    torch.manual_seed(0)
    state = original_state(appearance=2048, e2e=True)
    save_original(tmp_path / "vl-bert-tiny-e2e.model", state)
    report = convert_original_checkpoint(
        tmp_path / "vl-bert-tiny-e2e.model", tmp_path / "out", ["num_attention_heads=4"]
    )
    model = from_pretrained(tmp_path / "out")
    visual = model.cfg.visual
    assert visual.end_to_end and (visual.depth, visual.width, visual.frozen_stages) == (50, 64, 2)
    assert visual.frozen_bn and visual.stride_in_1x1 and visual.res5_dilated and visual.pretrained == ""
    ours = model.state_dict()
    assert torch.equal(
        ours["vlbert.visual.layer4.0.conv2.weight"],
        state["image_feature_extractor.roi_head_feature_extractor.0.conv2.weight"],
    )
    assert torch.equal(
        ours["vlbert.visual.layer3.5.bn3.running_var"],
        state["image_feature_extractor.backbone.layer3.5.bn3.running_var"],
    )
    assert all(k.endswith("num_batches_tracked") for k in report.unused)  # our frozen BatchNorms keep no counter
    assert len([k for k in report.checked if k.startswith("image_feature_extractor.head.0.")]) > 0
    assert "vlbert.region_encoder.mask_appearance" in report.new  # e2e masks pixels: the original has no such vector
    # the converted model sees a 64 x 48 image as the original's formulas do
    image = torch.randn(1, 3, 48, 64, generator=torch.Generator().manual_seed(3))
    ids, boxes, _, w, h, _, aux_ids = caption_inputs(2048)
    ops = torch.zeros(len(boxes), dtype=torch.bool)
    appearance = original_res50_appearance(state, image, boxes)
    reps = object_reps(state, boxes, appearance, w, h)
    ours_out, batch = our_outputs(model, ids, boxes, None, w, h, ops, aux_ids, image=image[0])
    with torch.no_grad():
        torch.testing.assert_close(model.vlbert.region_features(batch), reps, rtol=1e-4, atol=1e-4)
    want = original_pretraining_forward(state, ids, boxes, None, w, h, ops, aux_ids, obj_reps=reps)
    for key in ("caption", "mvrc"):
        torch.testing.assert_close(ours_out[key], want[key], rtol=1e-4, atol=1e-4, msg=key)
