//! The lab's two kinds of L1 (its own module: both the lab and its plan name them).

/// L1's interrupt controller: QEMU virt's PLIC, or AIA (APLIC + IMSIC), which gives KVM an
/// in-kernel irqchip for L2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `-M virt`.
    Plic,
    /// `-M virt,aia=aplic-imsic,aia-guests=4`.
    Aia,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Plic => "plic",
            Mode::Aia => "aia",
        }
    }

    pub(crate) fn machine(self) -> &'static str {
        match self {
            Mode::Plic => "virt",
            Mode::Aia => "virt,aia=aplic-imsic,aia-guests=4",
        }
    }
}
