//! How devices interrupt the guest: the interrupt controller in use ([`IrqMode`]), what
//! devices see of it ([`IrqChip`] for wired devices, [`Interrupt`] for a virtio device), and
//! the adapters from one to the other.
//!
//! The matrix: with the PLIC (rvvmm's, in user space) every source is an edge the PLIC latches,
//! and the PLIC drives each vCPU's external line with KVM_INTERRUPT
//! ([`crate::hypervisor::InterruptLine`]). With KVM's in-kernel AIA every source is a level
//! line: a virtio device raises it through a KVM irqfd ([`IrqfdInterrupt`]; the event loop's
//! eventfd write is the whole signal) and lowers it with KVM_IRQ_LINE when the driver
//! acknowledges; where KVM takes no irqfd, KVM_IRQ_LINE does both ([`LevelInterrupt`]).

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

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

/// How a virtio device interrupts the guest: a PLIC source, or a line of KVM's in-kernel irqchip.
pub trait Interrupt: Send + Sync {
    /// A new interrupt condition (InterruptStatus gained bits).
    fn trigger(&self);
    /// The driver acknowledged; `pending` says whether InterruptStatus still has bits (a
    /// level-sensitive line follows it; an edge source ignores this).
    fn acknowledged(&self, _pending: bool) {}
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

/// A virtio device's level-sensitive line on KVM's AIA, raised through an irqfd: the event
/// loop's write to the eventfd makes KVM raise the line itself, so signalling the guest runs
/// no user-space irqchip code. KVM's RISC-V irqfd only ever raises a line (its in-atomic
/// injection sets level 1 and the level-0 half of a pulse never runs), so the line is lowered
/// here, with KVM_IRQ_LINE, when the driver acknowledges the last InterruptStatus bit. Raise
/// and lower both happen under the transport's lock, so they cannot cross: a condition that
/// arrives before the acknowledgement keeps the line high (Linux's APLIC driver re-pends a
/// still-high level source at EOI), one that arrives after it raises the line again.
pub struct IrqfdInterrupt {
    evt: EventFd,
    chip: Arc<dyn IrqChip>,
    irq: u32,
}

impl Interrupt for IrqfdInterrupt {
    fn trigger(&self) {
        if let Err(e) = self.evt.write(1) {
            crate::guest_warn!(
                "cannot signal interrupt {} through its irqfd: {e}",
                self.irq
            );
        }
    }

    fn acknowledged(&self, pending: bool) {
        if !pending {
            self.chip.set_level(self.irq, false);
        }
    }
}

/// A virtio device's level-sensitive line on KVM's AIA driven with KVM_IRQ_LINE both ways:
/// the fallback where KVM takes no irqfd.
pub struct LevelInterrupt {
    chip: Arc<dyn IrqChip>,
    irq: u32,
}

impl Interrupt for LevelInterrupt {
    fn trigger(&self) {
        self.chip.set_level(self.irq, true);
    }

    fn acknowledged(&self, pending: bool) {
        self.chip.set_level(self.irq, pending);
    }
}

/// The interrupt of a virtio device on interrupt `irq` of KVM's AIA: an irqfd when KVM takes
/// one, else a line driven with KVM_IRQ_LINE. Returns it and how it is wired (for the log).
pub fn aia_interrupt<V: VmBackend>(
    vm: &V,
    chip: &Arc<dyn IrqChip>,
    irq: u32,
) -> std::io::Result<(Arc<dyn Interrupt>, &'static str)> {
    let evt = EventFd::new(libc::EFD_NONBLOCK)?;
    let chip = chip.clone();
    match vm.register_irqfd(&evt, irq) {
        Ok(()) => Ok((Arc::new(IrqfdInterrupt { evt, chip, irq }), "AIA, irqfd")),
        Err(e) => {
            log::warn!("no irqfd for interrupt {irq} ({e}); driving it with KVM_IRQ_LINE");
            Ok((Arc::new(LevelInterrupt { chip, irq }), "AIA, KVM_IRQ_LINE"))
        }
    }
}

/// KVM's in-kernel AIA as an [`IrqChip`]: wired sources driven with KVM_IRQ_LINE.
pub struct KvmIrqChip<V>(pub Arc<V>);

impl<V: VmBackend> IrqChip for KvmIrqChip<V> {
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
    use std::sync::Mutex;

    #[derive(Default)]
    struct Lines(Mutex<Vec<(u32, bool)>>);

    impl IrqChip for Lines {
        fn trigger(&self, irq: u32) {
            self.set_level(irq, true);
        }
        fn set_level(&self, irq: u32, level: bool) {
            self.0.lock().unwrap().push((irq, level));
        }
    }

    #[test]
    fn an_irqfd_line_is_raised_by_the_eventfd_and_lowered_by_the_last_ack() {
        let chip = Arc::new(Lines::default());
        let interrupt = IrqfdInterrupt {
            evt: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            chip: chip.clone(),
            irq: 3,
        };
        interrupt.trigger();
        interrupt.trigger();
        assert_eq!(
            interrupt.evt.read().unwrap(),
            2,
            "raised through the eventfd"
        );
        assert!(
            chip.0.lock().unwrap().is_empty(),
            "no KVM_IRQ_LINE to raise"
        );
        interrupt.acknowledged(true);
        assert!(
            chip.0.lock().unwrap().is_empty(),
            "still pending: stays high"
        );
        interrupt.acknowledged(false);
        assert_eq!(*chip.0.lock().unwrap(), vec![(3, false)]);
    }

    #[test]
    fn a_level_line_follows_the_acknowledgement() {
        let chip = Arc::new(Lines::default());
        let interrupt = LevelInterrupt {
            chip: chip.clone(),
            irq: 5,
        };
        interrupt.trigger();
        interrupt.acknowledged(true);
        interrupt.acknowledged(false);
        assert_eq!(
            *chip.0.lock().unwrap(),
            vec![(5, true), (5, true), (5, false)]
        );
    }
}
