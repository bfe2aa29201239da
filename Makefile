# muri-rs — common tasks. `make simulate` and `make test` are the two commands a fresh
# machine needs (see README.md).
CARGO_TARGET_DIR ?= $(HOME)/.cache/muri-rs/target
export CARGO_TARGET_DIR
MURI := $(CARGO_TARGET_DIR)/release/muri

.PHONY: simulate test build bench fmt clippy trace-data clean rpc gpu gpu-check gpu-carry

simulate:            ## default trace, every policy, comparison table
	scripts/simulate.sh

test:                ## fmt + clippy + every test (release), docs, debug-assertion subset
	scripts/test.sh

build:
	cargo build --release

rpc:                 ## (re)generate the testbed's gRPC code (runtime/proto, protox) and build it
	touch runtime/proto/muri.proto && cargo build --release -p muri-runtime -p muri-workloads -p muri

gpu:                 ## GPU binaries into gpu-bin/ against the GPU machine's libtorch (docs/testbed.md)
	scripts/gpu-build.sh $(TORCH_VERSION)

gpu-check:           ## the GPU check (CPU fallback without a GPU) into results/gpu-check.txt
	scripts/gpu-check.sh

gpu-carry:           ## gpu-bin/ up to date, its carry size checked, and the device run to ask for
	scripts/gpu-carry.sh $(TORCH_VERSION)

bench: build         ## the BENCHMARKS.md figures
	scripts/bench.sh

trace-data: build    ## regenerate the shipped default trace
	$(MURI) trace gen -o trace-data/default.csv

fmt:
	cargo fmt --all

clippy:
	cargo clippy --release --all-targets -- -D warnings

clean:
	cargo clean
