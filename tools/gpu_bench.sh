#!/usr/bin/env bash
# GPU figures in one go, on a machine with an NVIDIA GPU and JAX's CUDA plugin:
#   1. mini bf16 training step (AdamW): ours beside JAX on the same config and batch,
#      with samples/s and MFU against the GPU's bf16 peak;
#   2. mega's per-device memory (scanned, Adafactor, bf16) at two batch sizes, from PJRT's
#      compiled memory statistics, against the memory the plugin allocates from; the
#      largest batch that fits follows from the two (memory grows about linearly with it);
#   3. the same mini step with Adafactor.
#
#   tools/gpu_bench.sh OUTDIR [SECONDS]
#
# Prebuilt binaries are taken from target/release (cargo build --release --bin dalle
# --bench train). The plugin is $DALLE_PJRT_PLUGIN, else the one installed with JAX
# (jax_plugins.xla_cuda*). Each stage is cut off so that the whole stays inside SECONDS
# (default 560); logs go to OUTDIR, a summary to OUTDIR/summary.txt and stdout.
# DALLE_PEAK_TFLOPS (default 989, H100 SXM dense bf16) sets the MFU denominator;
# MINI_BATCH (default 32) and MEGA_BATCHES (default "32 128") the batch sizes.
set -uo pipefail
out="${1:?usage: tools/gpu_bench.sh OUTDIR [SECONDS]}"
budget="${2:-560}"
mkdir -p "$out"
start=$SECONDS
summary="$out/summary.txt"
note() { echo "$*" | tee -a "$summary"; }
left() { echo $((budget - (SECONDS - start))); }
# run_stage NAME CAP CMD...: runs CMD with a limit of min(CAP, time left - 5) seconds.
run_stage() {
  local name=$1 cap=$2; shift 2
  local limit; limit=$(left); limit=$((limit - 5)); ((limit > cap)) && limit=$cap
  if ((limit < 20)); then note "$name: skipped, $(left) s left"; return 1; fi
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  note "$name: exit $rc after $((SECONDS - t0)) s (limit $limit s)"
  return $rc
}

export DALLE_PEAK_TFLOPS="${DALLE_PEAK_TFLOPS:-989}"
mini_batch="${MINI_BATCH:-32}"
mega_batches="${MEGA_BATCHES:-32 128}"
mini="${MINI_CONFIG:-mini}"   # other configs make a quick dry run of this script
mega="${MEGA_CONFIG:-mega}"
export RUST_LOG="${RUST_LOG:-warn}"
dalle=target/release/dalle
bench=$(ls -t target/release/deps/train-* 2>/dev/null | grep -v '\.d$' | head -n 1)
[[ -x $dalle && -n $bench ]] || { note "missing target/release/dalle or the train bench binary"; exit 2; }

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee -a "$summary"
# The budget that mega's compiled step must fit: the CUDA plugin's allocator takes 75% of
# the card by default (XLA's GPU allocator default), so 3/4 of its memory, in GiB.
device_gib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -n 1 | awk '{print int($1 * 0.75 / 1024)}')
python=${PYTHON:-python3}
if [[ -z "${DALLE_PJRT_PLUGIN:-}" ]]; then
  DALLE_PJRT_PLUGIN=$($python - <<'EOF'
import glob, os, importlib.util
for name in ("jax_plugins.xla_cuda13", "jax_plugins.xla_cuda12"):
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        continue
    if spec and spec.origin:
        hits = glob.glob(os.path.join(os.path.dirname(spec.origin), "xla_cuda_plugin.so"))
        if hits:
            print(hits[0]); break
EOF
)
fi
export DALLE_PJRT_PLUGIN
note "plugin: ${DALLE_PJRT_PLUGIN:-none found}"
[[ -n $DALLE_PJRT_PLUGIN ]] || exit 2
ldd "$DALLE_PJRT_PLUGIN" 2>/dev/null | grep 'not found' | tee -a "$summary"
# XLA needs libdevice (and ptxas where it has no built-in PTX compiler): point it at a CUDA tree.
if [[ -z "${XLA_FLAGS:-}" || $XLA_FLAGS != *cuda_data_dir* ]]; then
  libdevice=$(ls /usr/local/cuda/nvvm/libdevice/libdevice.10.bc 2>/dev/null || find /usr /opt -name libdevice.10.bc 2>/dev/null | head -n 1)
  if [[ -n $libdevice ]]; then
    export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_cuda_data_dir=$(dirname "$(dirname "$(dirname "$libdevice")")")"
  fi
fi
export PATH="$PATH:/usr/local/cuda/bin"
note "XLA_FLAGS=${XLA_FLAGS:-}"

# 1. mini bf16, AdamW: ours, then JAX.
run_stage ours_mini_adamw 200 "$bench" "$mini" --platform cuda --steps 20 \
  --set train.dtype=bf16 --set optimizer.kind=adamw --set train.batch_size="$mini_batch" --set optimizer.max_grad_norm=1.0
grep -E "platform|$mini:|Error|error" "$out/ours_mini_adamw.log" | head -n 5 | tee -a "$summary"
run_stage jax_mini_adamw 170 env XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 $python tools/jax_dallebart_bench.py "configs/$mini.yaml" --bf16 --batch "$mini_batch" --steps 20
grep -E '^jax|Error' "$out/jax_mini_adamw.log" | tail -n 3 | tee -a "$summary"

# 2. mega, scanned (per-layer remat), Adafactor, bf16: compiled memory per batch.
for b in $mega_batches; do
  run_stage "mega_info_b$b" 150 "$dalle" info --platform cuda --config "configs/$mega.yaml" \
    --set model.scan_layers=true --set model.remat_layers=true --set train.batch_size="$b" --set train.devices=1 --device-memory-gib "${device_gib:-59}"
  grep -iE 'total|fits|temporar|argument|error|compile' "$out/mega_info_b$b.log" | head -n 12 | tee -a "$summary"
done

# 3. mini bf16, Adafactor (our side only; the JAX bench is AdamW).
run_stage ours_mini_adafactor 150 "$bench" "$mini" --platform cuda --steps 20 \
  --set train.dtype=bf16 --set optimizer.kind=adafactor --set train.batch_size="$mini_batch"
grep -E "$mini:|Error|error" "$out/ours_mini_adafactor.log" | head -n 3 | tee -a "$summary"
note "total $((SECONDS - start)) s"
