"""The shipped weights' xz packing (sjc_dist/toyworld/packed.py): lossless, unpacked once per content, a plain file
beside its .xz wins, an unpacked folder is used as is; the shipped models load from the packed tree."""
from pathlib import Path

from sjc_dist.toyworld import packed


def make_folder(root: Path) -> dict[str, bytes]:
    files = {"unet/diffusion_pytorch_model.safetensors": bytes(range(256)) * 40, "unet/config.json": b"{}",
             "text_encoder/model.safetensors": b"weights" * 10}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_pack_then_unpack_gives_the_same_bytes_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SJC_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "weights"
    files = make_folder(folder)
    assert packed.unpacked(folder) == folder  # nothing packed: used as is
    assert sorted(p.name for p in packed.pack(folder)) == ["diffusion_pytorch_model.safetensors.xz",
                                                          "model.safetensors.xz"]
    assert not list(folder.rglob("*.safetensors"))
    out = packed.unpacked(folder)
    assert out.parent == tmp_path / "cache" and (out / packed.DONE).is_file()
    assert {n: (out / n).read_bytes() for n in files} == files
    (out / "unet" / "config.json").write_text("reused")  # a second call reuses the folder, it does not rebuild it
    assert packed.unpacked(folder) == out and (out / "unet" / "config.json").read_text() == "reused"
    (folder / "README.md").write_text("notes")  # documentation is not part of the key
    assert packed.unpacked(folder) == out


def test_a_plain_file_beside_its_xz_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("SJC_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "weights"
    make_folder(folder)
    packed.pack(folder)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"retrained")
    out = packed.unpacked(folder)
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == b"retrained"
    assert (out / "text_encoder" / "model.safetensors").read_bytes() == b"weights" * 10


def test_the_shipped_models_resolve_to_unpacked_weights():
    from sjc_dist.diffusion.load import model_path
    from sjc_dist.toyworld.clip_model import default_checkpoint

    assert list(packed.WEIGHTS.rglob("*.safetensors.xz"))  # what the repository ships
    for name in ("toy", "toy-judge"):
        assert (model_path(name) / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert default_checkpoint().is_file()
