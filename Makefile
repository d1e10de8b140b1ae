# Plantbus: `make demo` runs the simulated plant, `make test` passes the tests, `make bench` measures.
PY := .venv/bin/python

.PHONY: demo test bench setup proto conformance clean

demo:
	@scripts/setup.sh run
	@$(PY) -m hub.demo

test:
	@scripts/setup.sh test
	@$(PY) -m pytest $(PYTEST_ARGS)

bench:
	@scripts/setup.sh bench
	@$(PY) bench/run.py
	@$(PY) bench/historian.py
	@$(PY) -m bench.modbus
	@$(PY) -m bench.opcua
	@$(PY) bench/cv.py
	@$(PY) bench/cv_marking.py
	@$(PY) bench/cv_detection.py

setup:
	@scripts/setup.sh test

# Regenerate the protobuf module from hub/sparkplug/sparkplug_b.proto (needs the dev extra).
proto:
	@$(PY) -m pip install -q -e '.[dev]'
	@cd hub/sparkplug && ../../$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. sparkplug_b.proto

# Regenerate docs/conformance.md from the tests' assertion ids.
conformance:
	@$(PY) scripts/conformance.py

clean:
	rm -rf .venv var .pytest_cache tests/interop/node_modules
