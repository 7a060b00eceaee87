# rankiqa: RankIQA (ICCV 2017) in real Caffe. `make help` lists the targets and variables.
# Every target that runs Python depends on `env` (venv + Caffe), so nothing has to be set up by hand.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

# ---- environment --------------------------------------------------------------------------------
SYSTEM_PYTHON ?= python3
VENV          ?= .venv
PY            := $(VENV)/bin/python
RANKIQA_CACHE ?= $(HOME)/.cache/rankiqa
CUDA          ?= 0
CUDA_ARCH     ?= 70 75 80 86 89 90
JOBS          ?= $(shell nproc)
export RANKIQA_CACHE CUDA CUDA_ARCH

# GPU id for Caffe; -1 = CPU. Default: GPU 0 when a CUDA build is selected and a GPU answers, else CPU.
GPU ?= $(shell [ "$(CUDA)" = 1 ] && nvidia-smi -L >/dev/null 2>&1 && echo 0 || echo -1)
# Several GPUs of one machine through NCCL, e.g. GPUS=0,1 (needs a CUDA build with NCCL).
GPUS ?=
# The device flags of tools/train.py, which takes --gpu or --gpus, not both: GPUS, when given, replaces GPU.
gpu_args = $(if $(GPUS),--gpus $(GPUS),--gpu $(GPU))
# The paper's VGG-16 on a GPU, the paper's small Shallow net on a CPU.
NET ?= $(if $(filter -1,$(GPU)),shallow,vgg16)
SEED ?= 0
# Seeds of `make demo`, one demo each (mean and std over them), e.g. SEEDS=0,1,2.
SEEDS ?= $(SEED)

# ---- data ---------------------------------------------------------------------------------------
RANKSET   ?= tid2013
PRISTINE  ?= default
# Distortion types of the ranking data: empty = those the original lists (tid2013: 18, without HFN), `all`,
# or names, e.g. GN,GB (data_prep/DISTORTIONS.md). Any other choice gets folders of its own.
RANK_TYPES ?=
rank_tag   = $(RANKSET)$(if $(RANK_TYPES),_$(subst $(comma),-,$(RANK_TYPES)))
RANKS_DIR ?= data/ranks/$(rank_tag)
LMDB      ?=
# Run the distortion tasks of `make ranks` on a Dask cluster: the scheduler's address (tcp://host:8786), or
# `local` for a local cluster of JOBS workers (data_prep/dask_ranks.py).
DASK      ?=
DATASET   ?= tid2013
DATA      ?= /data/$(DATASET)
FT_DIR    ?= data/ft/$(DATASET)$(if $(FT_TYPES),_$(subst $(comma),-,$(FT_TYPES)))
SPLITS    ?= 1
# The split to train/evaluate: 0..SPLITS-1, or `original` (TID2013 only: the original's own split).
SPLIT     ?= 0
# Distortion type codes to keep in the fine-tuning lists (default all); FT_TYPES=paper with DATASET=csiq
# keeps the paper's 4 LIVE-like CSIQ types.
FT_TYPES  ?=

# ---- training -----------------------------------------------------------------------------------
ITERS    ?=
LR       ?=
BATCH    ?=
SNAPSHOT ?=
WEIGHTS  ?=
RESUME   ?=
TEST_INTERVAL ?=
WORKERS  ?=
# Batch make-up of ranking: groups (distortion types) per batch and images per group; faithful defaults
# per RANKSET (tid2013: 9 x 1, live: 4 x 2, mlive: 12 x 1) when empty.
TYPES_PER_BATCH  ?=
IMAGES_PER_GROUP ?=
# Score direction of ranking: quality (less distorted = higher output) or dmos (the original's LIVE lists).
DIRECTION ?=
# ONLINE=1: ranking makes its batches from PRISTINE inside the prefetch workers (no rank set on disk);
# PRECOMPUTED=dir: a `make ranks` folder holding the types too slow for that (OFFLINE_TYPES, default ID),
# else they are left out.
ONLINE        ?=
PRECOMPUTED   ?=
OFFLINE_TYPES ?=
RANK_RUN ?= runs/rank_$(rank_tag)_$(NET)$(if $(filter dmos,$(DIRECTION)),_dmos)$(if $(ONLINE),_online)
RANK_MODEL ?=
FROM_SCRATCH ?=
# Start of the fine-tuning head (filler|mean|linear|calibrate) and scale of its loss (none|std); default
# per NET (rankiqa/runconfig.py FT_HEAD_DEFAULTS): the original's (filler, none) for vgg16, (calibrate, std) for
# shallow (rankiqa/head_init.py).
HEAD_INIT  ?=
LOSS_SCALE ?=
# Layers of RANK_MODEL/WEIGHTS not to copy, e.g. SKIP_LAYERS=fc8 with ImageNet VGG-16 as RANK_MODEL: the
# paper's ImageNet-VGG fine-tuned baseline.
SKIP_LAYERS ?=
# One folder per configuration: lists (FT_DIR), net, split, and where the weights come from.
FT_RUN   ?= runs/ft_$(call name_of,$(FT_DIR))_$(NET)_split$(SPLIT)$(if $(FROM_SCRATCH),_scratch)$(if $(RANK_MODEL),_from-$(basename $(call name_of,$(RANK_MODEL))))

# ---- evaluation ---------------------------------------------------------------------------------
MODEL      ?=
# The deploy net of a model fine-tuned on DATASET with NET, from the dataset registry (rankiqa/registry.py).
DEPLOY     ?= $(shell $(PY) -m rankiqa.registry deploy $(DATASET) $(NET))
CROPS      ?= 30
# Crops per forward pass. On the CPU 10 and 60 crops per forward measured 1.09x and 0.96x the rate of one
# crop per forward, the original's way (BENCHMARKS.md, section 4).
EVAL_BATCH ?= $(if $(filter -1,$(GPU)),1,60)
# A test table of your own (the table format of docs/DESIGN.md): make eval evaluates it instead of FT_DIR's.
TABLE      ?=
# The evaluation folder: what was evaluated on (TABLE's or FT_DIR's name) and, for a snapshot of a training
# run (runs/<run>/snapshots/<file>), that run: evaluations of two models on one dataset (RankIQA+FT and FT
# from scratch) get a folder each. '{split}' is dropped from the names (SPLITS > 1).
eval_on    = $(subst {split},,$(if $(TABLE),$(basename $(call name_of,$(TABLE))),$(call name_of,$(FT_DIR))))
model_run  = $(subst {split},,$(if $(findstring /snapshots/,$(MODEL)),$(notdir $(patsubst %/snapshots/,%,$(dir $(subst $(space),_,$(MODEL)))))))
RUN        ?= $(if $(model_run),$(model_run)_on_$(eval_on),$(eval_on)_$(NET))
IMAGES     ?=
PRED_OUT   ?= results/predictions.csv
# Flip the sign of predictions (a quality-up model on DMOS ground truth); with SPLITS=n, MODEL may hold
# '{split}' for per-split models.
NEGATE     ?=
# Score direction of MODEL for predict: higher_better or lower_better (default: inferred, see README).
PRED_DIRECTION ?=
# predict: SKIP_BAD=1 scores the good images and skips the missing, unreadable and too-small ones (named on
# stderr) instead of stopping with exit 2; RESIZE_SMALL=1 upscales images smaller than the crop.
SKIP_BAD     ?=
RESIZE_SMALL ?=

# ---- ONNX ---------------------------------------------------------------------------------------
# make export: MODEL + DEPLOY -> OUT (default: MODEL with .onnx), the score direction recorded as
# PRED_DIRECTION when given. make predict BACKEND=onnx: MODEL is that .onnx file, run by onnxruntime
# (no Caffe: the target builds only the venv).
BACKEND    ?= caffe
OUT        ?=

PTH_FILE = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/rankiqa.pth
comma := ,
space := $(subst ,, )
squote := '
# Paths may hold spaces (and quotes): every path reaches the shell quoted by q; run and result names made
# from a path (name_of: its last part) have their spaces as underscores. IMAGES stays a list of words.
q = '$(subst $(squote),$(squote)\$(squote)$(squote),$(1))'
name_of = $(notdir $(subst $(space),_,$(1)))
opt = $(if $(2),$(1) $(call q,$(2)))
# Whether a variable was set on the command line or in the environment (not by this Makefile's default).
given = $(filter command line environment,$(origin $(1)))
# A variable's value when given (as above), else empty.
given_value = $(if $(call given,$(1)),$($(1)))
# Derived data is brought up to date (or refused, naming what changed) by the tool that makes it; it is
# asked whenever its source was given or is there, and otherwise only when the data are missing.
ft_lists_check = [ -n "$(call given,DATA)" ] || [ -d $(call q,$(DATA)) ] || [ ! -f $(call q,$(1)) ]
# The last split of SPLITS, worked out before q quotes the path that holds it (the shell expands nothing
# inside single quotes).
last_split = $(shell echo $$(($(SPLITS)-1)))

.PHONY: help env venv caffe check-cuda-build ranks train_rank ft_lists finetune eval predict demo rank_accuracy bench gpu-check gpu-bundle docker-replay \
        cross \
        test lint clean
.PHONY: export

help:
	@echo "rankiqa - RankIQA in Caffe. Set-up is automatic: every target builds what it needs."
	@echo "  make demo         whole pipeline on the embedded default data (Shallow net, CPU; SEEDS=0,1,2 PRISTINE=dir)"
	@echo "  make test         the test suite (pytest) + lint"
	@echo "  make test-fast    the quick loop: ruff + the tests not marked slow or infra"
	@echo "  make experiment   one row of the paper's tables (NAME=tid2013_vgg16 ...; no NAME: the list; DRY_RUN=1)"
	@echo "  make caffe        build/cache Caffe with pycaffe + Python layer (CUDA=1 for the GPU build)"
	@echo "  make ranks        distorted ranking data       (RANKSET=tid2013|live|mlive RANK_TYPES PRISTINE=dir LMDB=1 DASK=addr|local)"
	@echo "  make train_rank   Siamese ranking training     (RANKSET NET=vgg16|shallow GPU ITERS WEIGHTS=x.caffemodel|none RESUME)"
	@echo "                    ONLINE=1: batches made from PRISTINE while training, no rank set on disk (PRECOMPUTED=dir for ID)"
	@echo "  make ft_lists     fine-tuning lists of a dataset (DATASET DATA SPLITS SPLIT=original FT_TYPES; run by finetune/eval)"
	@echo "  make finetune     RankIQA+FT on an IQA dataset (DATASET=tid2013|live|csiq|kadid|mlive DATA=dir RANK_MODEL FROM_SCRATCH=1)"
	@echo "  make eval         paper protocol evaluation    (DATASET MODEL DEPLOY CROPS EVAL_BATCH; TABLE=your test table)"
	@echo "  make predict      score your own images        (IMAGES=files/dir MODEL DEPLOY SKIP_BAD RESIZE_SMALL)"
	@echo "  make export       a model as ONNX              (MODEL DEPLOY [OUT]); predict BACKEND=onnx MODEL=x.onnx: no Caffe"
	@echo "  make rank_accuracy  pairwise ranking accuracy per type (MODEL RANKS_DIR [RANK_SPLIT=test] [DEPLOY] [RA_OUT])"
	@echo "  make cross        each model on every image of each dataset, direction-corrected (MODELS DATASETS DEPLOYS)"
	@echo "  make bench        measured speed ratios -> BENCHMARKS.md"
	@echo "  make gpu-check    the GPU proof (CUDA=1 on a GPU machine; GPU_CHECK_ARGS=--cpu-smoke on a CPU)"
	@echo "  make check-cuda-build  compile the CUDA Caffe without switching the venv (CUDA_ARCH)"
	@echo "  make gpu-bundle   pack CUDA Caffe for a GPU machine without network (root; see README)"
	@echo "  make docker-replay  the Dockerfile's steps without Docker, in an Ubuntu 24.04 root (root)"
	@echo "  make lint | venv | clean   ruff + hadolint + shellcheck; the venv alone; remove runs/, results/, data/ranks, data/ft"
	@echo "See README.md for every variable."

# The venv is rebuilt when requirements.txt changes. System packages first (python3-venv on a bare Debian).
$(VENV)/.requirements.stamp: requirements.txt
	@bash dev/build_caffe.sh --venv-deps
	@[ -x $(PY) ] || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

venv: $(VENV)/.requirements.stamp

# Builds (or finds in the cache, in seconds) Caffe for this venv's Python, then points the venv at it:
# a .pth file puts the repository root and the cached pycaffe on sys.path (no PYTHONPATH needed).
caffe: venv
	@prefix=$$(PYTHON=$(PY) JOBS=$(JOBS) bash dev/build_caffe.sh | tail -n 1) && \
	  printf '%s\n%s\n' "$(CURDIR)" "$$prefix/python" > "$(PTH_FILE)" && \
	  $(PY) -c "import caffe; assert 'Python' in caffe.layer_type_list(); print('[caffe] ready:', caffe.__file__)"

# A target's own recursive make (ranks, ft_lists) passes _RANKIQA_ENV_DONE=1 on its command line: its env is
# the caller's, set up moments ago, and checking Caffe again printed the set-up lines twice (the venv is
# still checked: it costs nothing when up to date). Not a user setting.
env: $(if $(filter command line,$(origin _RANKIQA_ENV_DONE)),venv,caffe)

# Compiles the CUDA build (slow: ~15 min per GPU architecture on 2 cores); no GPU needed to compile.
check-cuda-build: venv
	PYTHON=$(PY) CUDA=1 JOBS=$(JOBS) bash dev/build_caffe.sh

# ---- pipeline -----------------------------------------------------------------------------------
ranks: env
	$(PY) -m $(if $(DASK),data_prep.dask_ranks --dask $(call q,$(DASK)),data_prep.make_ranks) --rankset $(RANKSET) --pristine $(call q,$(PRISTINE)) --out $(call q,$(RANKS_DIR)) \
	  --seed $(SEED) --jobs $(JOBS) $(if $(LMDB),--lmdb) $(call opt,--types,$(RANK_TYPES))

train_rank: env
	@$(if $(ONLINE),true,$(if $(call given,PRISTINE),,[ -f $(call q,$(RANKS_DIR)/manifest.csv) ] ||) $(MAKE) --no-print-directory ranks _RANKIQA_ENV_DONE=1)
	$(PY) -m tools.train rank --rankset $(RANKSET) --net $(NET) --out $(call q,$(RANK_RUN)) \
	  $(if $(ONLINE),--online --pristine $(call q,$(PRISTINE)) $(call opt,--precomputed,$(PRECOMPUTED)) $(call opt,--offline-types,$(OFFLINE_TYPES)),--data $(call q,$(RANKS_DIR))) \
	  $(call opt,--types,$(RANK_TYPES)) \
	  $(gpu_args) --seed $(SEED) $(call opt,--iters,$(ITERS)) $(call opt,--lr,$(LR)) \
	  $(call opt,--snapshot,$(SNAPSHOT)) $(call opt,--weights,$(WEIGHTS)) $(call opt,--resume,$(RESUME)) \
	  $(call opt,--test-interval,$(TEST_INTERVAL)) $(call opt,--workers,$(WORKERS)) \
	  $(call opt,--types-per-batch,$(TYPES_PER_BATCH)) $(call opt,--images-per-group,$(IMAGES_PER_GROUP)) \
	  $(call opt,--direction,$(DIRECTION))

ft_lists: env
	$(PY) -m data_prep.make_ft_lists --dataset $(DATASET) --data $(call q,$(DATA)) --out $(call q,$(FT_DIR)) --splits $(SPLITS) \
	  --seed $(SEED) $(call opt,--types,$(FT_TYPES)) $(if $(filter original,$(SPLIT)),--original-split)

finetune: env
	@if $(call ft_lists_check,$(FT_DIR)/split$(SPLIT)/train.txt); then $(MAKE) --no-print-directory ft_lists _RANKIQA_ENV_DONE=1; fi
	$(PY) -m tools.train finetune --dataset $(DATASET) --net $(NET) --lists $(call q,$(FT_DIR)/split$(SPLIT)) \
	  --out $(call q,$(FT_RUN)) $(gpu_args) --seed $(SEED) $(if $(FROM_SCRATCH),--from-scratch,$(call opt,--rank-model,$(RANK_MODEL))) \
	  $(if $(call given,RANKSET),--rankset $(RANKSET)) \
	  $(call opt,--iters,$(ITERS)) $(call opt,--lr,$(LR)) $(call opt,--batch,$(BATCH)) \
	  $(call opt,--skip-layers,$(SKIP_LAYERS)) $(call opt,--head-init,$(HEAD_INIT)) $(call opt,--loss-scale,$(LOSS_SCALE)) \
	  $(call opt,--snapshot,$(SNAPSHOT)) $(call opt,--resume,$(RESUME)) \
	  $(call opt,--test-interval,$(TEST_INTERVAL)) $(call opt,--workers,$(WORKERS))

eval: env
	@[ -n "$(MODEL)" ] || { echo "error: set MODEL=path/to.caffemodel (and DEPLOY= if not $(DEPLOY))" >&2; exit 2; }
	@$(if $(TABLE),true,if $(call ft_lists_check,$(FT_DIR)/split$(if $(filter-out 1,$(SPLITS)),$(last_split),$(SPLIT))/test.csv); then \
	  $(MAKE) --no-print-directory ft_lists _RANKIQA_ENV_DONE=1; fi)
	$(PY) -m tools.evaluate --deploy $(call q,$(DEPLOY)) --model $(call q,$(MODEL)) --out $(call q,results/$(RUN)) --crops $(CROPS) \
	  --seed $(SEED) \
	  --batch $(EVAL_BATCH) --gpu $(GPU) $(if $(TABLE),$(call opt,--dataset,$(call given_value,DATASET)),--dataset $(DATASET)) \
	  $(if $(NEGATE),--negate) --table $(call q,$(or $(TABLE),$(FT_DIR)/split$(if $(filter-out 1,$(SPLITS)),{split},$(SPLIT))/test.csv)) \
	  $(if $(filter-out 1,$(SPLITS)),--splits $(SPLITS))

predict: $(if $(filter onnx,$(BACKEND)),venv,env)
	@[ -n "$(MODEL)" ] && [ -n "$(IMAGES)" ] || { echo "error: set IMAGES=files-or-folder and MODEL=x.caffemodel (x.onnx with BACKEND=onnx)" >&2; exit 2; }
	$(PY) -m tools.predict --backend $(BACKEND) $(if $(filter onnx,$(BACKEND)),,--deploy $(call q,$(DEPLOY))) \
	  --model $(call q,$(MODEL)) --images $(IMAGES) --out $(call q,$(PRED_OUT)) \
	  --crops $(CROPS) --batch $(EVAL_BATCH) --seed $(SEED) --gpu $(GPU) $(call opt,--direction,$(PRED_DIRECTION)) \
	  $(if $(SKIP_BAD),--skip-bad) $(if $(RESIZE_SMALL),--resize-small)

export: venv
	@[ -n "$(MODEL)" ] || { echo "error: set MODEL=x.caffemodel (and DEPLOY= if not $(DEPLOY))" >&2; exit 2; }
	$(PY) -m tools.export_onnx --deploy $(call q,$(DEPLOY)) --model $(call q,$(MODEL)) $(call opt,--out,$(OUT)) \
	  $(call opt,--direction,$(PRED_DIRECTION))

demo: env
	$(PY) -m tools.demo --seeds $(SEEDS) --pristine $(call q,$(PRISTINE)) --jobs $(JOBS)

# The ranking stage's own metric; a ranking model by default (DEPLOY given: any model of that deploy net).
RANK_SPLIT ?=
RA_OUT ?=
rank_accuracy: env
	@[ -n "$(MODEL)" ] || { echo "error: set MODEL=path/to.caffemodel (and RANKS_DIR=, default $(RANKS_DIR))" >&2; exit 2; }
	$(PY) -m tools.rank_accuracy --model $(call q,$(MODEL)) --ranks $(call q,$(RANKS_DIR)) $(call opt,--split,$(RANK_SPLIT)) \
	  --deploy $(call q,$(if $(call given,DEPLOY),$(DEPLOY),prototxts/$(NET)/rank_deploy.prototxt)) \
	  $(call opt,--out,$(RA_OUT)) --crops $(if $(filter command line environment,$(origin CROPS)),$(CROPS),10) \
	  --batch $(EVAL_BATCH) --seed $(SEED) --gpu $(GPU)

# Cross-dataset matrix: every model of MODELS on every image of each dataset of DATASETS (its table.csv in
# data/ft/<ds>/, made by `make ft_lists` from DATA_<ds>, default /data/<ds>, when missing); DEPLOYS: one deploy
# net per model (default DEPLOY for all), CROSS_DIRECTIONS likewise (default: inferred).
MODELS   ?=
DATASETS ?=
DEPLOYS  ?=
CROSS_DIRECTIONS ?=
CROSS_OUT ?= results/cross
cross: env
	@[ -n "$(MODELS)" ] && [ -n "$(DATASETS)" ] || { echo "error: set MODELS='a.caffemodel b.caffemodel' and DATASETS='tid2013 live'" >&2; exit 2; }
	@$(foreach ds,$(DATASETS),[ -f $(call q,data/ft/$(ds)/table.csv) ] || $(MAKE) --no-print-directory ft_lists _RANKIQA_ENV_DONE=1 DATASET=$(ds) \
	  FT_DIR=$(call q,data/ft/$(ds)) DATA=$(call q,$(or $(DATA_$(ds)),/data/$(ds))) SPLITS=1 SPLIT=0 FT_TYPES= ;)
	$(PY) -m tools.cross_dataset $(foreach m,$(MODELS),--model $(call q,$(m))) \
	  $(foreach d,$(or $(DEPLOYS),$(DEPLOY)),--deploy $(call q,$(d))) $(foreach d,$(CROSS_DIRECTIONS),--model-direction $(d)) \
	  $(foreach ds,$(DATASETS),--dataset $(call q,$(ds)=data/ft/$(ds)/table.csv) $(if $(DATA_$(ds)),--data $(call q,$(ds)=$(DATA_$(ds))))) \
	  --out $(call q,$(CROSS_OUT)) \
	  --crops $(CROPS) --batch $(EVAL_BATCH) --seed $(SEED) --gpu $(GPU)

bench: env
	$(PY) -m tools.bench --out BENCHMARKS.md --gpu $(GPU)

# The GPU proof (device, VGG-16 rank steps, CPU/GPU parity, timings): run on a GPU machine with
# the CUDA build (make caffe CUDA=1); GPU_CHECK_ARGS=--cpu-smoke runs its code paths on a CPU. The report goes
# to GPU_CHECK_OUT (gpu/check.sh's default: results/gpu_check).
GPU_CHECK_ARGS ?=
gpu-check: env
	PYTHON=$(PY) bash gpu/check.sh $(if $(filter-out -1,$(GPU)),--gpu $(GPU)) $(GPU_CHECK_ARGS)

# The CUDA build packed for a GPU machine without network (Ubuntu 24.04, Python 3.12, CUDA libraries from its
# PyTorch install), built in an Ubuntu 24.04 root made here and tested here in CPU mode: gpu/bundle.sh (needs
# root; about 8 minutes the first time on 2 cores, 1 minute when cached). There, with the checkout and the
# folder bundle/ copied along: bash gpu/bundle_run.sh.
GPU_BUNDLE_ARCH ?= 90
gpu-bundle:
	GPU_BUNDLE_ARCH="$(GPU_BUNDLE_ARCH)" JOBS=$(JOBS) bash gpu/bundle.sh

# The Dockerfile's steps replayed without Docker in a fresh Ubuntu 24.04 root (dev/docker_replay.sh: root;
# about 8 minutes on 2 cores for one GPU architecture, DOCKER_REPLAY_CUDA_ARCH, default 90).
docker-replay:
	bash dev/docker_replay.sh

# One row of the paper's tables from its recipe (experiments/recipes.py): NAME=tid2013_vgg16 ...; no NAME lists
# them. Its variables (PRISTINE, WEIGHTS, DATA, GPU ...) reach the runner and its make commands.
.PHONY: experiment test-fast
NAME    ?=
DRY_RUN ?=
experiment: env
	$(PY) -m experiments.run $(call q,$(NAME)) $(if $(DRY_RUN),--dry-run)

# ---- quality ------------------------------------------------------------------------------------
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/shellcheck -S warning dev/*.sh gpu/*.sh .ci/run

test: env lint
	$(PY) -m pytest -q

# The quick loop: ruff and the tests not marked slow or infra (pyproject.toml's markers).
test-fast: env
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not slow and not infra"

clean:
	rm -rf runs results data/ranks data/ft
