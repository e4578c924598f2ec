# rvvmm for riscv64 hosts: an image holding only the static rvvmm binary (no base image, so
# nothing is pulled from a registry). Run it with the host's KVM and the guest's files:
#   podman run --rm -it --device /dev/kvm -v "$PWD:/vm" rvvmm \
#       --kernel /vm/Image --initrd /vm/initrd.cpio --cmdline console=ttyS0
# Build it (on any host) from a context holding the static riscv64 rvvmm:
#   cargo xtask image          (cross-builds, builds with buildah, checks the entry point)
# or by hand:
#   cargo build --release --target riscv64gc-unknown-linux-gnu
#   mkdir ctx && cp target/riscv64gc-unknown-linux-gnu/release/rvvmm ctx/
#   buildah bud --platform linux/riscv64 -f Dockerfile -t rvvmm ctx
# The x86_64 image that runs rvvmm's test suite (the nested lab) is resources/lab/Dockerfile.
FROM scratch
COPY rvvmm /rvvmm
ENTRYPOINT ["/rvvmm"]
