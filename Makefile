# Two commands on a fresh machine:  `make demo` (install + tiny streaming NEST pretraining) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_data

.PHONY: install sysdeps demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(MAKE) --no-print-directory sysdeps
	test -x $(PY) || { $(PYTHON) scripts/check_install_space.py --venv $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -c constraints.txt -e ".[test]"
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
	@echo "Next (QUICKSTART.md walks through each):"
	@echo "  stream it:  $(PY) examples/asr/speech_pretraining/streaming_inference_example.py \\"
	@echo "                model_path=$(DEMO_NEMO) audio_filepath=$(DEMO_DIR)/corpus/speech/utt00000.wav chunk_ms=80"
	@echo "  fine-tune:  $(PY) examples/asr/speech_to_text_finetune/finetune_streaming_ctc.py pretrained_nemo=$(DEMO_NEMO) \\"
	@echo "                model.train_ds.manifest_filepath=$(DEMO_DIR)/corpus/train.json \\"
	@echo "                model.validation_ds.manifest_filepath=$(DEMO_DIR)/corpus/val.json trainer.max_steps=200"
	@echo "  tests:      make test"

test: install
	$(PY) -m pytest tests

clean:
	rm -rf $(DEMO_DIR) nemo_experiments .pytest_cache
