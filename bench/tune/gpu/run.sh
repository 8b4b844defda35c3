#!/usr/bin/env bash
# The one device script for issue #18's training rows and issue #16's NCCL check, in one call
# on a lent GPU machine (no cargo, no Postgres, no internet there; torch 2.11.0+cu130):
#   1. builds libpgmld_nccl.so and libpgmld_cuda_graph.so with the machine's torch
#      (scripts/build-cuda-plugins.sh, with the carried crt headers) and runs the carried
#      pgmld-kernels tests, then each built plugin's ignored GPU test (c10d's ProcessGroupNCCL
#      on every GPU: all-reduce, broadcast, barrier; a CUDA graph captured and replayed);
#   2. fine-tunes the real MiniLM-L6 on IMDB reviews with pgml.tune's trainer (tune_check) and
#      with transformers.Trainer (hf_gpu.py), alternating, per option (fp32, bf16, tf32; and
#      pgmld alone with cuda_graphs: graphs, bf16graphs), REPS times each; nvidia-smi's peak
#      memory per process;
#   3. without dropout, 400 examples eagerly and with cuda_graphs: the loss curves must agree;
#   4. 8 steps each of fp32, bf16, graphs and bf16graphs under torch.profiler (tune_check's
#      PGMLD_PROFILE_TRACE), and 8 of the Trainer's in fp32 and bf16 (hf_gpu.py's
#      HF_PROFILE_TRACE), summed up by trace_summary.py (kernels, GPU busy time, launches,
#      casts); the traces come back as $OUT/trace_*.json.gz;
#   5. the fp32 fine-tune again as rank 0 of a data-parallel group of one (NCCL on the GPU);
#   6. the repetitions of step 2 after the first, while time is left;
#   7. prints report.py's table and the profiles' summaries (also $OUT/report.md).
#
#   bash bench/tune/gpu/prepare.sh                # here: binaries, fp16 MiniLM, rows -> .devcarry/tune-gpu
#   TINY=1 OUT=/tmp/tune-gpu-dry bash bench/tune/gpu/run.sh   # dry run here on the CPU (~3 min)
#   # device (run tool): command "bash bench/tune/gpu/run.sh", carry [".devcarry/tune-gpu"], timeout_s 540
#
# Environment (defaults): OUT ($OUT or /tmp/tune-gpu-out) CARRY (.devcarry/tune-gpu) N_TRAIN
# (4000; TINY 64) N_EVAL (1000; TINY 32) OPTIONS ("fp32 graphs bf16 bf16graphs tf32"; TINY
# "fp32 graphs") REPS (2; TINY 1)
# HARD_S (420: no process starts after it) PROC_TIMEOUT_S (90) PY (python3)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
HERE=$ROOT/bench/tune/gpu
CARRY=${CARRY:-$ROOT/.devcarry/tune-gpu}
OUT=${OUT:-/tmp/tune-gpu-out}
TINY=${TINY:-0}
if [[ $TINY == 1 ]]; then d_train=64 d_eval=32 d_opts="fp32 graphs" d_reps=1; else d_train=4000 d_eval=1000 d_opts="fp32 graphs bf16 bf16graphs tf32" d_reps=2; fi
N_TRAIN=${N_TRAIN:-$d_train} N_EVAL=${N_EVAL:-$d_eval} OPTIONS=${OPTIONS:-$d_opts} REPS=${REPS:-$d_reps}
HARD_S=${HARD_S:-420} PROC_TIMEOUT_S=${PROC_TIMEOUT_S:-90}
PY=${PY:-python3}
RESULTS=$OUT/results.jsonl
LOG=$OUT/run.log
WORK=$(mktemp -d /tmp/tune-gpu.XXXXXX)
mkdir -p "$OUT"
: >"$RESULTS"
: >"$LOG"
START=$(date +%s%3N)
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

elapsed() { echo $((($(date +%s%3N) - START) / 1000)); }
log() { printf '[tune-gpu %4ss] %s\n' "$(elapsed)" "$*" | tee -a "$LOG" >&2; }
for f in tune_check kernels_test imdb.csv minilm/model.safetensors minilm/tokenizer.json; do
  [[ -e $CARRY/$f ]] || { echo "missing $CARRY/$f: run bench/tune/gpu/prepare.sh here first" >&2; exit 2; }
done

# The binaries link the lean libtorch_cpu; the machine's torch (same 2.11.0) gives them CUDA.
TORCH_LIB=$("$PY" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') || exit 2
export LD_LIBRARY_PATH=$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if nvidia-smi -L >/dev/null 2>&1 && "$PY" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  GPU=1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$LOG"
else
  GPU=0
  log "no GPU: dry run on the CPU"
fi

# record NAME JSON: one line of results.
record() { printf '%s\n' "$2" >>"$RESULTS"; log "$1: $(printf '%s' "$2" | cut -c1-300)"; }

# measure NAME SIDE OPTION CMD...: runs CMD under a timeout with nvidia-smi sampling; its last
# JSON line goes to results with side, option, run name, wall time, exit status, peak memory.
measure() {
  local name=$1 side=$2 option=$3
  shift 3
  if (($(elapsed) > HARD_S)); then
    record "$name" "{\"side\":\"runner\",\"run\":\"$name\",\"skipped\":true}"
    return 0
  fi
  local smi=$WORK/smi.$name pid="" peak=0 t0 t1 rc
  if [[ $GPU == 1 ]]; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$smi" 2>/dev/null &
    pid=$!
  fi
  log "start $name: $*"
  t0=$(date +%s%3N)
  timeout "$PROC_TIMEOUT_S" "$@" >"$WORK/out.$name" 2>>"$LOG"
  rc=$?
  t1=$(date +%s%3N)
  if [[ -n $pid ]]; then
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    peak=$(sort -n "$smi" | tail -1)
  fi
  local last
  last=$(grep '^{' "$WORK/out.$name" | tail -1)
  [[ -n $last ]] || last='{}'
  record "$name" "$("$PY" -c 'import json, sys
d = json.loads(sys.argv[1]); d.update(run=sys.argv[2], side=sys.argv[3], option=sys.argv[4], rc=int(sys.argv[5]), wall_s=int(sys.argv[6]) / 1000, gpu_peak_used_mib=int(sys.argv[7] or 0))
print(json.dumps(d))' "$last" "$name" "$side" "$option" "$rc" "$((t1 - t0))" "${peak:-0}")"
}

# 1. The plugins from the machine's torch, then the kernels tests, then each built plugin's
#    ignored GPU test.
CUDA_INCLUDE=$CARRY/cuda-crt/include bash "$ROOT/scripts/build-cuda-plugins.sh" "$WORK/plugin" >>"$LOG" 2>&1
plugin="" graph_plugin=""
for p in nccl cuda_graph; do
  f=$WORK/plugin/libpgmld_$p.so
  if [[ -f $f ]]; then
    record "plugin_$p" "{\"side\":\"plugins\",\"run\":\"$p\",\"built\":true,\"bytes\":$(stat -c %s "$f")}"
  else
    record "plugin_$p" "{\"side\":\"plugins\",\"run\":\"$p\",\"built\":false}"
  fi
done
[[ -f $WORK/plugin/libpgmld_nccl.so ]] && plugin=$WORK/plugin/libpgmld_nccl.so
[[ -f $WORK/plugin/libpgmld_cuda_graph.so ]] && graph_plugin=$WORK/plugin/libpgmld_cuda_graph.so
export PGMLD_NCCL_PLUGIN=$plugin PGMLD_CUDA_GRAPH_PLUGIN=$graph_plugin
# kernels NAME [ARGS...]: one run of the kernels test binary, its counts to results.
kernels() {
  local name=$1
  shift
  timeout 120 "$CARRY/kernels_test" --test-threads 1 --nocapture "$@" >"$WORK/out.$name" 2>&1
  local rc=$? passed failed line
  cat "$WORK/out.$name" >>"$LOG"
  passed=$(grep -o '[0-9]* passed' "$WORK/out.$name" | tail -1 | cut -d' ' -f1)
  failed=$(grep -o '[0-9]* failed' "$WORK/out.$name" | tail -1 | cut -d' ' -f1)
  line=$(grep -m1 -E '^(NCCL group of|CUDA graph:)' "$WORK/out.$name" | tr -d '"')
  record "$name" "{\"side\":\"plugins\",\"run\":\"$name\",\"rc\":$rc,\"passed\":${passed:-0},\"failed\":${failed:-0},\"line\":\"$line\"}"
}
kernels kernels_test
if [[ $GPU == 1 ]]; then
  [[ -n $plugin ]] && kernels nccl_test --ignored nccl_sums_and_broadcasts_on_every_cuda_device
  [[ -n $graph_plugin ]] && kernels cuda_graph_test --ignored a_captured_step_replays_with_new_inputs
fi

# 2. Training, alternating sides (which side starts alternates per repetition). Repetitions
#    after the first run last (step 6), so the checks below get their time first.
pg() { measure "pgmld_$1_r$2" pgmld "$1" "$CARRY/tune_check" "$CARRY/minilm" "$CARRY/imdb.csv" "$N_TRAIN" "$N_EVAL" $3; }
hf() { measure "hf_$1_r$2" hf "$1" "$PY" "$HERE/hf_gpu.py" "$CARRY/minilm" "$CARRY/imdb.csv" "$N_TRAIN" "$N_EVAL" $3 --tag "hf_$1_r$2"; }
# flags OPTION: tune_check's arguments for an option.
flags() { case $1 in fp32) echo "" ;; graphs) echo graphs ;; bf16graphs) echo "bf16 graphs" ;; *) echo "$1" ;; esac; }
# repetition REP: every option once, pgmld and HF (the cuda_graphs options are pgmld's alone).
repetition() {
  local rep=$1 opt f
  for opt in $OPTIONS; do
    f=$(flags "$opt")
    case $opt in
      graphs | bf16graphs) pg "$opt" "$rep" "$f" ;; # HF's row is fp32's / bf16's
      *) if ((rep % 2 == 1)); then pg "$opt" "$rep" "$f"; hf "$opt" "$rep" "$f"; else hf "$opt" "$rep" "$f"; pg "$opt" "$rep" "$f"; fi ;;
    esac
  done
}
repetition 1

# 3. Without dropout, eager and with cuda_graphs on the same rows: the curves must agree.
for g in "" graphs; do
  measure "pgmld_nodrop${g:+_$g}" curve "nodrop${g:+ $g}" "$CARRY/tune_check" "$CARRY/minilm" "$CARRY/imdb.csv" "$((N_TRAIN / 10))" "$((N_EVAL / 10))" nodrop $g
done

# 4. Where a step's time goes (#18's profile): 8 steps of each under torch.profiler, summed up
#    by trace_summary.py; the traces come back gzipped.
: >"$WORK/traces.md"
for opt in fp32 bf16 graphs bf16graphs; do
  trace=$WORK/trace_$opt.json
  PGMLD_PROFILE_TRACE=$trace measure "profile_$opt" profile "$opt" "$CARRY/tune_check" "$CARRY/minilm" "$CARRY/imdb.csv" 128 16 $(flags "$opt")
  if [[ -s $trace ]]; then
    "$PY" "$HERE/trace_summary.py" "$trace" --steps 8 --tag "$opt" >"$WORK/summary.$opt" 2>>"$LOG"
    record "trace_$opt" "$(head -1 "$WORK/summary.$opt")"
    tail -n +2 "$WORK/summary.$opt" >>"$WORK/traces.md"
    gzip -c "$trace" >"$OUT/trace_$opt.json.gz"
  fi
done
# The Trainer's side of the same profile (fp32 and bf16): optimizer steps 2-9 of 9, so the
#    launches per step compare as the CPU census (bench/tune/op_census.sh) compared them.
for opt in fp32 bf16; do
  trace=$WORK/trace_hf_$opt.json
  HF_PROFILE_TRACE=$trace HF_PROFILE_STEPS=8 measure "profile_hf_$opt" profile "hf_$opt" "$PY" "$HERE/hf_gpu.py" "$CARRY/minilm" "$CARRY/imdb.csv" 144 16 $(flags "$opt") --tag "profile_hf_$opt"
  if [[ -s $trace ]]; then
    "$PY" "$HERE/trace_summary.py" "$trace" --steps 8 --tag "hf_$opt" >"$WORK/summary.hf_$opt" 2>>"$LOG"
    record "trace_hf_$opt" "$(head -1 "$WORK/summary.hf_$opt")"
    tail -n +2 "$WORK/summary.hf_$opt" >>"$WORK/traces.md"
    gzip -c "$trace" >"$OUT/trace_hf_$opt.json.gz"
  fi
done

# 5. Issue #16 on one GPU: the same fp32 fine-tune as rank 0 of a data-parallel group of one
#    (NCCL with the plugin on CUDA, Gloo on the CPU), so world_size's collective path runs.
PGMLD_NCCL_PLUGIN=$plugin measure pgmld_group1 group fp32 "$CARRY/tune_check" "$CARRY/minilm" "$CARRY/imdb.csv" "$N_TRAIN" "$N_EVAL" group1

# 6. The other repetitions of step 2, while time is left (measure skips past HARD_S).
for rep in $(seq 2 "$REPS"); do repetition "$rep"; done
{ "$PY" "$HERE/report.py" "$RESULTS"; echo; cat "$WORK/traces.md"; } | tee "$OUT/report.md"
log "done in $(elapsed) s; results in $OUT"
