# Two commands on a fresh machine: `make test` and `make demo`. Both build `.venv` when it is missing
# or when requirements.txt / setup.py changed (a stamp keyed on their hash), then start in seconds.
#
# mmcv's ops are compiled for the machine (tools/env/build_mmcv.sh): with CUDA kernels when an NVIDIA GPU
# is visible (nvidia-smi; where a driver has no nvidia-smi, the environment's torch), CPU-only otherwise.
#   MMCV_CUDA=1             forces the CUDA build, also without a GPU (nvcc needs none); MMCV_CUDA=0 forces
#                           CPU-only. Unset on a machine without a GPU: an environment that already has
#                           the CUDA build keeps it (its CPU ops work too); a new one is CPU-only.
#   TORCH_CUDA_ARCH_LIST    the CUDA architectures, e.g. '8.0;9.0' (default: the visible GPUs'; without
#                           one, DEFAULT_ARCHS in tools/env/build_mmcv.sh).
#   TORCH_CUDA=cu126        torch and torchvision from PyTorch's own wheel index, built for CUDA 12.x (cu12x
#                           tags), with the matching nvcc: for drivers older than the CUDA 13 wheels need.
# The stamp names the build (cpu or cuda, and the TORCH_CUDA tag), so switching rebuilds.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
KEY := $(shell cat requirements.txt setup.py | sha256sum | cut -c1-16)
BUILD_PKGS := $(shell grep -E '^(torch|torchvision|setuptools|wheel|ninja|pyelftools)=' requirements.txt | sed 's/ *\#.*//')
MMCV_PIN := $(shell grep -E '^mmcv==' requirements.txt | sed 's/ *\#.*//')
ENV_TOOL := tools/env/mmcv_build.py
REQUIREMENTS := requirements.txt

ifneq ($(MMCV_CUDA),0)
GPU_ARCHS := $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null \
                     | grep -E '^[0-9]+\.[0-9]+$$' | sort -u | paste -sd';' -)
ifeq ($(GPU_ARCHS),)
ifneq ($(wildcard /dev/nvidiactl /dev/dxg),)
# A GPU driver without nvidia-smi: the environment's torch decides; a new environment assumes the GPU
# (build_mmcv.sh asks torch for its architecture once torch is in).
GPU_ARCHS := $(if $(wildcard $(PY)),$(shell $(PY) $(ENV_TOOL) gpu-archs 2>/dev/null),ask-torch)
endif
endif
endif
ifndef MMCV_CUDA
MMCV_CUDA := $(if $(GPU_ARCHS)$(wildcard $(VENV)/.stamp-*-cuda*),1,0)
endif
ifeq ($(filter 0 1,$(MMCV_CUDA)),)
$(error MMCV_CUDA must be 1 (CUDA build of mmcv) or 0 (CPU-only), not '$(MMCV_CUDA)')
endif
MMCV_MODE := $(if $(filter 1,$(MMCV_CUDA)),cuda,cpu)
CUDA_ARCHS := $(if $(filter 1,$(MMCV_CUDA)),$(or $(TORCH_CUDA_ARCH_LIST),$(filter-out ask-torch,$(GPU_ARCHS))))

ifdef TORCH_CUDA
ifeq ($(filter cu12%,$(TORCH_CUDA)),)
$(error TORCH_CUDA selects torch's CUDA 12 builds, e.g. cu126 or cu128, not '$(TORCH_CUDA)')
endif
TORCH_VERSION := $(shell sed -n 's/^torch===\([0-9.]*\).*/\1/p' requirements.txt)
VISION_VERSION := $(shell sed -n 's/^torchvision===\([0-9.]*\).*/\1/p' requirements.txt)
BUILD_PKGS := torch==$(TORCH_VERSION)+$(TORCH_CUDA) torchvision==$(VISION_VERSION)+$(TORCH_CUDA) \
              $(filter-out torch===% torchvision===%,$(BUILD_PKGS))
TORCH_INDEX := --extra-index-url https://download.pytorch.org/whl/$(TORCH_CUDA)
REQUIREMENTS := $(VENV)/requirements-$(TORCH_CUDA).txt
endif

STAMP := $(VENV)/.stamp-$(KEY)-$(MMCV_MODE)$(if $(TORCH_CUDA),-$(TORCH_CUDA))

# `make wheelhouse`: one folder of wheels for GPU nodes without network, installed and checked there by
# tools/gpu_check.sh (docs/gpu.md, "Offline nodes"). Without settings: the pinned stack as .venv holds it (its
# mmcv build as it is). With any of them, a build environment for that target (Python from PATH or pyenv, torch
# from the registry, mmcv compiled for WH_ARCHS: about 40 minutes on 2 cores), unless .venv is that target.
#   WH_PYTHON=3.12  WH_TORCH=2.11.0  WH_CUDA=13  WH_ARCHS='9.0'  WH_OUT=DIR (default build/wheelhouse)
#   WH_ENV=DIR (the build environment; default build/wheelhouse-env/<target>), WH_TORCH_INDEX=URL,
#   WH_LEAVE_OUT='torch torchvision' (what the nodes have: never carried; default LEAVE_OUT in tools/env/wheelhouse.py)
WH_OUT ?= build/wheelhouse
WH_SETTINGS := $(strip $(WH_PYTHON)$(WH_TORCH)$(WH_CUDA)$(WH_ARCHS)$(WH_ENV)$(WH_TORCH_INDEX))
WH_FLAGS := $(if $(WH_PYTHON),--python '$(WH_PYTHON)') $(if $(WH_TORCH),--torch '$(WH_TORCH)') \
            $(if $(WH_CUDA),--cuda '$(WH_CUDA)') $(if $(WH_ARCHS),--archs '$(WH_ARCHS)') \
            $(if $(WH_ENV),--env '$(WH_ENV)') $(if $(WH_TORCH_INDEX),--torch-index '$(WH_TORCH_INDEX)') \
            $(if $(WH_LEAVE_OUT),--leave-out $(WH_LEAVE_OUT))

.PHONY: env test demo demo-seg clean-env wheelhouse

env: $(STAMP)

# The stamp's name carries the hash and the build, so it is rebuilt when either changes, never for a touch.
$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade 'pip>=24'
	$(PIP) install $(TORCH_INDEX) $(BUILD_PKGS)
	# mmcv ops are compiled against the torch above, without build isolation, and checked afterwards.
	bash tools/env/build_mmcv.sh $(PY) '$(MMCV_PIN)' $(MMCV_MODE) '$(CUDA_ARCHS)'
ifdef TORCH_CUDA
	grep -vE '^(torch|torchvision)=' requirements.txt > $(REQUIREMENTS)
endif
	$(PIP) install $(TORCH_INDEX) -r $(REQUIREMENTS)
	$(PIP) install --no-build-isolation --no-deps -e .
	# mim finds a package at site-packages/maformer_mm, which an editable install lacks: a recorded link to ours.
	$(PY) tools/env/mim_link.py
	$(PY) -c "import maformer_mm, mmdet.models, mmseg.models, mmpretrain.models"
	rm -f $(VENV)/.stamp-*
	echo 'mmcv: $(MMCV_MODE)$(if $(CUDA_ARCHS), TORCH_CUDA_ARCH_LIST=$(CUDA_ARCHS))$(if $(TORCH_CUDA), torch $(TORCH_CUDA))' > $@

# Lint and format check of the whole tree (ruff.toml), then the tests.
test: env
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest tests

demo: env
	$(PY) tools/demo.py

clean-env:
	rm -rf $(VENV)

wheelhouse: $(if $(WH_SETTINGS),,env)
	$(strip $(if $(WH_SETTINGS),$(PYTHON),$(PY)) -m tools.env.wheelhouse build --out '$(WH_OUT)' $(WH_FLAGS))

demo-seg: env
	$(PY) tools/demo_seg.py
