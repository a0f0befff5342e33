"""MkDocs hook (mkdocs.yml `hooks:`): the committed benchmark charts of benchmarks/results/ are
pages' images under `results/`, read from where the benchmarks commit them rather than copied
into docs/, so a re-recorded chart is on the site without a second copy to keep equal."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def on_files(files, config):
    for image in sorted(RESULTS.rglob("*.png")):
        relative = image.relative_to(RESULTS).as_posix()
        files.append(
            File.generated(config, f"results/{relative}", abs_src_path=str(image))
        )
    return files
