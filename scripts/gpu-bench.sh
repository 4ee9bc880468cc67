#!/usr/bin/env bash
# The GPU measured: the device's matmul peak, the hours each reference recipe (gm, dsa, dm at IPC 10 and 50) would
# take here to its paper budget, and the IPC-10 DM and DSA cells at the reference recipes run for as long as a time
# limit allows, checkpointed, so that the next machine resumes them.
#   scripts/gpu-bench.sh OUT [cuda|cuda:N|cpu] [--quick]
# OUT receives peak.json, estimate-*.json, the cells' run folders (cell-dm, cell-dsa: resumable) and summary.md;
# bring it back whole. --quick: digits, a tiny network and 4 iterations, the CPU form the test suite runs.
# DISTILLAB_CELL_SECONDS: how long each reference cell may run in this call (default 240; SIGTERM checkpoints it).
# DISTILLAB_COMPILE: the methods' compile option (default auto: compiled where a timed probe shows it pays).
set -euo pipefail
out="${1:?usage: scripts/gpu-bench.sh OUT [cuda|cpu] [--quick]}"
device="${2:-cuda}"
quick="${3:-}"
py="${PYTHON:-python}"
limit="${DISTILLAB_CELL_SECONDS:-240}"
compile="${DISTILLAB_COMPILE:-auto}"
mkdir -p "$out"
if [ "$quick" = "--quick" ]; then
  data=digits; ipcs="1"; cell_ipc=1; narrow=",model=[convnet:width=8,depth=2],batch_real=16,iterations=4"; proto_opts=":runs=1,epochs=3"
else
  data=mnist; ipcs="10 50"; cell_ipc=10; narrow=""; proto_opts=""
fi

"$py" - "$device" > "$out/peak.json" <<'PEAK'
import json, sys, time
import torch
device = sys.argv[1]
n = 8192 if device.startswith("cuda") else 1024
a, b = (torch.randn(n, n, device=device) for _ in range(2))
def tflops():
    times = []
    for _ in range(5):
        if device.startswith("cuda"): torch.cuda.synchronize()
        t = time.perf_counter(); a @ b
        if device.startswith("cuda"): torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return round(2 * n ** 3 / min(times[1:]) / 1e12, 3)
found = {"device": device, "name": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
         "torch": torch.__version__, "fp32_tflops": tflops()}
if device.startswith("cuda"):
    torch.backends.cuda.matmul.allow_tf32 = True
    found["tf32_tflops"] = tflops()
print(json.dumps(found))
PEAK

for method in gm dsa dm; do
  extra="$narrow,compile=$compile"
  for ipc in $ipcs; do
    "$py" -m distillab condense --data "$data" --method "$method:recipe=vico$extra" --ipc "$ipc" --device "$device" \
      --dry-run --quiet --json > "$out/estimate-$method-$ipc.json"
  done
done

for cell in "dm vico-dm" "dsa vico-dsa"; do
  set -- $cell
  dir="$out/cell-$1"
  extra="$narrow,compile=$compile"
  if [ -f "$dir/config.json" ] || [ -d "$out/.cell-$1.partial" ]; then
    args=(--resume "$dir")
  else
    args=(--data "$data" --method "$1:recipe=vico$extra" --ipc "$cell_ipc" --device "$device" --protocol "$2$proto_opts"
          --checkpoint-every 50 --out "$dir")
  fi
  timeout --signal=TERM "$limit" "$py" -m distillab condense "${args[@]}" --quiet --json > "$out/cell-$1.json" || true
done

"$py" - "$out" > "$out/summary.md" <<'SUMMARY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
peak = json.loads((out / "peak.json").read_text())
print(f"device: {peak['name']} ({peak['device']}), torch {peak['torch']}; matmul peak fp32 {peak['fp32_tflops']} TFLOP/s"
      + (f", TF32 {peak['tf32_tflops']} TFLOP/s" if "tf32_tflops" in peak else ""))
print("\n| recipe | IPC | iterations | estimated hours here |\n|---|---:|---:|---:|")
for f in sorted(out.glob("estimate-*.json")):
    e = json.loads(f.read_text())
    print(f"| {e['method'].split(',')[0]} | {e['ipc']} | {e['iterations']:,} | {e['estimated_condense_seconds'] / 3600:.2f} |")
for f in sorted(out.glob("cell-*.json")):
    text = f.read_text().strip()
    if not text:
        print(f"\n{f.stem}: stopped at the time limit (resume: scripts/gpu-bench.sh again with the same OUT)")
        continue
    m = json.loads(text)
    ev = m.get("evaluation", {})
    print(f"\n{f.stem}: {m['iterations']:,} iterations in {m['condense_seconds']:.0f} s"
          + (f"; {ev['protocol']['name']}: {100 * ev['test_accuracy']:.2f}%" if ev else ""))
SUMMARY
cat "$out/summary.md"
