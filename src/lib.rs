//! rvvmm: a minimal, hosted, KVM-backed RISC-V virtual machine monitor.
//!
//! The data path, one module a step: [`config`] (CLI) → [`vmm`] (build the VM) → [`loader`] and
//! [`arch::riscv64`] (RAM map, ONE_REG IDs, device tree) → [`vcpu`] (lifecycle and the
//! [`vcpu::ExitReason`] taxonomy) → [`sbi`] and the MMIO [`devices::Bus`] → [`devices`].
//! [`hypervisor`] is the seam: KVM on riscv64, a scripted vCPU for tests everywhere.
#![warn(missing_docs)]

pub mod arch;
pub mod config;
pub mod console;
pub mod control;
pub mod devices;
pub mod event_loop;
pub mod hypervisor;
pub mod loader;
pub mod sbi;
pub mod vcpu;
pub mod vmm;

pub use config::VmConfig;
pub use vcpu::{ExitReason, Vcpu, VcpuConfig};
pub use vmm::Vmm;

/// Stack size of rvvmm's threads (vCPUs, event loop, console input). Under 2 MiB on purpose:
/// with transparent huge pages set to `always` (Debian's default), the kernel backs a stack of
/// 2 MiB or more (Rust's default) with a huge page at its first touch and clears all 2 MiB of
/// it, which costs each thread milliseconds of startup in the nested lab. None of these
/// threads recurses; their deepest path is a virtio request, a few KiB of frames.
pub(crate) const THREAD_STACK_SIZE: usize = 512 << 10;

/// A thread builder with rvvmm's name and stack size.
pub(crate) fn thread_builder(name: String) -> std::thread::Builder {
    std::thread::Builder::new()
        .name(name)
        .stack_size(THREAD_STACK_SIZE)
}
