#!/usr/bin/env bash
# make imbalance-table: README "Rare classes". Every class-imbalance option on the imbalanced demo
# (python -m data.demo --imbalance), each alone against plain CE, --balance over three seeds, and one pseudo-label
# round with the global threshold against the class-balanced one (CBST), both against their control (the same
# student, same init and iterations, labels only), the same labels for students trained afresh (their control: the
# plain row), and the round again from the stronger --balance teacher. Then one table (bench/imbalance_table.py).
#
#   make imbalance-table                    # the demo recipe (3000 iters): ~7 min a run on 2 idle cores, 18 runs
#   OMP_NUM_THREADS=1 ROWS="..." bash bench/imbalance.sh   # two lanes of disjoint rows side by side: ~30% sooner
#   make imbalance-table ITERS=300          # smoke test of the whole path: its figures mean nothing
#   ROWS="plain balance_s0" bash bench/imbalance.sh    # only these rows (names as in the table)
#
# A finished run (its metrics hold a validation at the last iteration) is skipped, an interrupted one resumed, so the
# table can be built over several sessions. Runs go to $EXP (default runs/imbalance), one folder per row.
# Every run and labelling pass is fp32 (--amp none): the table was measured in fp32, and --amp auto now trains in
# bf16 on a CPU with native bf16.
set -euo pipefail
cd "$(dirname "$0")/.."
ITERS="${ITERS:-}"
EXP="${EXP:-runs/imbalance${ITERS:+_it$ITERS}}"  # a smoke test never mixes with the real table's runs
DEMO_ITERS=3000  # the Makefile's demo recipe
DATA=demo_imbalanced
PY=.venv/bin/python
MAKE="${MAKE:-make}"
export PYTHONUNBUFFERED=1
mkdir -p "$EXP"
[ -f "$DATA/train.json" ] || $MAKE -s data-imbalanced

# name | train.py flags (beyond the demo recipe). OHEM's min_kept is per image: mmseg's 100000 is ~19% of a
# 512×1024 Cityscapes crop; 3000 is the same share of the demo's 128² crops (100000 would keep every pixel).
ALL_ROWS=(
  "plain|"
  "class_weight|--class-weight auto"
  "ohem|--ohem 0.7 --ohem-min-kept 3000"
  "focal|--loss focal:1"
  "dice|--loss ce:1 dice:0.5"
  "lovasz|--loss ce:1 lovasz:0.5"
  "rcs|--rare-class-sampling 0.01"
  "balance_s0|--balance --seed 0"
  "balance_s1|--balance --seed 1"
  "balance_s2|--balance --seed 2"
)
want() { [ -z "${ROWS:-}" ] || [[ " $ROWS " == *" $1 "* ]]; }

finished() {  # $1 run dir: trained for ${ITERS:-DEMO_ITERS} iterations, with a validation at the last one
  "$PY" - "$1" "${ITERS:-$DEMO_ITERS}" <<'EOF'
import json, os, sys
d, want = sys.argv[1], int(sys.argv[2])
try:
    it = json.load(open(os.path.join(d, "args.json")))["iters"]
    recs = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl")) if '"miou"' in l]
except (OSError, ValueError, KeyError):
    sys.exit(1)
sys.exit(0 if it == want and any(r["iter"] == it for r in recs) else 1)
EOF
}

train() {  # $1 name, $2 extra train.py flags
  local out="$EXP/$1"
  if finished "$out"; then echo "== $1: done, skipped"; return; fi
  echo "== $1: $2  ($(date -u +%H:%M:%S))"
  $MAKE -s train DATA_ROOT=$DATA EXP="$out" ITERS="$ITERS" \
    ARGS="--amp none $2 --resume --no-progress --log-interval 500" > "$out.log" 2>&1 || { tail -20 "$out.log"; exit 1; }
  grep -E "final val|IoU, rarest" "$out.log" | tail -2
}

for row in "${ALL_ROWS[@]}"; do
  name="${row%%|*}"; flags="${row#*|}"
  want "$name" && train "$name" "$flags"
done

# Pseudo-label rounds. Unlabelled = test + extra (make pseudo's demo sources), TTA as make pseudo.
#   pl_*      teacher = the plain run; students start from it with the same recipe. pl_control: the same student,
#             init and iterations, labels only. pl_*_fresh: the same labels for a student trained afresh (no --init),
#             whose control is the plain row itself, so a gain there is the labels' and not continued training's.
#   pl_bal_*  teacher strength: teacher = balance_s0 (the stronger model), students and control with --balance.
need() { [ -f "$1" ] || { echo "no teacher $1: run its row first"; exit 1; }; }
labels() {  # $1 tag, $2 teacher, $3 mode (global|cbst): pseudo-labels in $EXP/labels_$1
  local sel="--threshold-mode global"; [ "$3" = cbst ] && sel="--threshold-mode class-balanced --keep 0.5"
  need "$2"
  if [ ! -f "$EXP/labels_$1/pseudo.json" ]; then
    echo "== labels_$1: teacher $2, $sel"
    "$PY" pseudo_label.py --ckpt "$2" --data-root $DATA --json test.json extra.json --tta \
      --out "$EXP/labels_$1" $sel --workers 2 --amp none 2>&1 | sed "/^pseudo-label/d" | tail -3
  fi
}
PLAIN_T="$EXP/plain/best.pt"
BAL_T="$EXP/balance_s0/best.pt"
for mode in global cbst; do
  if want "pl_$mode" || want "pl_${mode}_fresh"; then labels "$mode" "$PLAIN_T" $mode; fi
  want "pl_$mode" && train "pl_$mode" "--init $PLAIN_T --train-json train.json $EXP/labels_$mode/pseudo.json"
  want "pl_${mode}_fresh" && train "pl_${mode}_fresh" "--train-json train.json $EXP/labels_$mode/pseudo.json"
done
want pl_control && need "$PLAIN_T" && train pl_control "--init $PLAIN_T"
for mode in global cbst; do
  want "pl_bal_$mode" || continue
  labels "bal_$mode" "$BAL_T" $mode
  train "pl_bal_$mode" "--balance --seed 0 --init $BAL_T --train-json train.json $EXP/labels_bal_$mode/pseudo.json"
done
want pl_bal_control && need "$BAL_T" && train pl_bal_control "--balance --seed 0 --init $BAL_T"

"$PY" bench/imbalance_table.py --exp "$EXP" ${ITERS:+--note "ITERS=$ITERS: a smoke test, the figures mean nothing"}
