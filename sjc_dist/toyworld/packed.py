"""The shipped weights, stored xz-compressed: the tracked tree plus the GPU machine's package archive must fit one
64 MiB device call, and xz takes the toy weights from 21.9 to 19.4 MB (lossless; fp16 tensors compress little).

`shipped(path)`: the same path inside `unpacked(WEIGHTS)`, the weights folder with every `*.safetensors.xz`
decompressed, built once per content in a cache folder (`$SJC_CACHE`, else `$XDG_CACHE_HOME/sjc_dist`, else
`~/.cache/sjc_dist`) and reused. A plain `*.safetensors` beside its `.xz` (a fresh training's output) wins.
`pack(folder)` compresses a folder's `*.safetensors` in place: `python -m sjc_dist.toyworld.packed DIR`.
"""
import hashlib
import lzma
import os
import shutil
import sys
import uuid
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent / "weights"
SUFFIX = ".xz"
PRESET = 9 | lzma.PRESET_EXTREME
DONE = ".unpacked"  # written last: a folder without it is incomplete
NOTES = (".md", ".log", ".png")  # documentation beside the weights: copied, but not part of the cache key


def cache_root() -> Path:
    """Where unpacked weights go."""
    if os.environ.get("SJC_CACHE"):
        return Path(os.environ["SJC_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "sjc_dist"


def content_key(folder: Path) -> str:
    """sha256 over every file's relative path and bytes but the notes (NOTES): a retrained or repacked folder gets
    a new cache entry, an edited README does not."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix not in NOTES):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def unpacked(folder: Path = WEIGHTS) -> Path:
    """`folder` itself when nothing in it is packed, else its unpacked copy in the cache (built if missing)."""
    if not any(folder.rglob("*" + SUFFIX)):
        return folder
    target = cache_root() / f"{folder.name}-{content_key(folder)}"
    if not (target / DONE).is_file():
        build(folder, target)
    return target


def build(folder: Path, target: Path) -> None:
    """Copy `folder` to `target` with its `.xz` files decompressed, atomically (a temporary folder renamed)."""
    tmp = target.parent / f".{target.name}-{uuid.uuid4().hex}"
    shutil.copytree(folder, tmp, ignore=shutil.ignore_patterns("*" + SUFFIX))
    for packed in folder.rglob("*" + SUFFIX):
        out = tmp / packed.relative_to(folder).with_suffix("")
        if not out.exists():  # a plain file beside its .xz wins
            out.write_bytes(lzma.decompress(packed.read_bytes()))
    (tmp / DONE).write_text(str(folder) + "\n")
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first (its folder is complete: it has DONE)
        shutil.rmtree(tmp, ignore_errors=True)


def shipped(path: Path) -> Path:
    """`path` (inside WEIGHTS) as it is in the unpacked weights folder."""
    return unpacked(WEIGHTS) / Path(path).resolve().relative_to(WEIGHTS)


def pack(folder: Path) -> list[Path]:
    """Compress every `*.safetensors` under `folder` to `*.safetensors.xz` and remove the plain file."""
    done = []
    for plain in sorted(folder.rglob("*.safetensors")):
        packed = plain.with_name(plain.name + SUFFIX)
        packed.write_bytes(lzma.compress(plain.read_bytes(), preset=PRESET))
        plain.unlink()
        done.append(packed)
    return done


if __name__ == "__main__":
    for p in pack(Path(sys.argv[1] if len(sys.argv) > 1 else WEIGHTS)):
        print(f"packed {p} ({p.stat().st_size / 1e6:.2f} MB)")
