"""A toy CLIP checkpoint as a small local-dir judge folder, to score runs with an earlier judge beside the shipped one.

The checkpoint's 49408 x 32 token table is most of its 4.9 MB; rows of tokens that none of the given prompt sets
(with the toy CLIP's caption templates) uses are zeroed, so the folder compresses to under half and embeds those
prompts exactly as the original does (checked here before writing). Used for the before/after agreement of the
toy judge (issue 12): the earlier checkpoint comes from git history.

  git show HEAD~N:sjc_dist/toyworld/weights/clip/open_clip_model.safetensors > /tmp/old.safetensors
  python eval/bench/prune_clip.py /tmp/old.safetensors .gpu/old_clip     # then: --judges toy,local-dir:.gpu/old_clip
"""
import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sjc_dist.evaluation.prompts import load_prompts
from sjc_dist.toyworld import clip_model
from sjc_dist.toyworld.clip_world import TEMPLATES, bank


def used_tokens(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Every token id the prompts and their templated forms use (with the start/end/padding tokens)."""
    texts = [t.format(p) for p in prompts for t in TEMPLATES]
    return torch.unique(tokenizer(texts).flatten())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("out", type=Path)
    a = ap.parse_args()
    model, _, tokenizer = clip_model.load_toy_clip("cpu", a.checkpoint)
    prompts = list(dict.fromkeys(bank() + load_prompts("toy") + load_prompts("coco153")))
    keep = used_tokens(tokenizer, prompts)
    state = load_file(str(a.checkpoint))
    mask = torch.zeros(state["token_embedding.weight"].shape[0], dtype=torch.bool)
    mask[keep] = True
    state["token_embedding.weight"][~mask] = 0
    a.out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(a.out / "open_clip_model.safetensors"))
    cfg = json.loads((clip_model.TOY_CLIP_DIR / clip_model.CONFIG_FILE).read_text())
    (a.out / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    pruned, _, _ = clip_model.load_toy_clip("cpu", a.out / "open_clip_model.safetensors")
    with torch.no_grad():
        ref = clip_model.encode_texts(model, tokenizer, prompts)
        got = clip_model.encode_texts(pruned, tokenizer, prompts)
    assert torch.equal(ref, got), "pruning changed an embedding"
    print(json.dumps({"out": str(a.out), "tokens_kept": int(mask.sum()), "prompts": len(prompts)}))


if __name__ == "__main__":
    main()
