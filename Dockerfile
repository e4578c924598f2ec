# A Debian machine that runs rvvmm's tests: x86 unit tests and the nested RISC-V KVM lab.
# The lab uses debootstrap and chroot, so run the container privileged:
#   docker build -t rvvmm-lab . && docker run --rm --privileged rvvmm-lab
# (`cargo xtask test` installs the rest itself: apt packages, the riscv64 rustup target,
# a QEMU 10 chroot and the pinned Debian riscv64 kernel and busybox.)
FROM rust:1-bookworm
RUN rustup component add rustfmt clippy
WORKDIR /rvvmm
COPY . .
CMD ["bash", ".ci/run"]
