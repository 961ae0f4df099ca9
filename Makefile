.PHONY: install test test-fast lint bench

install:
	pip install torch==2.13.0 && pip install -e ".[dev,tune,export,serve]"

test:
	HF_HUB_OFFLINE=1 python -m pytest -q

test-fast:
	HF_HUB_OFFLINE=1 python -m pytest -q -m "not slow"

lint:
	ruff check . && ruff format --check .

bench:
	HF_HUB_OFFLINE=1 python scripts/bench_finetune.py
