"""What the installed package carries: the wheel built from a commit, by part.

For each commit given (default: HEAD) it builds the wheel from a clean export of that
commit (``git archive``, so uncommitted files never count) and prints, by part of the
wheel: files, lines of Python and bytes.  Parts: the engine (``nodeflow/`` without the
packs, the editor and the graphs), training code inside the engine (any ``.py`` under
``nodeflow/demo/``), the demo weights and model cards (``nodeflow/demo/models/``), the
node packs, the editor, the example graphs.  Then the share of the engine's Python that
is training code, and whether any file from the top-level ``training/`` folder shipped.

    python bench/wheel_contents.py                 # HEAD
    python bench/wheel_contents.py ed58c25~1 HEAD  # before and after a change, side by side
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PARTS = (
    ("training code in the engine", lambda n: n.startswith("nodeflow/demo/") and n.endswith(".py")),
    ("demo weights and model cards", lambda n: n.startswith("nodeflow/demo/models/")),
    ("node packs (nodeflow/nodes)", lambda n: n.startswith("nodeflow/nodes/")),
    ("editor (nodeflow/gui)", lambda n: n.startswith("nodeflow/gui/")),
    ("example graphs (nodeflow/graphs)", lambda n: n.startswith("nodeflow/graphs/")),
    ("engine (the rest of nodeflow/)", lambda n: n.startswith("nodeflow/")),
    ("top-level training/", lambda n: n.startswith("training/")),
    ("metadata (*.dist-info)", lambda n: ".dist-info/" in n),
)


def build(commit: str, work: Path) -> Path:
    src = work / "src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True).stdout
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(src, filter="data")
    out = work / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
                   check=True, capture_output=True)
    (wheel,) = out.glob("nodeflow-*.whl")
    return wheel


def measure(wheel: Path) -> dict[str, tuple[int, int, int]]:
    """Part -> (files, lines of Python, bytes uncompressed)."""
    totals = {name: [0, 0, 0] for name, _ in PARTS}
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            for name, match in PARTS:
                if match(info.filename):
                    t = totals[name]
                    t[0] += 1
                    t[2] += info.file_size
                    if info.filename.endswith(".py"):
                        t[1] += z.read(info).count(b"\n")
                    break
    return {k: (v[0], v[1], v[2]) for k, v in totals.items()}


def main(commits: list[str]) -> None:
    results = {}
    for commit in commits:
        with tempfile.TemporaryDirectory() as tmp:
            wheel = build(commit, Path(tmp))
            results[commit] = (measure(wheel), wheel.stat().st_size)
    width = max(len(name) for name, _ in PARTS)
    print(f"{'part':<{width}}" + "".join(f" | {c[:12]:>30}" for c in commits))
    print(f"{'':<{width}}" + " | files    py lines        bytes" * len(commits))
    for name, _ in PARTS:
        row = "".join(f" | {results[c][0][name][0]:5d} {results[c][0][name][1]:11,d} {results[c][0][name][2]:12,d}"
                      for c in commits)
        print(f"{name:<{width}}{row}")
    print(f"{'wheel file (compressed)':<{width}}" + "".join(f" | {results[c][1]:30,d}" for c in commits))
    for c in commits:
        parts = results[c][0]
        train = parts["training code in the engine"][1]
        engine = parts["engine (the rest of nodeflow/)"][1] + train
        shipped = parts["top-level training/"][0]
        print(f"{c}: training code is {train:,d} of the engine's {engine:,d} Python lines "
              f"({train / max(1, engine):.0%}); files from training/ in the wheel: {shipped}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["HEAD"])
