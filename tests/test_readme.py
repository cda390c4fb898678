"""The README's "SJC in one screen" snippet runs as written (so it cannot rot), but for its step count: every
line of it runs, with 5 steps of the 50 it shows (the 50 took 110 s on the loaded 2-core machine)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SHOWN, RUN = '"steps=50"', '"steps=5"'


def test_one_screen_snippet_runs(capsys):
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python snippet"
    assert blocks[0].count(SHOWN) == 1, f"the snippet no longer sets {SHOWN}: update this test's SHOWN"
    namespace: dict = {}
    exec(compile(blocks[0].replace(SHOWN, RUN), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    metrics = namespace["metrics"]
    assert metrics.step == 5 and metrics.opacity > 0
    assert "StepMetrics" in capsys.readouterr().out
