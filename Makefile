# Two commands on a fresh machine:  `make demo` (install + tiny streaming NEST pretraining) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_data

.PHONY: install install-nemo3 sysdeps demo test test-nemo3 clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(MAKE) --no-print-directory sysdeps
	test -x $(PY) || { $(PYTHON) scripts/check_install_space.py --venv $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -c constraints.txt -e ".[test,s3prl]"
	$(VENV)/bin/streaming-ssl-s3prl install-hook   # editable installs do not ship the s3prl hub hook (.pth)
	touch $@

# espeak-ng makes the local speech corpus; nothing is downloaded at run time.
sysdeps:
	@command -v espeak-ng >/dev/null || { \
	  echo "installing espeak-ng (Debian/Ubuntu)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q espeak-ng; }

# Tiny streaming NEST pretraining on CPU (a few minutes on 2 cores); prints the path of the .nemo it writes.
# One torch thread plus one data-loading worker fill 2 cores without OpenMP threads spinning against each other.
DEMO_STEPS ?= 300
DEMO_DATA := num_workers=1 pin_memory=false batch_size=8
DEMO_NEMO := $(DEMO_DIR)/experiments/NEST-FastConformer-streaming/checkpoints/NEST-FastConformer-streaming.nemo

$(DEMO_DIR)/corpus/train.json: | install
	$(PY) scripts/make_corpus.py --out $(DEMO_DIR)/corpus --num-utterances 200 --seed 0

demo: install $(DEMO_DIR)/corpus/train.json
	OMP_NUM_THREADS=1 $(PY) examples/asr/speech_pretraining/masked_token_pred_pretrain.py preset=tiny \
	  model.train_ds.manifest_filepath=$(DEMO_DIR)/corpus/train.json \
	  model.validation_ds.manifest_filepath=$(DEMO_DIR)/corpus/val.json \
	  model.train_ds.noise_manifest=$(DEMO_DIR)/corpus/noise.json \
	  $(foreach kv,$(DEMO_DATA),model.train_ds.$(kv) model.validation_ds.$(kv)) \
	  trainer.accelerator=cpu trainer.devices=1 trainer.max_steps=$(DEMO_STEPS) trainer.log_every_n_steps=10 \
	  exp_manager.exp_dir=$(DEMO_DIR)/experiments
	@echo ""
	@echo "Next (QUICKSTART.md walks through these and more, after: source $(VENV)/bin/activate):"
	@echo "  stream it:  python examples/asr/speech_pretraining/streaming_inference_example.py \\"
	@echo "                model_path=$(DEMO_NEMO) \\"
	@echo "                audio_filepath=$(DEMO_DIR)/corpus/speech/utt00000.wav chunk_ms=80 piece_ms=37 posteriors=true"
	@echo "  fine-tune:  python examples/asr/speech_to_text_finetune/finetune_streaming_ctc.py \\"
	@echo "                pretrained_nemo=$(DEMO_NEMO) \\"
	@echo "                name=ctc-demo exp_manager.exp_dir=$(DEMO_DIR)/experiments +exp_manager.version=demo \\"
	@echo "                model.train_ds.manifest_filepath=$(DEMO_DIR)/corpus/train.json \\"
	@echo "                model.validation_ds.manifest_filepath=$(DEMO_DIR)/corpus/val.json trainer.max_steps=200"
	@echo "  tests:      make test"

test: install
	$(PY) -m pytest tests

# The second tested set (README "Versions"): NeMo 3.0 on torch 2.12, in its own venv. s3prl 0.4.18 cannot be
# installed there (it needs torchaudio 2.8), so the tests that need s3prl are skipped, each saying why.
VENV3 ?= .venv-nemo3
PY3 := $(VENV3)/bin/python
STAMP3 := $(VENV3)/.installed

install-nemo3: $(STAMP3)

$(STAMP3): pyproject.toml constraints-nemo3.txt
	@$(MAKE) --no-print-directory sysdeps
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and f"NeMo 3.0 needs Python >= 3.11 (its streaming utilities do), $(PYTHON) is {sys.version.split()[0]}: make test-nemo3 PYTHON=python3.11")'
	test -x $(PY3) || { $(PYTHON) scripts/check_install_space.py --venv $(VENV3) && $(PYTHON) -m venv $(VENV3); }
	$(PY3) -m pip install -c constraints-nemo3.txt -e ".[test]"
	touch $@

test-nemo3: install-nemo3
	$(PY3) -m pytest tests

clean:
	rm -rf $(DEMO_DIR) nemo_experiments .pytest_cache
