# imagenet-1h — thin wrapper around CMake/CTest. Everything real lives in CMakeLists.txt.
#   make demo   install missing packages, build, make a synthetic dataset, train, print top-1
#   make test   install missing packages, build, run every test this machine supports
#   make bench  build and run the benchmarks (tables + RESULT lines)
BUILD ?= build
CMAKE_FLAGS ?= -DIH_WERROR=ON
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all build deps demo test bench clean

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
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

bench: build
	@sh scripts/bench.sh $(BUILD)

clean:
	rm -rf $(BUILD) demo-out
