# Two commands on a fresh machine: `make test` and `make demo`. Both build `.venv` when it is missing
# or when requirements.txt / setup.py changed (a stamp keyed on their hash), then start in seconds.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
KEY := $(shell cat requirements.txt setup.py | sha256sum | cut -c1-16)
STAMP := $(VENV)/.stamp-$(KEY)
BUILD_PKGS := $(shell grep -E '^(torch|torchvision|setuptools|wheel|ninja)=' requirements.txt | sed 's/ *\#.*//')
MMCV_PIN := $(shell grep -E '^mmcv==' requirements.txt | sed 's/ *\#.*//')

.PHONY: env test demo demo-seg clean-env

env: $(STAMP)

# The stamp's name carries the hash, so it is rebuilt when the pins change, never for a mere touch.
$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade 'pip>=24'
	$(PIP) install $(BUILD_PKGS)
	# mmcv ops are compiled against the torch above: no build isolation, or the build cannot see torch.
	$(PY) -c "import mmcv.ops" 2>/dev/null || MMCV_WITH_OPS=1 $(PIP) install --no-build-isolation '$(MMCV_PIN)'
	$(PY) -c "from mmcv.ops import RoIAlign, nms"
	$(PIP) install -r requirements.txt
	$(PIP) install --no-build-isolation --no-deps -e .
	$(PY) -c "import maformer_mm, mmdet.models, mmseg.models, mmpretrain.models"
	rm -f $(VENV)/.stamp-*
	touch $@

test: env
	$(PY) -m pytest tests

demo: env
	$(PY) tools/demo.py

clean-env:
	rm -rf $(VENV)

demo-seg: env
	$(PY) tools/demo_seg.py
