# imagenet-1h — thin wrapper around CMake/CTest. Everything real lives in CMakeLists.txt.
#   make demo   install missing packages, build, make a synthetic dataset, train, print top-1
#   make test   install missing packages, build, run every test this machine supports
#   make bench  build and run the benchmarks (tables + RESULT lines)
BUILD ?= build
CMAKE_FLAGS ?= -DIH_WERROR=ON
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all build deps demo test bench sanitize clean

all: build

deps:
	@sh scripts/install-deps

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

DEMO_START := $(shell date +%s)
export DEMO_START

demo: build
	@sh scripts/demo.sh $(BUILD)

test: build
	@sh scripts/install-deps --test
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@echo "== Release build with warnings as errors (-O3 finds what -O2 does not, e.g. maybe-uninitialized)"
	cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DIH_WERROR=ON > /dev/null
	cmake --build build-release -j $(JOBS) > build-release.log 2>&1 || { tail -40 build-release.log; exit 1; }
	@echo "== Release build: clean"

bench: build
	@sh scripts/bench.sh $(BUILD)

# ASan+UBSan over the whole suite; TSan over the threaded code (ring, loader, transport, trainer).
# The rdma tests (single-threaded ranks as processes in the Soft-RoCE VM) run under ASan only:
# TSan's shadow memory pushes their 64 MiB allreduces past the VM's 2 GiB (OOM-killed ranks).
sanitize: deps
	cmake -S . -B build-asan -DIH_WITH_CUDA=OFF -DIH_SANITIZE='address;undefined' -DIH_WERROR=ON
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS)
	cmake -S . -B build-tsan -DIH_WITH_CUDA=OFF -DIH_SANITIZE=thread -DIH_WERROR=ON
	cmake --build build-tsan -j $(JOBS)
	cd build-tsan && ctest --output-on-failure -LE rdma -R 'ring|loader|bad_records|allreduce|broadcast|rendezvous|launch|train_|dp_|make_lmdb|hier'

clean:
	rm -rf $(BUILD) build-asan build-tsan build-release build-release.log demo-out
