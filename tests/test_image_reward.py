"""Image Reward through the real `image-reward` model classes, with tiny random weights (no downloads)."""
from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from optimizer.metrics import MetricUnavailable, QualityMetric, make_metric
from optimizer.metrics.image_reward_compat import VisionConfig, build_image_reward, import_image_reward

WORDS = ["a", "an", "the", "red", "blue", "green", "cat", "dog", "bird", "on", "in", "under", "mat", "tree",
         "house", "painting", "of", "small", "large", "sky", "at", "night", "photo"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
TINY_VISION = VisionConfig(image_size=32, patch_size=16, width=128, depth=1, mlp_ratio=4.0)
PROMPTS = ["a red cat on the mat", "a photo of a blue bird", "a small house under the sky at night",
           "a painting of a green tree", "a large dog in the house"]


def _med_config(vocab_size: int, hidden: int = 768, layers: int = 1, intermediate: int = 64) -> dict:
    # hidden 768: ImageReward's reward head is MLP(768) on the text encoder's [CLS] feature.
    return {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "hidden_size": hidden, "initializer_range": 0.02,
            "intermediate_size": intermediate, "layer_norm_eps": 1e-12, "max_position_embeddings": 40,
            "model_type": "bert", "num_attention_heads": 12, "num_hidden_layers": layers, "pad_token_id": 0,
            "type_vocab_size": 2, "vocab_size": vocab_size, "encoder_width": 768, "add_cross_attention": True}


def _write_tokenizer(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return folder


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights large enough that image and prompt visibly move the score (ImageReward's own init of the
    reward head is ~1/769 per layer, which makes every random-weight score the same)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) / module.in_features ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))
            elif isinstance(module, torch.nn.Embedding):
                module.weight.copy_(torch.randn(module.weight.shape, generator=g))
        for name, p in model.named_parameters():
            if name.endswith(("pos_embed", "cls_token")):
                p.copy_(torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("image_reward")
    tokenizer = _write_tokenizer(root / "bert-base-uncased")
    med_config = root / "med_config.json"
    med_config.write_text(json.dumps(_med_config(len(VOCAB) + 2)))  # + BLIP's [DEC] and [ENC]
    model = build_image_reward(med_config, tokenizer, TINY_VISION)
    _randomize(model, seed=0)
    weights = root / "ImageReward.pt"
    torch.save(model.state_dict(), weights)
    return {"weights": weights, "med_config": med_config, "tokenizer": tokenizer}


def _images(n: int, size=(48, 40), seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Image Reward tried to reach the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_scores_a_batch_with_the_real_model_classes(tiny_files, no_network):
    metric = make_metric("image_reward", device="cpu", batch_size=2, **tiny_files)
    assert isinstance(metric, QualityMetric)
    assert (metric.name, metric.short_name, metric.needs_reference) == ("image_reward", "IR", False)
    assert type(metric.model).__module__ == "ImageReward.ImageReward"
    assert type(metric.model.blip.text_encoder).__module__ == "ImageReward.models.BLIP.med"

    images = _images(5)
    scores = metric.score(images, PROMPTS)
    assert scores.shape == (5,) and scores.dtype == np.float64
    assert np.isfinite(scores).all()
    assert len(set(np.round(scores, 6))) == 5, scores  # different images (and prompts) score differently

    np.testing.assert_array_equal(metric.score(images, PROMPTS), scores)  # deterministic
    reloaded = make_metric("image_reward", device="cpu", batch_size=16, **tiny_files)
    np.testing.assert_allclose(reloaded.score(images, PROMPTS), scores, rtol=1e-5, atol=1e-6)


def test_batched_scores_equal_image_rewards_own_per_image_score(tiny_files):
    metric = make_metric("image_reward", device="cpu", batch_size=2, **tiny_files)
    images = _images(3, seed=1)
    batched = metric.score(images, PROMPTS[:3])
    with torch.inference_mode():
        single = [metric.model.score(prompt, image) for prompt, image in zip(PROMPTS[:3], images)]
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)


def test_the_prompt_changes_the_score(tiny_files):
    metric = make_metric("image_reward", device="cpu", **tiny_files)
    image = _images(1, seed=2)[0]
    scores = metric.score([image, image], ["a red cat on the mat", "a painting of a green tree at night"])
    assert scores[0] != pytest.approx(scores[1], abs=1e-6)
    assert metric.score([], []).shape == (0,)
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        metric.score([image, image], ["a cat"])


def test_tokenizer_is_the_local_folder_with_blips_special_tokens(tiny_files):
    metric = make_metric("image_reward", device="cpu", **tiny_files)
    tokenizer = metric.model.blip.tokenizer
    assert tokenizer.convert_tokens_to_ids("[DEC]") == len(VOCAB)
    assert tokenizer.enc_token_id == len(VOCAB) + 1
    ids = tokenizer("A RED Cat zebra").input_ids  # lower-cased; unknown words -> [UNK]
    assert ids == [VOCAB.index(t) for t in ("[CLS]", "a", "red", "cat", "[UNK]", "[SEP]")]


def test_vision_size_is_read_from_the_checkpoint(tiny_files):
    state = torch.load(tiny_files["weights"], weights_only=True)
    assert VisionConfig.of_state_dict(state) == TINY_VISION


def test_real_checkpoint_shapes_build_imagerewards_own_architecture(tmp_path, monkeypatch):
    """With the real sizes (BERT-base text encoder), the vision size read from the state dict of
    ImageReward's own constructor (ViT-L/16, 224 px) rebuilds exactly that model (on the meta device)."""
    tokenizer = _write_tokenizer(tmp_path / "tok")
    med_config = tmp_path / "med_config.json"
    med_config.write_text(json.dumps(_med_config(30524, layers=12, intermediate=3072) | {"max_position_embeddings": 512}))
    linspace = torch.linspace  # the ViT reads its drop-path rates with .item(), which meta tensors cannot do
    monkeypatch.setattr(torch, "linspace", lambda *args, **kwargs: linspace(*args, **kwargs | {"device": "cpu"}))
    image_reward = import_image_reward()
    blip_pretrain = sys.modules["ImageReward.models.BLIP.blip_pretrain"]
    from optimizer.metrics.image_reward_compat import load_tokenizer
    original_tokenizer = blip_pretrain.init_tokenizer
    blip_pretrain.init_tokenizer = lambda: load_tokenizer(tokenizer)  # only the download is replaced here
    try:
        with torch.device("meta"):
            original = image_reward.ImageReward(med_config=str(med_config), device="cpu")
    finally:
        blip_pretrain.init_tokenizer = original_tokenizer
    state = original.state_dict()
    vision = VisionConfig.of_state_dict(state)
    assert vision == VisionConfig(image_size=224, patch_size=16, width=1024, depth=24, mlp_ratio=4.0)
    assert vision.heads == 16
    with torch.device("meta"):
        rebuilt = build_image_reward(med_config, tokenizer, vision)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in state.items()}
    assert rebuilt.blip.visual_encoder.blocks[0].attn.num_heads == 16


def _fake_comfyui(root: Path) -> Path:
    (root / "comfy").mkdir(parents=True)
    (root / "comfy" / "model_management.py").write_text("")
    (root / "main.py").write_text("")
    return root


def test_files_are_found_in_comfyuis_image_reward_folder(tiny_files, tmp_path, no_network):
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    folder = comfy / "models" / "image_reward"
    folder.mkdir(parents=True)
    for name in ("weights", "med_config"):
        (folder / tiny_files[name].name).symlink_to(tiny_files[name])
    (folder / "bert-base-uncased").symlink_to(tiny_files["tokenizer"], target_is_directory=True)
    metric = make_metric("image_reward", comfyui=comfy, device="cpu")
    assert np.isfinite(metric.score(_images(2), PROMPTS[:2])).all()


@pytest.mark.comfy
def test_inside_comfyui_registered_image_reward_folders_come_first(tiny_files, tmp_path, monkeypatch):
    import folder_paths
    registered = tmp_path / "extra" / "image_reward"
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "image_reward", ([str(registered)], set()))
    monkeypatch.delenv("COMFYUI_PATH", raising=False)  # folder_paths alone must be enough
    with pytest.raises(MetricUnavailable) as e:
        make_metric("image_reward")
    assert f"put it at {registered / 'ImageReward.pt'}" in str(e.value)
    registered.mkdir(parents=True)
    (registered / "ImageReward.pt").symlink_to(tiny_files["weights"])
    (registered / "med_config.json").symlink_to(tiny_files["med_config"])
    (registered / "bert-base-uncased").symlink_to(tiny_files["tokenizer"], target_is_directory=True)
    metric = make_metric("image_reward", device="cpu")
    assert np.isfinite(metric.score(_images(1), PROMPTS[:1])).all()


def test_missing_files_are_named_with_the_folder_to_put_them_in(tmp_path, monkeypatch):
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    with pytest.raises(MetricUnavailable) as e:
        make_metric("image_reward", comfyui=comfy)
    message = str(e.value)
    folder = comfy.resolve() / "models" / "image_reward"
    assert f"put it at {folder / 'ImageReward.pt'}" in message
    assert f"put it at {folder / 'med_config.json'}" in message
    assert f"put it at {folder / 'bert-base-uncased'}" in message
    assert "huggingface.co/THUDM/ImageReward" in message and "bert-base-uncased" in message

    # only the one that is missing is named
    folder.mkdir(parents=True)
    (folder / "med_config.json").write_text("{}")
    _write_tokenizer(folder / "bert-base-uncased")
    with pytest.raises(MetricUnavailable) as e:
        make_metric("image_reward", comfyui=comfy)
    assert "ImageReward.pt" in str(e.value) and "med_config.json" not in str(e.value)
    assert "vocab.txt" not in str(e.value)


def test_missing_files_without_any_comfyui_say_how_to_point_at_it(tmp_path, monkeypatch):
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)
    with pytest.raises(MetricUnavailable) as e:
        make_metric("image_reward", weights=tmp_path / "nope.pt")
    message = str(e.value)
    assert f"{tmp_path / 'nope.pt'} (given as --image-reward-weights) does not exist" in message
    assert "ComfyUI/models/image_reward/" in message and "COMFYUI_PATH" in message
    assert "med_config.json" in message and "bert-base-uncased" in message
    assert "--image-reward-config" in message and "--image-reward-tokenizer" in message


def test_an_empty_tokenizer_folder_or_a_corrupt_checkpoint_is_named(tiny_files, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MetricUnavailable, match=r"empty \(given as --image-reward-tokenizer\) has no vocab.txt"):
        make_metric("image_reward", **(tiny_files | {"tokenizer": tmp_path / "empty"}))
    corrupt = tmp_path / "ImageReward.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(MetricUnavailable, match=f"{corrupt}: not a readable PyTorch checkpoint"):
        make_metric("image_reward", **(tiny_files | {"weights": corrupt}))
    other = tmp_path / "other.pt"
    torch.save({"layer.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(MetricUnavailable, match="not an ImageReward checkpoint"):
        make_metric("image_reward", **(tiny_files | {"weights": other}))


def test_importing_image_reward_leaves_transformers_and_warnings_as_they_were():
    import warnings

    import transformers.modeling_utils as modeling_utils
    import_image_reward()
    for name in ("apply_chunking_to_forward", "find_pruneable_heads_and_indices", "prune_linear_layer"):
        assert not hasattr(modeling_utils, name)
    assert ("ignore", None, Warning, None, 0) not in warnings.filters
    with pytest.warns(UserWarning):
        warnings.warn("still shown", UserWarning)
