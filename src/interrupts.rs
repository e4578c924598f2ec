//! How devices interrupt the guest: the interrupt controller in use ([`IrqMode`]), what
//! devices see of it ([`IrqChip`] for wired devices, [`Interrupt`] for a virtio device), and
//! the adapter from one to the other ([`ChipInterrupt`]).
//!
//! The matrix: with the PLIC (rvvmm's, in user space) every source is an edge the PLIC latches,
//! and the PLIC drives each vCPU's external line with KVM_INTERRUPT
//! ([`crate::hypervisor::InterruptLine`]). With KVM's in-kernel AIA a virtio device's source is
//! a rising edge: [`KvmIrqChip::trigger`] pulses the line with KVM_IRQ_LINE (high, then low),
//! as kvmtool does, and the dtb says so. A level source would cost the guest an exit per
//! interrupt (Linux's APLIC driver writes `setipnum` at every EOI to re-pend a still-high
//! level source: measured, 5.4 exits a 4 KiB read against kvmtool's 4.4) and rvvmm a
//! KVM_IRQ_LINE at every acknowledgement; a KVM irqfd cannot make edges (its in-atomic
//! injection only raises a line). The UART's line is a level that follows its IIR.

use std::sync::Arc;

use crate::hypervisor::VmBackend;

/// The interrupt controller a VM has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqMode {
    /// rvvmm's PLIC, emulated in user space.
    Plic,
    /// KVM's in-kernel AIA: APLIC + one IMSIC file per hart, each with `num_ids` identities.
    Aia {
        /// Interrupt identities per IMSIC file (as KVM reports them).
        num_ids: u32,
        /// Wired sources of the APLIC (as KVM reports them).
        num_sources: u32,
    },
}

impl IrqMode {
    /// Whether this is KVM's in-kernel AIA.
    pub fn is_aia(self) -> bool {
        matches!(self, IrqMode::Aia { .. })
    }
}

/// A wired interrupt controller as devices see it: rvvmm's PLIC, or KVM's in-kernel AIA.
pub trait IrqChip: Send + Sync {
    /// Asserts source `irq` once (an edge).
    fn trigger(&self, irq: u32);
    /// Whether sources are level-sensitive lines (then devices drive [`IrqChip::set_level`]).
    fn level_sensitive(&self) -> bool {
        false
    }
    /// Drives level-sensitive source `irq`.
    fn set_level(&self, irq: u32, level: bool) {
        if level {
            self.trigger(irq);
        }
    }
}

/// How a virtio device interrupts the guest: an edge on a PLIC source or on a line of KVM's
/// in-kernel irqchip.
pub trait Interrupt: Send + Sync {
    /// A new interrupt condition (InterruptStatus gained bits).
    fn trigger(&self);
}

/// A virtio device's interrupt through an [`IrqChip`] source.
pub struct ChipInterrupt {
    /// The chip.
    pub chip: Arc<dyn IrqChip>,
    /// The source.
    pub irq: u32,
}

impl Interrupt for ChipInterrupt {
    fn trigger(&self) {
        self.chip.trigger(self.irq);
    }
}

/// KVM's in-kernel AIA as an [`IrqChip`]: wired sources driven with KVM_IRQ_LINE.
pub struct KvmIrqChip<V>(pub Arc<V>);

impl<V: VmBackend> IrqChip for KvmIrqChip<V> {
    /// A rising edge: the line high, then low (two ioctls, from the event loop's thread; the
    /// vCPU then has nothing to lower when the driver acknowledges).
    fn trigger(&self, irq: u32) {
        self.set_level(irq, true);
        self.set_level(irq, false);
    }

    fn level_sensitive(&self) -> bool {
        true
    }

    fn set_level(&self, irq: u32, level: bool) {
        if let Err(e) = self.0.set_irq_line(irq, level) {
            crate::guest_warn!("cannot set interrupt {irq} to {level}: {e}");
        }
    }
}

/// An interrupt that counts its triggers, for tests.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Default)]
pub struct CountingInterrupt(pub std::sync::atomic::AtomicU64);

#[cfg(any(test, feature = "testing"))]
impl Interrupt for CountingInterrupt {
    fn trigger(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A virtio device's interrupt on KVM's AIA is a pulse of its line, every time.
    #[test]
    fn a_virtio_interrupt_on_the_aia_is_a_pulse() {
        let vm = Arc::new(crate::hypervisor::scripted::ScriptedVm::new().with_aia());
        let lines = vm.irq_lines.clone();
        let interrupt = ChipInterrupt {
            chip: Arc::new(KvmIrqChip(vm)),
            irq: 3,
        };
        interrupt.trigger();
        interrupt.trigger();
        assert_eq!(
            *lines.lock().unwrap(),
            vec![(3, true), (3, false), (3, true), (3, false)]
        );
    }
}
