//! rvvmm: a minimal, hosted, KVM-backed RISC-V virtual machine monitor.
//!
//! The data path, one module a step: [`config`] (CLI) → [`vmm`] (build the VM) → [`loader`] and
//! [`arch::riscv64`] (RAM map, ONE_REG IDs, device tree) → [`vcpu`] (lifecycle and the
//! [`vcpu::ExitReason`] taxonomy) → [`sbi`] and the MMIO [`devices::Bus`] → [`devices`].
//! [`hypervisor`] is the seam: KVM on riscv64, a scripted vCPU for tests everywhere.
#![warn(missing_docs)]

pub mod api;
pub mod arch;
pub mod config;
pub mod console;
pub mod control;
pub mod devices;
pub mod event_loop;
pub mod files;
pub mod hypervisor;
pub mod interrupts;
pub mod loader;
pub mod memory;
pub mod ratelimit;
pub mod sbi;
pub mod seccomp;
pub mod signals;
pub mod snapshot;
pub mod startup;
pub mod vcpu;
pub mod vmm;

pub use config::VmConfig;

/// An error and its causes on one line: "outer: inner: innermost", skipping a cause whose
/// text the outer message already has.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}
pub use vcpu::{ExitReason, Vcpu, VcpuConfig};
pub use vmm::Vmm;
