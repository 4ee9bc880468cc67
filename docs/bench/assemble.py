"""Rebuild docs/benchmarks.md from the full runs' outputs.

    python docs/bench/assemble.py BENCH_OUT     # the --out folder of the full `distillab bench NAME` runs

Each table is the benchmark's own Markdown (BENCH_OUT/NAME.md); its JSON is copied to docs/bench/NAME.json.
A benchmark without a full run in BENCH_OUT keeps its copied JSON here, if any. The prose beside each table is
docs/bench/notes.json (written by hand from the figures); the page opens with docs/bench/header.md.
Benchmarks made of cells (dd-mnist) also list their finished cells while the run is incomplete.
"""

import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["hinton-mnist", "hinton-mnist-tuned", "ls-teacher", "kd-losses", "kd-losses-tuned", "kd-menu", "takd", "takd-tuned", "rkd", "kd-speed", "noisy-teacher",
         "teacher-service", "omni-mnist", "datafree-mnist", "poison-mnist", "privacy-mnist", "reproduce-mnist", "dd-mnist",
         "dm-budget", "mtt-memory",
         "cross-arch", "wang2018", "wang2018-budget", "eval-speed", "dm-speed", "perf"]

# Benchmarks whose full runs shared one OUT folder with other work running beside them.
SHARED_OUT = set(ORDER) - {"perf"}


def table_of(md: str) -> str:
    return md.split("\n", 2)[2].split("\nCommand:")[0].strip()


def cells_table(folder: Path) -> str:
    rows = []
    for path in sorted(folder.glob("*.json")):
        r = json.loads(path.read_text())["result"]
        if "mean" not in r:  # only cells that report an accuracy over several models
            continue
        rows.append(f"| {path.stem} | {100 * r['mean']:.2f} +- {100 * r['std']:.2f} | {len(r['runs'])} | "
                    f"{r.get('condense_seconds', 0) / 60:.1f} | {r['wall_seconds'] / 60:.1f} |")
    if not rows:
        return ""
    return "\n".join(["| cell (method-IPC) | accuracy % | models | condense min | cell min |", "|---|---|---|---|---|",
                      *rows])


def main(bench_out: Path) -> None:
    docs = HERE.parent
    notes = json.loads((HERE / "notes.json").read_text())
    out = [(HERE / "header.md").read_text()]
    for name in ORDER:
        out.append(f"## {name}\n")
        md, js = bench_out / f"{name}.md", bench_out / f"{name}.json"
        if js.exists() and md.exists():
            shutil.copy(js, HERE / f"{name}.json")
            (HERE / f"{name}.md").write_text(md.read_text())
            shutil.rmtree(HERE / f"{name}-cells", ignore_errors=True)  # the partial run's cells are superseded
            figure = json.loads(js.read_text()).get("heatmap")
            if figure and (bench_out / figure).is_file():  # a benchmark's figure (cross-arch's heatmap) beside it
                shutil.copy(bench_out / figure, HERE / f"{name}.png")
        js, md = HERE / f"{name}.json", HERE / f"{name}.md"
        if js.exists() and md.exists():
            d = json.loads(js.read_text())
            m = d["machine"]
            out.append(table_of(md.read_text()) + "\n")
            if d.get("heatmap") and (HERE / f"{name}.png").is_file():
                out.append(f"![{name}](bench/{name}.png)\n")
            shared = name in SHARED_OUT
            out.append(f"Command: `OMP_NUM_THREADS={m['torch_threads']} {d['command']}`"
                       + (" (one OUT folder for all, so teachers were trained once and reused; beside other work)"
                          if shared else " (alone on the machine)") + f"; wall time {d['wall_seconds'] / 60:.1f} min"
                       + (f" for the run that finished (its kept cells took {d['cells_total_seconds'] / 60:.0f} "
                          f"process-minutes in all)" if "cells_total_seconds" in d else "") + f"; {m['cpus']} cores, "
                       f"torch {m['torch']} with {m['torch_threads']} thread(s), Python {m['python']}. "
                       f"Full figures: [bench/{name}.json](bench/{name}.json).\n")
        else:
            out.append("**Full run not finished yet** (the `--quick` form runs in the test suite).\n")
            cells = bench_out / "work" / name / "cells"
            if cells.is_dir() and cells_table(cells):
                kept = HERE / f"{name}-cells"
                kept.mkdir(exist_ok=True)
                for path in cells.glob("*.json"):
                    shutil.copy(path, kept / path.name)
                out.append(f"Cells finished so far (kept in [bench/{name}-cells/](bench/{name}-cells/); copied back "
                           f"into OUT/work/{name}/cells/, a rerun resumes from them):\n\n{cells_table(kept)}\n")
        if name in notes:
            out.append(notes[name] + "\n")
    (docs / "benchmarks.md").write_text("\n".join(out))
    print("wrote", docs / "benchmarks.md")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
