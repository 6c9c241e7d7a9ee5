"""`vlbert-fast attention-maps`: from random init or saved weights (state-dict file, DeepSpeed layout), for a
caption + image id of a synthetic world, writes one PNG per layer and head and the raw probabilities, which are the
reference path's."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vlbert_fast.cli import main
from vlbert_fast.config import ModelConfig, RunConfig, SynthConfig, load_config
from vlbert_fast.data import collate
from vlbert_fast.data.synth import generate
from vlbert_fast.model import VLBertForPretraining
from vlbert_fast.model.attention_heatmaps import attention_probs, build_samples


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cfg = SynthConfig(train_images=6, val_images=2, corpus_lines=5, max_objects=3, seed=5)
    return generate(cfg, tmp_path_factory.mktemp("maps") / "world")


def first_val_image(world):
    line = (world / "cc_val.jsonl").read_text().splitlines()[0]
    return json.loads(line)["image"].split("/")[-1].removesuffix(".png")


def test_random_init_writes_every_layer_and_head(world, tmp_path, capsys):
    image_id = first_val_image(world)
    args = ["attention-maps", "--out", str(tmp_path), "--image-id", image_id, "--caption", "a red circle",
            f"data.root={world}", "model.num_hidden_layers=3"]  # fmt: skip
    assert main(args) == 0
    folder = tmp_path / f"0_{image_id}"
    data = np.load(folder / "attention.npz")
    probs, tokens = data["probs"], list(data["tokens"])
    regions = data["boxes"].shape[0]
    assert tokens[:5] == ["[CLS]", "a", "red", "circle", "[SEP]"] and tokens[-1] == "[END]"
    assert probs.shape == (3, 4, 5 + regions + 1, 5 + regions + 1)  # the default model: 4 heads
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert pngs == [f"layer{layer:02d}_head{head:02d}.png" for layer in range(3) for head in range(4)]
    with Image.open(folder / "layer02_head03.png") as image:
        assert image.mode == "RGB" and min(image.size) >= 12 * probs.shape[-1]
    assert "random initialisation" in capsys.readouterr().out


@pytest.mark.parametrize("layout", ["state_dict", "deepspeed"])
def test_saved_weights_give_the_reference_paths_probabilities(world, tmp_path, layout):
    torch.manual_seed(7)
    model = VLBertForPretraining(ModelConfig()).eval()
    torch.nn.init.normal_(model.vlbert.encoder.layers[1].attention.qkv.weight, std=0.3)  # sharper than at init
    if layout == "state_dict":
        path = tmp_path / "weights.pt"
        torch.save(model.state_dict(), path)
    else:
        path = tmp_path / "checkpoints"
        (path / "step9").mkdir(parents=True)
        (path / "latest").write_text("step9")
        torch.save({"module": model.state_dict()}, path / "step9" / "mp_rank_00_model_states.pt")
    out = tmp_path / "maps"
    args = ["attention-maps", "--out", str(out), "--checkpoint", str(path), f"data.root={world}"]
    assert main(args) == 2  # pickled and made by hand: no manifest of ours, so only when trusted
    assert main([*args, "--trust-foreign"]) == 0
    (folder,) = out.iterdir()
    got = np.load(folder / "attention.npz")["probs"]

    cfg = load_config(RunConfig, [], [f"data.root={world}"])
    _, _, [(_, _, example)] = build_samples(cfg, [], [])
    want = np.stack([p[0] for p in attention_probs(model, collate([example]))])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[1].max() > 0.3  # the sharpened layer really is the loaded one


def test_errors_name_what_is_wrong(world, tmp_path, capsys):
    assert main(["attention-maps", "--out", str(tmp_path), "--checkpoint", str(tmp_path / "none")]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    wrong = tmp_path / "wrong.pt"
    torch.save({"module": {"vlbert.embeddings.word_embeddings.weight": torch.zeros(3, 3)}}, wrong)
    args = ["attention-maps", "--out", str(tmp_path), "--checkpoint", str(wrong), f"data.root={world}"]
    assert main([*args, "--trust-foreign"]) == 2
    err = capsys.readouterr().err
    assert f"--checkpoint weights in {wrong} do not fit the model: missing [" in err
    assert "shape mismatch (found vs model) ['vlbert.embeddings.word_embeddings.weight: (3, 3) vs (1024, 128)']" in err
    args = ["attention-maps", "--out", str(tmp_path), "--image-id", "a", "--image-id", "b", "--caption", "x"]
    assert main([*args, f"data.root={world}"]) == 2
    assert "got 1 --caption for 2 --image-id" in capsys.readouterr().err
