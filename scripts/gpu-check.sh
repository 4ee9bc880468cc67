#!/usr/bin/env bash
# Run the quick forms of the long commands on a GPU and on the CPU, side by side, and print both sets of figures:
#   scripts/gpu-check.sh [cuda|cuda:N|mps]        (default cuda; needs a torch build with that device)
# Accuracies should agree to within a few points (different kernels, same seeds and draws); times say what the
# device buys. Record the output in docs/benchmarks.md with the machine it ran on.
set -euo pipefail
device="${1:-cuda}"
py="${PYTHON:-python}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
run() { "$py" -m distillab "$@" --quiet --json; }
devices=(cpu "$device")
for i in 0 1; do
  dev="${devices[$i]}"
  echo "== $dev"
  run train --data digits --model convnet:width=32,depth=2 --epochs 10 --batch-size 64 --device "$dev" \
      --out "$out/t-$i" | "$py" -c "import json,sys; d=json.load(sys.stdin); print('train', d['test_accuracy'], d['train_seconds'], 's')"
  run kd --data digits --teacher "$out/t-0/model.safetensors" --student mlp:hidden=32 --epochs 10 --device "$dev" \
      --out "$out/k-$i" | "$py" -c "import json,sys; d=json.load(sys.stdin); print('kd', d['test_accuracy'], d['train_seconds'], 's')"
  run condense --data digits --method dm:iterations=50,batch_real=64,model=[convnet:width=32,depth=2] --ipc 5 \
      --device "$dev" --out "$out/c-$i" | "$py" -c "import json,sys; d=json.load(sys.stdin); print('condense dm', d['condense_seconds'], 's')"
  run evaluate "$out/c-0/synset.safetensors" --models convnet:width=32,depth=2 --runs 3 --epochs 100 --dsa \
      --device "$dev" --out "$out/e-$i" | "$py" -c "import json,sys; d=json.load(sys.stdin); m=next(iter(d['models'].values())); print('evaluate', round(m['mean'], 4), m['seconds'], 's')"
done
