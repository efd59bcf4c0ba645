# SPDX-License-Identifier: GPL-2.0
# Convenience wrapper: everything real lives in `cargo xtask` (see README.md).
# The kernel module itself is built by Kbuild; `cargo xtask build` runs
#   make -C <kernel source> O=<kernel build> M=$(CURDIR) MO=$(CURDIR)/target/kmod modules
.PHONY: all setup build test demo clean
all: build
setup:
	cargo xtask setup
build:
	cargo xtask build
test:
	cargo xtask test
demo:
	cargo xtask demo
clean:
	rm -rf target/kmod target/vm
