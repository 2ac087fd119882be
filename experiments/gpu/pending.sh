#!/usr/bin/env bash
# The runs the README's status table waits for, most wanted first, within one device call:
#   . experiments/gpu/setup.sh && experiments/gpu/pending.sh [SECONDS (480)] [STEPS]
# STEPS (default "bench datasets cql-quality finetune model-based bench-model-based") picks
# and orders them:
#   bench         GPU speed of every learner, 1 and 3 seeds, into experiments/results/speed_gpu.*
#                 (issue 3, which waits for nothing else; a few minutes)
#   datasets      the five quality-table datasets, 1M steps each (issue 4)
#   cql-quality   CQL on them, 100k updates, 3 seeds per run (issue 4)
#   finetune      CQL and Cal-QL, 100k offline updates + 100k env steps, joining IQL's, ReBRAC's
#                 and SAC's CPU rows in finetune_100k.* (issue 7)
#   model-based   RAVL and MOREC on three of them (issue 5; needs walker2d-medium-replay)
#   bench-model-based  GPU speed of the model-based pieces into speed_model_based_gpu.* (issue 5)
# (the log keeps what a cut-off bench printed)
# Every step can be cut off and started again: datasets made already are kept, finished runs
# are skipped and cut-off ones resume from their last checkpoint: the deadline's SIGTERM lets
# a run checkpoint the chunk it is in (its 20 s grace, then SIGKILL: at most 10k updates back).
# So calling the script again on the same machine continues where the last call stopped
# (a bench starts over).
# SECONDS is the whole call's budget: the running step is stopped when it is spent, and what
# there is goes into $OUT/pending.tar.gz (run configs, metrics and results, no checkpoints;
# unpack it in the repository root) with the log beside it. Leave the device call's timeout
# about a minute above SECONDS for the packing.
set -uo pipefail
cd "$(dirname "$0")/../.."
budget=${1:-480}
steps=${2:-bench datasets cql-quality finetune model-based bench-model-based}
python=${PYTHON:-python3}
out=${OUT:-/tmp/offrl-pending}
mkdir -p "$out"
log="$out/pending.log"
deadline=$((SECONDS + budget))

step() {  # step NAME COMMAND...: run it until the deadline, logging both
    local name=$1 left=$((deadline - SECONDS))
    shift
    if ((left <= 5)); then
        echo "== $name: not started, the budget is spent" | tee -a "$log"
        return
    fi
    echo "== $name ($left s left): $*" | tee -a "$log"
    # timeout signals the whole process group, so sweep workers stop with their driver
    timeout --signal=TERM --kill-after=20 "$left" "$@" >> "$log" 2>&1
    local status=$?
    if ((status == 124)); then status="cut off at the deadline"; fi
    echo "== $name: exit $status after $((budget - (deadline - SECONDS))) s of the call" | tee -a "$log"
}

offrl="$python -P -m offrl.tools.cli"  # -P: run the installed offrl, not the checkout's offrl/ (setup.sh)
workers=$(($(nproc) > 2 ? $(nproc) - 2 : 1))
for name in $steps; do
    case $name in
        datasets) step datasets $offrl datasets generate hopper-medium hopper-medium-replay halfcheetah-medium \
            walker2d-medium walker2d-medium-replay --missing --workers "$workers" ;;
        cql-quality) step cql-quality $offrl sweep experiments/sweeps/quality.yaml --algorithms cql --workers 2 ;;
        finetune) step finetune "$python" experiments/finetune_experiment.py --agents cql,cql+cal-ql \
            --runs runs/finetune_100k --out finetune_100k --include experiments/results/finetune_100k.json ;;
        model-based) step model-based $offrl sweep experiments/sweeps/model_based.yaml --workers 2 ;;
        bench) step bench "$python" experiments/bench_speed.py --algos td3_bc,iql,rebrac,cql,sac,bc \
                   --seeds 1,3 --rounds 1 --chunk-scale 10 --out speed_gpu ;;
        bench-model-based) step bench-model-based "$python" experiments/bench_model_based.py --seeds 1,3 \
                   --out speed_model_based_gpu ;;
        *) echo "unknown step $name (bench, datasets, cql-quality, finetune, model-based, bench-model-based)" >&2
           exit 2 ;;
    esac
done

results=$(ls -d runs/sweeps/quality runs/sweeps/model-based runs/finetune_100k \
    experiments/results/finetune_100k.* experiments/results/speed*_gpu.* 2>/dev/null)
if [[ -n $results ]]; then
    tar czf "$out/pending.tar.gz" --exclude=checkpoints --exclude=snapshots --exclude=wandb \
        --exclude='*.msgpack' $results
    echo "packed into $out/pending.tar.gz ($(du -h "$out/pending.tar.gz" | cut -f1)): $results" | tee -a "$log"
fi
