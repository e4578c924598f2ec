//! KVM user-space ABI constants newer than kvm-bindings 0.14 (whose RISC-V headers stop at
//! Linux 6.15), in one place until the crate has them: each with the Linux header it is in and
//! the release that added it. Architecture-independent values only; they name what the host's
//! kernel may or may not have, so code that uses one must cope with a kernel that lacks it.

/// `KVM_CAP_RISCV_MP_STATE_RESET` (include/uapi/linux/kvm.h, Linux 6.16): `KVM_SET_MP_STATE`
/// with `KVM_MP_STATE_INIT_RECEIVED` resets a vCPU, as a VMM's reboot wants. Enabled with
/// `KVM_ENABLE_CAP` on the VM; `KVM_CHECK_EXTENSION` does not report it.
pub const KVM_CAP_RISCV_MP_STATE_RESET: u32 = 242;

/// `KVM_RISCV_SBI_EXT_FWFT` (arch/riscv/include/uapi/asm/kvm.h, Linux 6.18): the SBI
/// firmware-features extension, after `KVM_RISCV_SBI_EXT_SUSP` (11, Linux 6.14).
pub const KVM_RISCV_SBI_EXT_FWFT: u64 = 12;

/// `KVM_RISCV_SBI_EXT_MPXY` (arch/riscv/include/uapi/asm/kvm.h, Linux 6.19): SBI message
/// proxy, forwarded to user space, off by default.
pub const KVM_RISCV_SBI_EXT_MPXY: u64 = 13;

/// `KVM_EXIT_FAIL_ENTRY_NO_VSFILE` (arch/riscv/include/uapi/asm/kvm.h, Linux 6.19): bit 0 of
/// `hardware_entry_failure_reason`: the host's IMSIC had no free guest interrupt file (VS-file)
/// for the vCPU on the hart it was to run on.
pub const KVM_EXIT_FAIL_ENTRY_NO_VSFILE: u64 = 1 << 0;

/// What a `KVM_EXIT_FAIL_ENTRY` reason means for the user, when rvvmm knows.
pub fn fail_entry_hint(reason: u64) -> Option<&'static str> {
    (reason & KVM_EXIT_FAIL_ENTRY_NO_VSFILE != 0).then_some(
        "the host's IMSIC has no free guest interrupt file for this vCPU (each hart has a few, shared by every VM's vCPUs on it): use fewer vCPUs, stop other VMs, or --irqchip plic",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_entry_reasons_are_explained_when_known() {
        assert!(fail_entry_hint(KVM_EXIT_FAIL_ENTRY_NO_VSFILE)
            .unwrap()
            .contains("--irqchip plic"));
        assert_eq!(fail_entry_hint(0), None);
        assert_eq!(fail_entry_hint(0x10), None);
    }
}
