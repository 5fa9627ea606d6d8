#!/usr/bin/env bash
# DalleBart training-step time: ours beside dalle-mini's own flax model on JAX
# (and, for AdamW, the plain-jax reimplementation), same config, batch and
# update, alternating in one run, with the load average before and after.
#
#   tools/step_time_side_by_side.sh [PYTHON] [TINY_STEPS] [SMALL_STEPS]
#
# PYTHON: an interpreter with jax 0.4.13, flax, optax and dalle-mini 0.1.5
# (default: python3). `small` uses dalle-mini's text vocabulary (50264), f32,
# batch 8 and no gradient clipping on our side and dalle-mini's (train.py does
# not clip); the plain-jax bench always clips at 1.0. Our bench is the release
# binary of `cargo bench --bench train` (built here if missing).
set -uo pipefail
cd "$(dirname "$0")/.."
python="${1:-python3}"
tiny_steps="${2:-200}"
small_steps="${3:-10}"
# The binary cargo just built (its "Executable" line), never an older one.
ours=$(cargo bench --bench train --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[[ -x "$ours" ]] || { echo "building the train bench failed: run cargo bench --bench train --no-run" >&2; exit 1; }
export TF_CPP_MIN_LOG_LEVEL=1
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for config in tiny small; do
  steps=$tiny_steps; set=(--set optimizer.max_grad_norm=0)
  if [[ $config == small ]]; then steps=$small_steps; set+=(--set model.encoder_vocab_size=50264); fi
  for optimizer in adamw adafactor; do
    echo "== $config, $optimizer"
    "$ours" "$config" --steps "$steps" --set optimizer.kind=$optimizer "${set[@]}" 2>&1 | grep "ms/step"
    "$python" tools/dalle_mini_bench.py "configs/$config.yaml" --steps "$steps" --optimizer $optimizer "${set[@]}" 2>&1 | grep "ms/step"
    if [[ $optimizer == adamw ]]; then
      "$python" tools/jax_dallebart_bench.py "configs/$config.yaml" --steps "$steps" "${set[@]:2}" 2>&1 | grep "ms/step"
    fi
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
