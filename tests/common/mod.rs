//! What the integration tests share.

/// Whether this is a riscv64 test executable running under an emulator such as qemu-user on
/// another architecture: the kernel is then the host's (no `isa` line in /proc/cpuinfo), with
/// no RISC-V KVM and, in qemu's linux-user, no seccomp filters.
pub fn riscv64_under_emulation() -> bool {
    cfg!(target_arch = "riscv64")
        && !std::fs::read_to_string("/proc/cpuinfo")
            .is_ok_and(|c| c.lines().any(|l| l.starts_with("isa")))
}
