#!/usr/bin/env bash
# The one device script of issue #6's GPU check: pgmld-llm (crates/pgmld-llm/examples/llm_check,
# carried as a stripped release binary) against transformers + peft (hf_llm_check.py) on the
# same randomly initialised SmolLM2-135M-shaped model, data and settings, in one call.
#
#   bash bench/chat/gpu/prepare.sh               # here: build, export tokenizer/config, data -> .devcarry/chat-gpu/
#   bash bench/chat/gpu/run.sh                   # on the device (run tool, carry [".devcarry/chat-gpu"])
#   TINY=1 OUT=/tmp/llm-dry bash bench/chat/gpu/run.sh   # dry run here on CPU (2 layers, few steps)
#
# Writes $OUT/results.jsonl (every JSON line of both sides, plus one "side": "runner" line per
# process with its wall time, exit status and nvidia-smi peak memory), $OUT/run.log (stderr of
# everything) and $OUT/report.md (report.py's tables, also printed last).
# Environment (defaults): CARRY (.devcarry/chat-gpu) STEPS (50; TINY 4) CPU_STEPS (4; TINY 2) LOG_STEPS
# (5; TINY 1) GEN_TOKENS (128; TINY 16) GEN_REPS (3; TINY 1) REPS (2: fp32 and bf16 runs per side)
# BUDGET_S (330: an optional process starts only when the elapsed time plus the last wall time of
# its kind stays under it) HARD_S (360: after this no process starts at all) PROC_TIMEOUT_S (60:
# each process is killed after it) PY (/opt/torch/.venv/bin/python3, else python3) TINY (0)
# PHASES (gpu,cpu: "gpu" = steps 2-5 on the GPU, "cpu" = the CPU comparison on the machine's cores,
# required when "gpu" is absent, REPS times; "peft" = crates/pgmld-llm/examples/peft_roundtrip.py
# with the carried peft_roundtrip binary against the machine's transformers + peft).
# Worst case HARD_S + PROC_TIMEOUT_S = 420 s (7 min); the required part should take 3-4 min.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
HERE=$ROOT/bench/chat/gpu
CARRY=${CARRY:-$ROOT/.devcarry/chat-gpu}
OUT=${OUT:-/tmp/llm_check_out}
TINY=${TINY:-0}
if [[ $TINY == 1 ]]; then d_steps=4 d_cpu=2 d_log=1 d_gen=16 d_greps=1 d_layers=2; else d_steps=50 d_cpu=4 d_log=5 d_gen=128 d_greps=3 d_layers=0; fi
STEPS=${STEPS:-$d_steps} CPU_STEPS=${CPU_STEPS:-$d_cpu} LOG_STEPS=${LOG_STEPS:-$d_log}
GEN_TOKENS=${GEN_TOKENS:-$d_gen} GEN_REPS=${GEN_REPS:-$d_greps} REPS=${REPS:-2}
PHASES=",${PHASES:-gpu,cpu},"
BUDGET_S=${BUDGET_S:-330} HARD_S=${HARD_S:-360} PROC_TIMEOUT_S=${PROC_TIMEOUT_S:-60}
PY=${PY:-/opt/torch/.venv/bin/python3}
[[ -x $PY ]] || PY=python3
BIN=$CARRY/llm_check
DATA=$CARRY/chitchat.jsonl
CFG=$CARRY/smollm2-hf
WORK=$(mktemp -d /tmp/llm_check.XXXXXX)
MODEL=$WORK/model
RESULTS=$OUT/results.jsonl
LOG=$OUT/run.log
mkdir -p "$OUT"
: >"$RESULTS"
: >"$LOG"
START=$(date +%s%3N)
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

# Whole seconds since the start (bash arithmetic only: the device image may lack bc).
elapsed() { echo $((($(date +%s%3N) - START) / 1000)); }
log() { printf '[gpu-check %4ss] %s\n' "$(elapsed)" "$*" | tee -a "$LOG" >&2; }
for f in "$BIN" "$DATA" "$CFG/config.json" "$CFG/tokenizer.json" "$CFG/tokenizer_config.json"; do
  [[ -e $f ]] || { echo "missing $f: run bench/chat/gpu/prepare.sh here first" >&2; exit 2; }
done

# The binary links the lean libtorch_cpu; the machine's torch (same 2.11.0) gives it CUDA.
TORCH_LIB=$("$PY" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') || exit 2
export LD_LIBRARY_PATH=$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if nvidia-smi -L >/dev/null 2>&1 && "$PY" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  DEV=cuda
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,power.draw,temperature.gpu \
    --format=csv | tee -a "$LOG"
else
  DEV=cpu
  log "no GPU: dry run, every step on the CPU"
fi
log "device $DEV, python $PY, torch lib $TORCH_LIB, steps $STEPS, cpu steps $CPU_STEPS, gen $GEN_TOKENS x $GEN_REPS"

# Last wall time per kind of process: a process starts only if it should end inside BUDGET_S.
declare -A LAST=([make]=20 [pgmld_train]=25 [hf_train]=35 [pgmld_gen]=15 [hf_gen]=20 [check]=25 [cpu]=40)

# measure NAME KIND REQUIRED CMD...: runs CMD (its stdout: JSON lines) under a timeout, sampling
# nvidia-smi's memory.used every 100 ms; appends its lines and a runner line to results.jsonl.
# REQUIRED=1 starts even past BUDGET_S (never past HARD_S).
measure() {
  local name=$1 kind=$2 required=$3
  shift 3
  local now est
  now=$(elapsed)
  est=${LAST[$kind]:-30}
  if ((now > HARD_S)) || { [[ $required != 1 ]] && ((now + est > BUDGET_S)); }; then
    log "skip $name (elapsed ${now}s, ~${est}s more; budget ${BUDGET_S}s, hard stop ${HARD_S}s)"
    printf '{"side":"runner","run":"%s","skipped":true}\n' "$name" >>"$RESULTS"
    return 0
  fi
  local smi=$WORK/smi.$name base=0 peak=0 pid=""
  if [[ $DEV == cuda ]]; then
    base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$smi" 2>/dev/null &
    pid=$!
  fi
  log "start $name: $*"
  local t0 t1 rc
  t0=$(date +%s%3N)
  timeout "$PROC_TIMEOUT_S" "$@" >"$WORK/out.$name" 2>>"$LOG"
  rc=$?
  t1=$(date +%s%3N)
  if [[ -n $pid ]]; then
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    peak=$(sort -n "$smi" | tail -1)
  fi
  local ms=$((t1 - t0))
  local wall=$((ms / 1000)).$(printf '%03d' $((ms % 1000)))
  LAST[$kind]=$(((ms + 999) / 1000))
  grep '^{"' "$WORK/out.$name" >>"$RESULTS"
  printf '{"side":"runner","run":"%s","kind":"%s","rc":%d,"wall_s":%.2f,"gpu_baseline_mib":%s,"gpu_peak_used_mib":%s}\n' \
    "$name" "$kind" "$rc" "$wall" "${base:-0}" "${peak:-0}" >>"$RESULTS"
  log "done  $name rc=$rc ${wall}s gpu peak ${peak:-0} MiB: $(grep '^{"' "$WORK/out.$name" | cut -c1-300 | tr '\n' ' ')"
}

# The two sides' commands (timeout runs programs, not shell functions).
pg=("$BIN")
hf=("$PY" "$HERE/hf_llm_check.py")
LAYERS=()
[[ $d_layers != 0 ]] && LAYERS=(--layers "$d_layers")

# 1. One random-weight model directory both sides load.
measure make_model make 1 "${hf[@]}" make-model --config-dir "$CFG" --out "$MODEL" "${LAYERS[@]}" --seed 0
[[ -f $MODEL/config.json ]] || { log "no model was made"; exit 1; }

if [[ $PHASES == *,gpu,* ]]; then
# 2. Correctness: pgmld on $DEV vs pgmld on the CPU; HF on $DEV vs pgmld's CPU logits/tokens.
measure pgmld_correctness check 1 "${pg[@]}" correctness "$MODEL" --device "$DEV" --new-tokens 32 --dump "$WORK/dump" --tag correctness
measure hf_logits check 1 "${hf[@]}" logits --model "$MODEL" --device "$DEV" --dump "$WORK/dump" --new-tokens 32

# 3. Training, alternating sides; fp32 and bf16 REPS times each.
train_pg() { measure "pgmld_train_$1_r$2" pgmld_train "$3" "${pg[@]}" train "$MODEL" "$DATA" --device "$DEV" --option "$1" --steps "$STEPS" --logging-steps "$LOG_STEPS" --tag "pgmld_train_$1_r$2"; }
train_hf() { measure "hf_train_$1_r$2" hf_train "$3" "${hf[@]}" train --model "$MODEL" --rows "$DATA" --device "$DEV" --option "$1" --steps "$STEPS" --logging-steps "$LOG_STEPS" --workdir "$WORK/hf" --tag "hf_train_$1_r$2"; }
for opt in fp32 bf16; do
  train_pg "$opt" 1 1
  train_hf "$opt" 1 1
done
# cuda_graphs (pgmld's alone; its HF rows are fp32's and bf16's): the plugin built here
# against the machine's torch with the carried crt/ and nv/ headers.
graph_opts=""
if CUDA_INCLUDE=$CARRY/cuda-crt/include bash "$ROOT/scripts/build-cuda-plugins.sh" "$WORK/plugin" >>"$LOG" 2>&1 \
  || [[ -f $WORK/plugin/libpgmld_cuda_graph.so ]]; then
  export PGMLD_CUDA_GRAPH_PLUGIN=$WORK/plugin/libpgmld_cuda_graph.so
  graph_opts="graphs bf16_graphs"
fi
for opt in load_in_8bit adamw_bnb_8bit gradient_checkpointing $graph_opts; do train_pg "$opt" 1 1; done
train_hf gradient_checkpointing 1 1

# 4. Greedy generation with the KV cache.
for dt in fp32 bf16; do
  measure "pgmld_gen_$dt" pgmld_gen 1 "${pg[@]}" generate "$MODEL" --device "$DEV" --dtype "$dt" --max-new-tokens "$GEN_TOKENS" --reps "$GEN_REPS" --tag "pgmld_gen_$dt"
  measure "hf_gen_$dt" hf_gen 1 "${hf[@]}" generate --model "$MODEL" --device "$DEV" --dtype "$dt" --max-new-tokens "$GEN_TOKENS" --reps "$GEN_REPS" --tag "hf_gen_$dt"
done

# 5. Optional, while the budget lasts: the second fp32/bf16 reps, then CPU on the machine's cores.
for r in $(seq 2 "$REPS"); do
  for opt in fp32 bf16; do
    train_hf "$opt" "$r" 0
    train_pg "$opt" "$r" 0
  done
done
fi
if [[ $PHASES == *,cpu,* && $DEV == cuda ]]; then
  # Without the GPU phase the CPU comparison is the point of the call: required, REPS times.
  req=0 cpu_reps=1
  [[ $PHASES != *,gpu,* ]] && req=1 cpu_reps=$REPS
  rss=("$PY" "$HERE/maxrss.py") # peak RSS of each CPU process, both sides alike
  for r in $(seq 1 "$cpu_reps"); do
    measure "pgmld_cpu_train_r$r" cpu "$req" "${rss[@]}" "pgmld_cpu_train_r$r" "${pg[@]}" train "$MODEL" "$DATA" --device cpu --option fp32 --steps "$CPU_STEPS" --logging-steps 1 --tag "pgmld_cpu_train_r$r"
    measure "hf_cpu_train_r$r" cpu "$req" "${rss[@]}" "hf_cpu_train_r$r" "${hf[@]}" train --model "$MODEL" --rows "$DATA" --device cpu --option fp32 --steps "$CPU_STEPS" --logging-steps 1 --workdir "$WORK/hf" --tag "hf_cpu_train_r$r"
    measure "pgmld_cpu_gen_r$r" cpu "$req" "${rss[@]}" "pgmld_cpu_gen_r$r" "${pg[@]}" generate "$MODEL" --device cpu --dtype fp32 --max-new-tokens 32 --reps 1 --tag "pgmld_cpu_gen_r$r"
    measure "hf_cpu_gen_r$r" cpu "$req" "${rss[@]}" "hf_cpu_gen_r$r" "${hf[@]}" generate --model "$MODEL" --device cpu --dtype fp32 --max-new-tokens 32 --reps 1 --tag "hf_cpu_gen_r$r"
  done
fi
if [[ $PHASES == *,peft,* ]]; then
  "$PY" "$ROOT/crates/pgmld-llm/examples/peft_roundtrip.py" --bin "$CARRY/peft_roundtrip" 2>>"$LOG" | tee -a "$OUT/peft_roundtrip.txt" >&2
  log "peft round trip exit ${PIPESTATUS[0]}"
fi

log "all done; report:"
"$PY" "$HERE/report.py" "$RESULTS" --out "$OUT/report.md" || python3 "$HERE/report.py" "$RESULTS" --out "$OUT/report.md"
rm -rf "$WORK"
