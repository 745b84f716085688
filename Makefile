# edgenet: build, run, test.  Needs only python3 and make.
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
PORT     ?= 55000
ATTEMPTS ?= 3
# Wheels for the zipapp are pure-Python only (py3-none-any), so one file runs on any CPU.
WHEEL_TAGS := --only-binary=:all: --platform any --implementation py --abi none --python-version 3.10

.PHONY: all venv pyz pyz-fleet run test bench bench-quick soak lint clean

all: pyz

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[test,bench,fleet]'
	touch $@

venv: $(VENV)/.installed

build/edgenet.pyz: $(VENV)/.installed $(shell find edgenet admin_api -type f \( -name '*.py' -o -name '*.html' -o -name '*.json' -o -name '*.js' -o -name '*.css' \) 2>/dev/null) pyproject.toml
	rm -rf build/wheels build/edgenet.pyz build/lib build/bdist.*
	mkdir -p build/wheels
	$(VPY) -m pip wheel --quiet --no-deps -w build/wheels .
	$(VPY) -m pip download --quiet $(WHEEL_TAGS) -d build/wheels build/wheels/edgenet-*.whl
	$(VENV)/bin/shiv --quiet --no-index --find-links build/wheels --compressed --reproducible \
		-p '/usr/bin/env python3' -e edgenet.__main__:main -o build/edgenet.pyz edgenet
	$(VPY) -m edgenet._buildcheck build/edgenet.pyz

pyz: build/edgenet.pyz

# Fleet mode (docs/FLEET.md): the same program with redis-py and aiobotocore, still
# pure Python; botocore keeps only its S3 model (edgenet/_fleetbuild.py).
build/edgenet-fleet.pyz: build/edgenet.pyz
	rm -rf build/fleet-wheels build/fleet-site build/edgenet-fleet.pyz
	mkdir -p build/fleet-wheels
	cp build/wheels/edgenet-*.whl build/fleet-wheels/
	$(VPY) -m pip download --quiet $(WHEEL_TAGS) -d build/fleet-wheels "$$(ls build/fleet-wheels/edgenet-*.whl)[fleet]"
	$(VPY) -m pip install --quiet --no-index --find-links build/fleet-wheels --no-compile \
		--target build/fleet-site "$$(ls build/fleet-wheels/edgenet-*.whl)[fleet]"
	$(VPY) -m edgenet._fleetbuild build/fleet-site
	rm -rf build/fleet-site/edgenet build/fleet-site/admin_api build/fleet-site/edgenet-*.dist-info build/fleet-site/bin
	$(VENV)/bin/shiv --quiet --site-packages build/fleet-site --compressed --reproducible \
		-p '/usr/bin/env python3' -e edgenet.__main__:main -o build/edgenet-fleet.pyz \
		--no-index --find-links build/fleet-wheels --no-deps edgenet
	$(VPY) -m edgenet._buildcheck build/edgenet-fleet.pyz

pyz-fleet: build/edgenet-fleet.pyz

run: build/edgenet.pyz
	$(PYTHON) build/edgenet.pyz server $(PORT) $(ATTEMPTS) --credentials credentials.txt --data-dir build/server-data

test: build/edgenet.pyz build/edgenet-fleet.pyz
	$(VPY) -m pytest -q $(PYTEST_ARGS)

soak: build/edgenet.pyz
	$(VPY) -m pytest -q -m slow $(PYTEST_ARGS)

bench: build/edgenet.pyz build/edgenet-fleet.pyz
	$(VPY) bench/run.py

bench-quick: build/edgenet.pyz build/edgenet-fleet.pyz
	$(VPY) bench/run.py --quick

clean:
	rm -rf build $(VENV) *.egg-info

# Proof that the one zipapp runs on ARM: an arm64 Debian root (debootstrap) under
# qemu-user, a headless device session against an x86-64 server. Slow; needs root.
arm-check: build/edgenet.pyz
	bash docs/deploy/arm-check.sh build/edgenet.pyz
.PHONY: arm-check
