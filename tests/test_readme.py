"""The README's "SJC in one screen" snippet runs as written (so it cannot rot)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_one_screen_snippet_runs(capsys):
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python snippet"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    metrics = namespace["metrics"]
    assert metrics.step == 50 and metrics.opacity > 0
    assert "StepMetrics" in capsys.readouterr().out
