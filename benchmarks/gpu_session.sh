#!/usr/bin/env bash
# One prepared GPU session for issue 42: run it once, from the repository root, on a machine with one GPU and
# CUDA builds of JAX (with Flax, optax) and torch (with Triton) already installed. It installs nothing from a
# network: the optional baselines (TensorLy-Torch, torchTT) come from wheels in .whl/ if the session carried
# them (benchmarks/README.md, "GPU session"), else they are skipped and the report says so.
#
#   bash benchmarks/gpu_session.sh               # the GPU run: about 8.5 minutes, results under $OUT
#   bash benchmarks/gpu_session.sh --cpu-smoke   # the same steps on a CPU, tiny sizes, kernels interpreted
#
# Every step is bounded by `timeout` and by the tools' own soft --time-limit-s; a step that fails or times out
# is logged and the next one runs. Results: $OUT (default /tmp/tt-gpu-session) holds at most 8 files (what the
# device tool brings back): session.log, results.tar.gz (everything), and the reports as markdown.
#
# Budget (GPU, seconds, each step's timeout): versions 20, wheels 10, kernel checks 2 x 40, float32 layers 200,
# bfloat16 layers 60, fused kernels against XLA and torch.compile 120, networks 70: at most 560 s if every step
# ran into its timeout, about 480 s with the tools' soft limits, which stop measuring 15-30 s before. What a soft
# limit cut is listed in its report as skipped (a first GPU run spends most of its time compiling).
set -uo pipefail

MODE=gpu
if [[ "${1:-}" == "--cpu-smoke" ]]; then MODE=cpu; fi
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT="${OUT:-/tmp/tt-gpu-session}"
WORK="$(mktemp -d /tmp/tt-gpu-work.XXXXXX)"
mkdir -p "$OUT"
LOG="$OUT/session.log"
: >"$LOG"
START=$SECONDS
export PYTHONUNBUFFERED=1

log() { echo "[$((SECONDS - START)) s] $*" | tee -a "$LOG"; }

# step NAME TIMEOUT_S COMMAND...: runs a bounded step, its output into the log; never stops the session.
step() {
  local name=$1 limit=$2
  shift 2
  log "== $name (timeout ${limit} s): $*"
  timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then log "== $name: TIMED OUT after ${limit} s"; else log "== $name: exit $rc"; fi
}

finish() {
  # Everything into one archive plus the markdown reports: the device tool returns at most 8 files.
  cp "$WORK"/*.md "$OUT"/ 2>/dev/null
  tar -czf "$OUT/results.tar.gz" -C "$WORK" . 2>/dev/null
  log "done in $((SECONDS - START)) s; $OUT holds: $(ls "$OUT" | tr '\n' ' ')"
}
trap finish EXIT

if [[ $MODE == gpu ]]; then
  DEVICE=gpu
  LAYERS=(784-262144 262144-10 3072-32768 32768-8192 1024-1024 25088-4096)
  FUSED_LAYERS=(1024-1024 784-262144 3072-32768)  # the layers the kernels hold (benchmarks/README.md)
  KERNEL_LAYERS=(smoke-96-64 1024-1024 25088-4096 32768-8192 784-262144 3072-32768)
  F32=(--batches 1 100 1000 10000 --repeats 10 --budget-s 0.2 --time-limit-s 175)
  BF16=(--batches 10000 --repeats 10 --budget-s 0.2 --time-limit-s 45)
  FUSED=(--batches 100 10000 --repeats 10 --budget-s 0.2 --time-limit-s 100)
  NETS=(--models tt-tt fc-fc tt-tt-tt tt-tt-fc fc-fc-fc --batches 100 1000 --steps 10 --time-limit-s 50)
  KBATCH=256
  INTERPRET=()
  T_KERNEL=40 T_F32=200 T_BF16=60 T_FUSED=120 T_NETS=70
  export XLA_PYTHON_CLIENT_MEM_FRACTION=0.8  # JAX's preallocation, one framework process at a time
else
  DEVICE=cpu
  LAYERS=(smoke-96-64)
  FUSED_LAYERS=(smoke-96-64)
  KERNEL_LAYERS=(smoke-96-64)
  # No soft limits: on a slow shared CPU the imports alone take most of a GPU-sized share.
  F32=(--batches 1 4 --repeats 2 --budget-s 0.05 --warmup 1)
  BF16=(--batches 4 --repeats 2 --budget-s 0.05 --warmup 1)
  FUSED=(--batches 4 --repeats 2 --budget-s 0.05 --warmup 1)
  NETS=(--models tt-tt-tt fc-fc-fc --batches 8 --steps 2 --warmup 1)
  KBATCH=4
  INTERPRET=(--interpret-kernels)
  T_KERNEL=120 T_F32=300 T_BF16=200 T_FUSED=300 T_NETS=300
  export TRITON_INTERPRET=1
fi

log "mode $MODE, python $PY, out $OUT, work $WORK"
step versions 20 bash -c "nvidia-smi 2>/dev/null | head -15; $PY -c 'import sys, platform; print(sys.version, platform.machine())';
  $PY -m pip list 2>/dev/null | grep -iE '^(jax|jaxlib|jax-cuda|flax|optax|torch|triton|numpy|opt.einsum|tensorly|torchtt) '"

if compgen -G ".whl/*.whl" >/dev/null; then
  step wheels 10 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/tt-site .whl/*.whl
  export PYTHONPATH="/tmp/tt-site:$PWD/.whl/site${PYTHONPATH:+:$PYTHONPATH}"  # site: torchTT's package
else
  log "no .whl/ carried: TensorLy-Torch and torchTT run only where this machine has them"
fi

# 1. The kernels compiled (or interpreted) against NumPy float64, before any timing relies on them.
KC=(--layers "${KERNEL_LAYERS[@]}" --batch "$KBATCH")
if [[ $MODE == cpu ]]; then KC+=(--interpret); fi
step kernel-check-jax "$T_KERNEL" bash -c "$PY -m benchmarks.kernel_check --framework jax ${KC[*]} | tee $WORK/kernel-check.txt"
step kernel-check-torch "$T_KERNEL" bash -c "$PY -m benchmarks.kernel_check --framework torch ${KC[*]} | tee -a $WORK/kernel-check.txt"

# 2. Every layer, both frameworks, float32: ours, dense, einsum, TensorLy-Torch, torchTT (torch.compile and the
#    kernels in step 4, where they have the time their compilations need).
step layers-float32 "$T_F32" "$PY" -m benchmarks.run --device "$DEVICE" --layers "${LAYERS[@]}" "${F32[@]}" \
  --candidates ours dense einsum tensorly torchtt --no-compile --out "$WORK/layers-float32.md"
# 3. The same in bfloat16 at the large batches.
step layers-bfloat16 "$T_BF16" "$PY" -m benchmarks.run --device "$DEVICE" --layers "${LAYERS[@]}" "${BF16[@]}" \
  --dtypes bfloat16 --candidates ours dense einsum --no-compile --no-memory --out "$WORK/layers-bfloat16.md"
# 4. The fused kernels against their baselines (XLA, torch eager and torch.compile) where they apply.
step fused-kernels "$T_FUSED" "$PY" -m benchmarks.run --device "$DEVICE" --layers "${FUSED_LAYERS[@]}" \
  "${FUSED[@]}" --candidates ours ours-compiled pallas triton --no-memory "${INTERPRET[@]}" \
  --out "$WORK/fused-kernels.md"
# 5. Whole training steps of the thesis's networks against their dense versions.
step networks "$T_NETS" "$PY" -m benchmarks.networks --device "$DEVICE" "${NETS[@]}" --out "$WORK/networks.md"
