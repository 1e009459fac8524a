"""Prompt upsampler and guardrails, offline on CPU with tiny models built from configs: the blocklist,
Aegis, the video safety filter and face pixelation each decide what they should, and the infer
command refuses blocked prompts and videos with exit status 3 and no file."""

import json

import numpy as np
import pytest
import torch
from helpers import infer_args

from nemo_cosmos.guardrails.aegis import Aegis, moderation_prompt, policy
from nemo_cosmos.guardrails.blocklist import Blocklist
from nemo_cosmos.guardrails.face_blur import FaceBlur, RetinaFace, priors
from nemo_cosmos.guardrails.video_filter import SafetyClassifier, VideoSafetyFilter
from nemo_cosmos.recipes.infer import main
from nemo_cosmos.text.upsampler import PromptUpsampler, clean_text, native_to_hf

TEMPLATE = "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"


def word_tokenizer(first_word: str, path, extra=()):
    """A word-level tokenizer whose id 0 is `first_word`; a model whose logits are all equal then
    always generates it (argmax picks the first)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [first_word, "<unk>", "</s>", "<pad>", *extra]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(dict.fromkeys(words))}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = TEMPLATE
    fast.save_pretrained(path)
    return fast


def constant_lm(cls_config, path=None, **cfg):
    """A tiny causal LM whose final norm is zero: every next-token logit equal."""
    from transformers import AutoModelForCausalLM

    config = cls_config(vocab_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096, **cfg)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.model.norm.weight.zero_()
    if path is not None:
        model.save_pretrained(path)
    return model


def make_aegis(root, verdict: str):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig

    base, adapter = root / f"aegis_{verdict}" / "base", root / f"aegis_{verdict}" / "adapter"
    word_tokenizer(verdict, base)
    model = constant_lm(LlamaConfig, base)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    return base, adapter


def make_safety_filter(folder, siglip_dim: int, unsafe_class: int = 0):
    classifier = SafetyClassifier(siglip_dim)
    with torch.no_grad():
        classifier.layers[6].weight.zero_()
        classifier.layers[6].bias.fill_(-5.0)
        classifier.layers[6].bias[unsafe_class] = 5.0
    folder.mkdir(parents=True)
    torch.save({"model": {f"network.{k}": v for k, v in classifier.state_dict().items()}}, folder / "safety_filter.pt")


def make_wordnet(nltk_data, nouns, exceptions):
    """A WordNet database of a few nouns in the files and formats NLTK's reader parses (what the
    guardrail download's blocklist/nltk_data holds in full)."""
    root = nltk_data / "corpora" / "wordnet"
    root.mkdir(parents=True)
    (root / "lexnames").write_text("00\tadj.all\t3\n")
    (root / "index.sense").write_text("")
    for pos, name in (("n", "noun"), ("v", "verb"), ("a", "adj"), ("r", "adv")):
        lemmas = sorted(nouns) if pos == "n" else []
        (root / f"index.{name}").write_text("".join(f"{w} {pos} 1 0 1 0 {i + 1:08d}  \n" for i, w in enumerate(lemmas)))
        (root / f"{name}.exc").write_text("".join(f"{k} {v}\n" for k, v in exceptions.items()) if pos == "n" else "")
        (root / f"data.{name}").write_text("")


@pytest.fixture(scope="module")
def guard(tmp_path_factory):
    """A Cosmos-1.0-Guardrail-shaped folder with tiny models, and variants that block."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    root = tmp_path_factory.mktemp("guardrail")
    g = root / "Cosmos-1.0-Guardrail"
    for sub, text in (("custom", "badword\ngrenade\nknife\ncorpse\n"), ("exact_match", "forbidden thing\n"),
                      ("whitelist", "grape\n")):
        (g / "blocklist" / sub).mkdir(parents=True)
        (g / "blocklist" / sub / "words").write_text(text)
    make_wordnet(g / "blocklist" / "nltk_data", nouns=["grenade", "knife", "corpse", "thing", "man"],
                 exceptions={"knives": "knife", "men": "man"})
    siglip = root / "siglip"
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)
    torch.manual_seed(0)
    SiglipModel(SiglipConfig(vision_config=vision, text_config=text)).save_pretrained(siglip)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(siglip)
    make_safety_filter(g / "video_content_safety_filter", 32)
    make_safety_filter(root / "unsafe_filter" / "video_content_safety_filter", 32, unsafe_class=2)
    net = RetinaFace()
    with torch.no_grad():
        for head in net.ClassHead:  # a detector that sees no face anywhere
            head.conv1x1.weight.zero_()
            head.conv1x1.bias.copy_(torch.tensor([5.0, -5.0, 5.0, -5.0]))
    (g / "face_blur_filter").mkdir()
    torch.save({f"module.{k}": v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()},
               g / "face_blur_filter" / "Resnet50_Final.pth")
    safe_base, safe_adapter = make_aegis(root, "safe")
    unsafe_base, unsafe_adapter = make_aegis(root, "unsafe")
    return dict(dir=g, siglip=siglip, safe=(safe_base, safe_adapter), unsafe=(unsafe_base, unsafe_adapter),
                unsafe_video=root / "unsafe_filter")


# -- pieces ---------------------------------------------------------------------------------------


def test_blocklist_decisions(guard):
    b = Blocklist.from_dir(str(guard["dir"] / "blocklist"))
    assert b.blocked("A robot stacks red cubes.") is None
    assert b.blocked("grape juice on a table") is None
    assert "blocklisted word" in b.blocked("a BADWORD appears")
    assert "blocklisted word" in b.blocked("two b4dwords")  # leetspeak and plural
    assert "forbidden thing" in b.blocked("the Forbidden Thing moves")
    assert "forbidden thing" in b.blocked("two forbidden things")  # WordNet: things -> thing
    assert "close to the blocked phrase 'forbidden thing'" in b.blocked("the forbiddden thing moves")  # a window
    # plurals WordNet knows, which a suffix rule gets wrong (grenad, kniv, corps)
    for prompt in ("a man holding grenades", "a drawer of knives", "a pile of corpses"):
        assert "blocklisted word" in b.blocked(prompt), prompt
    assert b.lemmas is not None and b.lemmas("knives") == "knife" and b.lemmas("men") == "man"
    assert b.blocked("   ") == "the prompt is empty"
    with pytest.raises(FileNotFoundError, match="blocklist word lists missing"):
        Blocklist.from_dir(str(guard["dir"] / "nowhere"))


def test_aegis_prompt_and_verdicts(guard):
    codes = [c for c, _, _ in policy()]
    assert codes == ["O1", "O2", "O3", "O4", "O5", "O6", "O7", "O8", "O10", "O11", "O12"]
    text = moderation_prompt("a robot dances")
    assert text.startswith("[INST] Task: Check if there is unsafe content") and "User: a robot dances\n\n" in text
    assert Aegis.from_pretrained(*map(str, guard["safe"])).blocked("a robot dances") is None
    assert Aegis.from_pretrained(*map(str, guard["unsafe"])).blocked("a robot dances") == "Aegis: unsafe content"
    assert Aegis._category("unsafe\nO3") == "criminal_planning content"


def test_video_filter_verdicts(guard):
    frames = np.random.default_rng(0).integers(0, 255, (3, 40, 48, 3), dtype=np.uint8)
    safe = VideoSafetyFilter.from_pretrained(str(guard["dir"] / "video_content_safety_filter"), str(guard["siglip"]))
    assert safe.blocked(frames) is None
    unsafe = VideoSafetyFilter.from_pretrained(str(guard["unsafe_video"] / "video_content_safety_filter"), str(guard["siglip"]))
    assert unsafe.blocked(frames) == "frame 0 classified as Violence"


def test_face_blur_pixelates_the_face_and_nothing_else(guard):
    blur = FaceBlur.from_pretrained(str(guard["dir"] / "face_blur_filter" / "Resnet50_Final.pth"))
    h, w = 96, 128
    anchors = priors(h, w)

    def anchor(cx, cy, size):
        target = torch.tensor([cx / w, cy / h, size / w, size / h])
        return int((anchors - target).abs().sum(dim=1).argmin())

    face, twin, tiny = anchor(60, 44, 32), anchor(60, 44, 32), anchor(20, 20, 16)
    near = anchor(68, 44, 32)  # overlaps the face by 75%: suppressed
    scores = torch.zeros(1, len(anchors))
    scores[0, [face, near, tiny]] = torch.tensor([0.99, 0.9, 0.95])
    blur.net.forward = lambda x: (torch.zeros(1, len(anchors), 4), scores)  # the network "sees" these
    frame = np.random.default_rng(1).integers(0, 255, (h, w, 3), dtype=np.uint8)
    found = blur.detect(frame)
    assert found[0] == (44, 28, 76, 60) and len(found) == 2  # the overlapping one is suppressed
    assert abs(found[1][2] - found[1][0] - 16) <= 1  # the small one is found...
    out = blur(frame[None])[0]
    inside = np.zeros((h, w), bool)
    inside[28:60, 44:76] = True
    assert np.array_equal(out[~inside], frame[~inside])  # ...but below 20x20 pixels: left alone
    assert not np.array_equal(out[inside], frame[inside])
    assert len(np.unique(out[28:60, 44:76].reshape(-1, 3), axis=0)) <= 25  # 5 x 5 blocks
    assert twin == face


def test_face_detector_checkpoint_must_fit(tmp_path):
    sd = RetinaFace().state_dict()
    sd.pop("ClassHead.0.conv1x1.bias")
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not fit RetinaFace-ResNet50: missing \\['ClassHead.0.conv1x1.bias'\\]"):
        FaceBlur.from_pretrained(str(tmp_path / "bad.pth"))


def test_clean_text_follows_the_reference():
    assert clean_text("Caption: A robot\narm - **Scene**  moves. ") == "A robot arm moves."
    assert clean_text('"- a quoted one"') == "a quoted one"
    long_header = "- **" + " ".join(["w"] * 10) + "** rest"
    assert clean_text(long_header) == " ".join(["w"] * 10) + "** rest"  # kept, then "- " and "**" stripped


def test_native_upsampler_checkpoint_maps_onto_mistral(tmp_path):
    from transformers import MistralConfig

    word_tokenizer("tall", tmp_path)
    hf = constant_lm(MistralConfig, head_dim=16)
    with torch.no_grad():
        hf.model.norm.weight.normal_()  # a non-degenerate model, to compare logits
    sd = hf.state_dict()
    renames = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
               "lm_head.weight": "output.weight"}
    for a, b in (("self_attn.q_proj", "attention.wq"), ("self_attn.k_proj", "attention.wk"),
                 ("self_attn.v_proj", "attention.wv"), ("self_attn.o_proj", "attention.wo"),
                 ("mlp.gate_proj", "feed_forward.w1"), ("mlp.up_proj", "feed_forward.w3"),
                 ("mlp.down_proj", "feed_forward.w2"), ("input_layernorm", "attention_norm"),
                 ("post_attention_layernorm", "ffn_norm")):
        renames[f"model.layers.0.{a}.weight"] = f"layers.0.{b}.weight"
    torch.save({"model": {"model." + renames[k]: v for k, v in sd.items()}}, tmp_path / "model.pt")
    up = PromptUpsampler.from_pretrained(str(tmp_path), dtype=torch.float32, config=hf.config)
    ids = torch.tensor([[0, 4, 1, 2]])
    torch.testing.assert_close(up.model(ids).logits, hf(ids).logits)
    with pytest.raises(KeyError, match="does not use"):
        native_to_hf({**{"model." + renames[k]: v for k, v in sd.items()}, "extra.weight": torch.zeros(1)}, 1, 32, 32)


# -- the command line -----------------------------------------------------------------------------


def guarded(assets, guard, out, *extra, aegis="safe", guard_dir=None):
    args = [a for a in infer_args(assets, out, *extra) if a != "--disable_guardrails"]
    base, adapter = guard[aegis]
    return args + ["--guardrail_dir", str(guard_dir or guard["dir"]), "--aegis_base", str(base),
                   "--aegis_adapter", str(adapter), "--siglip", str(guard["siglip"])]


def test_safe_prompt_is_generated(assets, guard, tmp_path):
    out = tmp_path / "ok.mp4"
    assert main(guarded(assets, guard, out, "--prompt", "a red cube moves left")) == 0
    assert out.exists() and "video_guardrail_s" in json.loads(out.with_suffix(".json").read_text())["timings"]


@pytest.mark.parametrize("prompt, aegis, message", [
    ("a badword cube", "safe", "blocked: prompt blocked by the guardrails: the prompt contains a blocklisted word"),
    ("a red cube moves left", "unsafe", "blocked: prompt blocked by the guardrails: Aegis: unsafe content"),
])
def test_blocked_prompt_exits_3_without_a_file(assets, guard, tmp_path, capsys, prompt, aegis, message):
    out = tmp_path / "v.mp4"
    assert main(guarded(assets, guard, out, "--prompt", prompt, aegis=aegis)) == 3
    assert capsys.readouterr().err.strip().splitlines()[-1] == message
    assert not list(tmp_path.iterdir())


def test_unsafe_video_is_not_written(assets, guard, tmp_path, capsys):
    gdir = tmp_path / "guard"
    import shutil

    shutil.copytree(guard["dir"], gdir, ignore=shutil.ignore_patterns("video_content_safety_filter"))
    shutil.copytree(guard["unsafe_video"] / "video_content_safety_filter", gdir / "video_content_safety_filter")
    out = tmp_path / "out" / "v.mp4"
    out.parent.mkdir()
    assert main(guarded(assets, guard, out, "--prompt", "a red cube", "--save_latent", guard_dir=gdir)) == 3
    assert "blocked: video blocked by the guardrails: frame 0 classified as Violence" in capsys.readouterr().err
    assert not list(out.parent.iterdir())


def test_upsampled_prompt_is_the_one_generated(assets, guard, tmp_path):
    from transformers import MistralConfig

    upsampler = tmp_path / "upsampler"
    word_tokenizer("tall", upsampler)
    constant_lm(MistralConfig, upsampler, head_dim=16)
    out = tmp_path / "v.mp4"
    rc = main(guarded(assets, guard, out, "--prompt", "a cube", "--subject_name", "teal robot",
                      "--enable_prompt_upsampler", "--prompt_upsampler_dir", str(upsampler)))
    assert rc == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["upsampled_prompt"] == " ".join(["tall"] * 512)
    assert side["final_prompt"] == "A video of sks teal robot. " + side["upsampled_prompt"]


def test_python_api_has_the_guardrails_as_components(assets, guard, tmp_path, caplog):
    """from_pretrained adds the guardrails by default; a blocked prompt raises BlockedError before any
    sampling and nothing is returned or written; turning them off warns, once."""
    from nemo_cosmos import BlockedError, Text2WorldPipeline
    from nemo_cosmos import pipeline as pipeline_module

    base, adapter = guard["safe"]
    pipe = Text2WorldPipeline.from_pretrained(str(assets / "tiny"), device="cpu", guardrail_dir=str(guard["dir"]),
                                              aegis_base=str(base), aegis_adapter=str(adapter),
                                              siglip=str(guard["siglip"]))
    assert pipe.text_guardrail is not None and pipe.video_guardrail is not None
    calls = []
    pipe.dit.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(BlockedError, match="blocklisted word"):
        pipe(["a red cube", "a badword cube"], num_steps=1, progress=False)
    assert calls == [] and not list(tmp_path.iterdir())
    assert pipe("a red cube", num_steps=1, progress=False)[0].frames.shape == (9, 32, 48, 3)

    pipeline_module._WARNED_NO_GUARDRAILS = False
    with caplog.at_level("WARNING", logger="nemo_cosmos"):
        for _ in range(2):
            Text2WorldPipeline.from_pretrained(str(assets / "tiny"), device="cpu", guardrails=False)
    assert caplog.text.count("guardrails off") == 1
