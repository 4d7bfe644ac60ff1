# trashseg — every stage is a make target; each one works on a fresh machine.
#   make train      venv + deps + ops + demo data, trains the small model on the CPU, prints val mIoU
#   make test       the test suite (CPU; GPU tests skip themselves; make test-heavy: the heavy rest)
# Variables: DATA_ROOT (default: the bundled demo data; demo_imbalanced: the competition's class imbalance),
#   MODEL, ITERS, NPROC, EXP.

SHELL := /bin/bash
PYTHON_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

DEMO_ROOT := demo_data
DEMO_IMB_ROOT := demo_imbalanced
DATA_ROOT ?= $(DEMO_ROOT)
MODEL ?= upernet_convnext_demo
ITERS ?=
NPROC ?= 1
EXP ?= runs/demo

export PYTHONUNBUFFERED := 1
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

.PHONY: setup test test-heavy data data-imbalanced ext train cv submit pseudo semi ensemble report gpu-check chaos imbalance-table semi-table clean help

ifeq ($(NPROC),1)
RUN := $(PY)
else
RUN := $(VENV)/bin/torchrun --standalone --nproc_per_node $(NPROC)
endif

# On the bundled demo data (either variant) the defaults are sized for a 2-core CPU in minutes; on real data the
# recipe's apply.
ifneq ($(filter $(DATA_ROOT),$(DEMO_ROOT) $(DEMO_IMB_ROOT)),)
DATA_DEP := $(DATA_ROOT)/train.json
# 128-px crops at native scale (random resize 0.75-1.25) train 4x faster per sample than whole 256-px images.
DEMO_ITERS := 3000
TRAIN_ARGS ?= --iters $(or $(ITERS),$(DEMO_ITERS)) --batch-size 8 --crop-size 128 --aug-ratio-range 1.5 2.5 \
	--workers 2 --lr 2e-3 --warmup-iters 50 --eval-interval 1000 --ckpt-interval 500 --log-interval 10
PSEUDO_JSON ?= test.json extra.json
else
DATA_DEP :=
TRAIN_ARGS ?= $(if $(ITERS),--iters $(ITERS))
PSEUDO_JSON ?= test.json
endif
# make pseudo's label selection. The default, hybrid (a pixel clearing 0.6 or in its class's top 80 %), is the
# label-scarce table's best of the arms that mix labels and pseudo-labels uniformly, as make pseudo's rounds do (arm
# Bh, README "Semi-supervised training"): a global threshold alone erases the classes the teacher is unsure of, round
# after round. PSEUDO_ARGS="--threshold 0.6" is the global rule, "--threshold-mode class-balanced --keep 0.5" CBST,
# "... --align train.json" adds distribution alignment (make semi's recipe: with few labels, not for rounds).
HYBRID_SELECTION := --threshold-mode hybrid --keep 0.8
PSEUDO_ARGS ?= $(HYBRID_SELECTION)
FOLDS ?= 5
ROUNDS ?= 2
# Students afresh by default: the label-scarce table's best arm (Bh, README "Semi-supervised training"); round 0 is
# their control. PSEUDO_INIT=teacher starts each student from its teacher and trains a control beside it.
PSEUDO_INIT ?= none
PSEUDO_CONTROL ?= 1
STUDENT_INIT = $(if $(filter teacher,$(PSEUDO_INIT)),--init $(EXP)/round$$p/best.pt)
TEACHER_CONTROL = $(and $(filter 1,$(PSEUDO_CONTROL)),$(filter teacher,$(PSEUDO_INIT)))
TTA ?= 0
MODE ?= whole
CROP ?=
STRIDE ?=
MODE_ARGS = $(if $(filter slide,$(MODE)),--mode slide $(if $(CROP),--crop-size $(CROP)) $(if $(STRIDE),--stride $(STRIDE)))
RUNS ?=

help:
	@sed -n '1,6p' Makefile

# Re-installs only when a requirements file changes (the stamp is newer otherwise).
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP)

# The demo dataset is generated once into an ignored folder; any target that needs data depends on this
# only when DATA_ROOT is the default.
$(DEMO_ROOT)/train.json: $(STAMP) data/demo.py
	$(PY) -m data.demo --out $(DEMO_ROOT) $(DEMO_GEN_ARGS)

data: $(DEMO_ROOT)/train.json

# The demo with the competition's class proportions (python -m data.demo --imbalance): make train DATA_ROOT=$@.
$(DEMO_IMB_ROOT)/train.json: $(STAMP) data/demo.py
	$(PY) -m data.demo --out $(DEMO_IMB_ROOT) --imbalance $(DEMO_GEN_ARGS)

data-imbalanced: $(DEMO_IMB_ROOT)/train.json

ext: $(STAMP)
	$(PY) -m csrc.build

# make test: under 10 min on 2 CPU cores. make test-heavy: the tests marked heavy (CUDA compile-only check, real-size
# parity with transformers/timm, torch.compile of the models, the fault-injection trials, the models.export package
# compiled ahead of time); CI runs both.
# Two pytest workers (pytest-xdist), each test file on one of them, one thread each: TEST_WORKERS=0 runs in-process.
TEST_WORKERS ?= 2
test: $(STAMP) ext
	$(PY) -m pytest -q tests -m "not heavy" $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

test-heavy: $(STAMP) ext
	$(PY) -m pytest -q tests -m heavy

train: $(STAMP) ext $(DATA_DEP)
	$(RUN) train.py --model $(MODEL) --data-root $(DATA_ROOT) --out $(EXP) $(TRAIN_ARGS) $(ARGS)

# k-fold cross-validation over train_all.json (stratified by the classes present per image).
cv: $(STAMP) ext $(DATA_DEP)
	$(PY) -m data.split --json $(DATA_ROOT)/train_all.json --folds $(FOLDS) --seed 0 --out $(EXP)/folds
	for k in $$(seq 0 $$(($(FOLDS) - 1))); do \
	  $(RUN) train.py --model $(MODEL) --data-root $(DATA_ROOT) --fold $$k --folds-dir $(EXP)/folds \
	    --out $(EXP)/fold$$k $(TRAIN_ARGS) $(ARGS) || exit 1; done
	$(PY) -m engine.summary --label fold --mean $$(for k in $$(seq 0 $$(($(FOLDS) - 1))); do echo $(EXP)/fold$$k; done)

# The competition CSV from the run's best checkpoint, validated before success is declared.
submit: $(STAMP) ext $(DATA_DEP)
	$(RUN) infer.py --ckpt $(EXP)/best.pt --data-root $(DATA_ROOT) --json test.json \
	  --out $(EXP)/submission.csv $(if $(filter 1,$(TTA)),--tta) $(MODE_ARGS) $(ARGS)
	$(PY) -m data.submission $(EXP)/submission.csv --json $(DATA_ROOT)/test.json

# Round 0 trains on the labels; round r labels test (+ extra) with round r-1's best model and trains a student on
# train + pseudo-labels, afresh (PSEUDO_INIT=none, the default) or from its teacher (PSEUDO_INIT=teacher). Prints
# round → val mIoU, each round against its control (same init and iterations, labels only): round0 for an afresh
# student, round<r>_control for one initialised from its teacher (PSEUDO_CONTROL=0 skips it: one training a round,
# not two, but on both demos every round's gain was continued training's, README "Rare classes"); then the best
# checkpoint.
pseudo: $(STAMP) ext $(DATA_DEP)
	case "$(PSEUDO_INIT)" in teacher|none) ;; *) echo "PSEUDO_INIT must be teacher or none, got '$(PSEUDO_INIT)'"; exit 2;; esac
	test -f $(EXP)/round0/best.pt || $(RUN) train.py --model $(MODEL) --data-root $(DATA_ROOT) \
	  --out $(EXP)/round0 $(TRAIN_ARGS) $(ARGS)
	for r in $$(seq 1 $(ROUNDS)); do p=$$((r - 1)); \
	  $(RUN) pseudo_label.py --ckpt $(EXP)/round$$p/best.pt --data-root $(DATA_ROOT) --json $(PSEUDO_JSON) \
	    --tta --out $(EXP)/pl$$r $(PSEUDO_ARGS) || exit 1; \
	  $(RUN) train.py --model $(MODEL) --data-root $(DATA_ROOT) --train-json train.json $(EXP)/pl$$r/pseudo.json \
	    $(STUDENT_INIT) --out $(EXP)/round$$r $(TRAIN_ARGS) $(ARGS) || exit 1; \
	  $(if $(TEACHER_CONTROL),$(RUN) train.py --model $(MODEL) --data-root $(DATA_ROOT) $(STUDENT_INIT) \
	    --out $(EXP)/round$${r}_control $(TRAIN_ARGS) $(ARGS) || exit 1;) done
	$(PY) -m engine.summary --label round $$(for r in $$(seq 0 $(ROUNDS)); do echo $(EXP)/round$$r; done) \
	  $(if $(or $(TEACHER_CONTROL),$(filter none,$(PSEUDO_INIT))),--controls - $$(for r in $$(seq 1 $(ROUNDS)); do \
	    echo $(EXP)/$(if $(TEACHER_CONTROL),round$${r}_control,round0); done))

# Semi-supervised training for few labels and many photos (README "Semi-supervised training"): the recommended
# recipe on UNLABELLED (COCO image lists and/or folders of photos, relative to DATA_ROOT unless they exist as given)
# and its control, then one line: "semi-supervised vs control: X vs Y (gain +Z)". TRAIN_ARGS is the shared recipe
# (both arms, and the teacher), SEMI_ARGS the semi-supervised flags of the recipe chosen by SEMI_RECIPE:
#   offline (the default: the label-scarce table's best, arm Chaw, README): the control trains on the labels alone and
#     is the teacher; pseudo_label.py labels the pool with TTA (SEMI_ARGS: its flags; by default hybrid selection
#     after distribution alignment to train.json's class shares, so the classes the teacher under-predicts keep
#     their pixels); a student trains afresh with the control's recipe and seed, the pseudo-labels as a pool
#     (SEMI_STUDENT_ARGS: train.py's flags; by default exactly half of every batch, so the real labels keep half the
#     weight however large the pool) with the labelled images' own augmentation (SEMI_VIEWS=weak; strong adds
#     UniMatch's colour jitter, grayscale, blur, CutOut and CutMix, which cost the demo's rare classes on both
#     label-scarce splits).
#   online: an EMA teacher labels each crop on the fly (SEMI_ARGS: train.py's --semi-* flags); the control has the
#     same strong augmentation and batch mix with its own labelled set as the pool.
UNLABELLED ?= $(if $(DATA_DEP),extra.json)
SEMI_RECIPE ?= offline
WEAK_VIEWS := --aug-strong-color 0 --aug-strong-gray 0 --aug-strong-blur 0 --aug-strong-cutout 0 --aug-strong-cutmix 0
ifeq ($(SEMI_RECIPE),online)
SEMI_ARGS ?= --semi-share 0.5 --semi-threshold 0.95 --ema-momentum 0.99
else
SEMI_ARGS ?= $(HYBRID_SELECTION) --align train.json
SEMI_STUDENT_ARGS ?= --semi-share 0.5
SEMI_VIEWS ?= weak
endif
semi: $(STAMP) ext $(DATA_DEP)
	case "$(SEMI_RECIPE)" in offline|online) ;; *) echo "SEMI_RECIPE must be offline or online, got '$(SEMI_RECIPE)'"; exit 2;; esac
	case "$(SEMI_VIEWS)" in weak|strong|"") ;; *) echo "SEMI_VIEWS must be weak or strong, got '$(SEMI_VIEWS)'"; exit 2;; esac
	test -n "$(UNLABELLED)" || { echo 'usage: make semi UNLABELLED="extra.json photos/ ..." [DATA_ROOT=... EXP=...]'; exit 2; }
	$(PY) -m data.semi pool $(UNLABELLED) --data-root $(DATA_ROOT) --out $(EXP)/unlabelled.json \
	  --val-json val.json --labelled-json train.json
ifeq ($(SEMI_RECIPE),online)
	$(RUN) train.py --model $(MODEL) --data-root $(DATA_ROOT) --out $(EXP)/semi \
	  --unlabelled-json $(EXP)/unlabelled.json $(TRAIN_ARGS) $(SEMI_ARGS) $(ARGS)
	$(RUN) train.py --model $(MODEL) --data-root $(DATA_ROOT) --out $(EXP)/control --labelled-pool \
	  $(TRAIN_ARGS) $(SEMI_ARGS) $(ARGS)
else
	$(RUN) train.py --model $(MODEL) --data-root $(DATA_ROOT) --out $(EXP)/control $(TRAIN_ARGS) $(ARGS)
	$(RUN) pseudo_label.py --ckpt $(EXP)/control/best.pt --data-root $(DATA_ROOT) --json $(EXP)/unlabelled.json \
	  --tta --out $(EXP)/pseudo $(SEMI_ARGS)
	$(RUN) train.py --model $(MODEL) --data-root $(DATA_ROOT) --out $(EXP)/semi \
	  --pseudo-json $(EXP)/pseudo/pseudo.json $(if $(filter weak,$(SEMI_VIEWS)),$(WEAK_VIEWS)) $(SEMI_STUDENT_ARGS) \
	  $(TRAIN_ARGS) $(ARGS)
endif
	$(PY) -m engine.summary --versus semi-supervised $(EXP)/semi $(EXP)/control

# Soft ensemble of several runs: each run's best model saves test probabilities, then they are averaged.
ensemble: $(STAMP) ext $(DATA_DEP)
	test -n "$(RUNS)" || { echo 'usage: make ensemble RUNS="runs/a runs/b"'; exit 2; }
	for r in $(RUNS); do $(RUN) infer.py --ckpt $$r/best.pt --data-root $(DATA_ROOT) --json test.json --out '' \
	  $(if $(filter 1,$(TTA)),--tta) $(MODE_ARGS) --save-probs $$r/probs_test || exit 1; done
	$(PY) ensemble.py soft --probs $(foreach r,$(RUNS),$(r)/probs_test) --data-root $(DATA_ROOT) \
	  --json test.json --out $(EXP)/ensemble.csv

# Static report site: data stats + gallery, EXP's run (curves, IoU, confusion, worst images), its submission and
# latest pseudo-labels when present, augmentation preview. Open $(EXP)/report/index.html in a browser.
report: $(STAMP) ext $(DATA_DEP)
	$(PY) visualize.py --data-root $(DATA_ROOT) --json train.json --preview-aug --out $(EXP)/report \
	  $(if $(wildcard $(EXP)/metrics.jsonl),--run $(EXP)) \
	  $(if $(wildcard $(EXP)/submission.csv),--csv $(EXP)/submission.csv) \
	  $(if $(wildcard $(EXP)/pl*/pseudo.json),--pseudo $(dir $(lastword $(sort $(wildcard $(EXP)/pl*/pseudo.json))))) \
	  $(ARGS)

gpu-check:
	bash bench/gpu_check.sh

# Fault injection: 2-process torchrun runs killed (SIGTERM to the launcher, SIGKILL to every process) at random
# moments and restarted until done; prints "faults survived N/N, bitwise-identical M/M". CHAOS_TRIALS, CHAOS_SEED;
# CHAOS_NODES=2: two torchrun nodes of one rank each on this machine, node-local --out folders.
CHAOS_TRIALS ?= 20
CHAOS_SEED ?= 0
CHAOS_NODES ?= 1
chaos: $(STAMP) ext
	$(PY) -m bench.chaos --trials $(CHAOS_TRIALS) --seed $(CHAOS_SEED) --nodes $(CHAOS_NODES)

# README "Rare classes": every imbalance option, --balance over 3 seeds, pseudo-label modes vs their control (plain and
# --balance teachers), on the imbalanced demo (18 runs, about 3 h on 2 idle cores at the demo recipe; ITERS=300 is a
# smoke test whose figures mean nothing).
imbalance-table: $(STAMP) ext $(DEMO_IMB_ROOT)/train.json
	ITERS=$(ITERS) $(if $(filter-out runs/demo,$(EXP)),EXP=$(EXP)) bash bench/imbalance.sh

# README "Semi-supervised training": every arm (labels only, its strong-view control, offline rounds, pseudo-label pool,
# stable-image selection, online teacher) on the label-scarce demo split, three paired seeds, one table (21 runs, about
# 2.5 h on 2 idle cores; ITERS=300 is a smoke test whose figures mean nothing).
semi-table: $(STAMP) ext
	ITERS=$(ITERS) $(if $(filter-out runs/demo,$(EXP)),EXP=$(EXP)) bash bench/semi.sh

clean:
	rm -rf .cache build .pytest_cache
