"""The engine's commands end to end at a tiny budget: `sjc run`, `sjc run --resume`, `sjc image`, on the
'empirical' model (the exact denoiser of toy-world renders, no weights needed). The end-of-run scoring has its
own tests (tests/test_run_end.py); here it is off (`--no-eval`) to keep these fast."""
import json

from PIL import Image

from sjc_dist.cli import main

TINY = ["--config", "empirical", "--prompt", "a red cube", "--device", "cpu", "--set", "field.grid_size=8",
        "--set", "render.step=0.25", "--set", "output.eval_views=2", "--set", "output.turntable_frames=2",
        "--set", "output.progress=false", "--set", "output.log_every=1", "--set", "output.checkpoint_every=1",
        "--no-eval"]


def run_dir_of(capsys) -> str:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"]


def test_run_then_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", *TINY, "--steps", "2", "--out", str(out)]) == 0
    assert run_dir_of(capsys) == str(out)
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "field.safetensors", "views.png", "depth.png",
                 "turntable.gif", "summary.json"):
        assert (out / name).is_file(), name
    assert main(["run", "--resume", str(out), "--steps", "4", "--no-eval"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["resumed_from"], summary["steps"]) == (2, 4)
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert json.loads((out / "config.json").read_text())["steps"] == 4


def test_image_command(tmp_path, capsys):
    out = tmp_path / "image"
    assert main(["image", *TINY, "--steps", "3", "--out", str(out)]) == 0
    assert run_dir_of(capsys) == str(out)
    img = Image.open(out / "image.png")
    assert img.size == (256, 256)  # the 32x32 model image, upscaled 8x
