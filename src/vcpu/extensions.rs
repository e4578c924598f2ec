//! Switching ISA and SBI extensions off (`--disable-isa`, `--disable-sbi`), as kvmtool's
//! `--disable-<ext>` and `--disable-sbi-<ext>` do: each has a KVM ONE_REG register
//! (`KVM_REG_RISCV_ISA_EXT` / `KVM_REG_RISCV_SBI_EXT`) that reads 1 when the vCPU has it and
//! takes 0 before the vCPU first runs, where KVM has a means to hide it from the guest. Which
//! ones it can hide depends on the host kernel, so rvvmm asks KVM rather than keeping a list:
//! [`report`] tries each on a vCPU that never runs.

use crate::arch::riscv64::regs::{
    isa_ext, isa_ext_id, sbi_ext, sbi_ext_id, ISA_EXTS, ISA_LETTERS, SBI_EXTS,
};
use crate::hypervisor::{HypervisorError, VcpuBackend, VmBackend};

/// The extensions a VM's vCPUs have switched off, by name (checked by the config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Toggles {
    /// ISA extensions: single letters and multi-letter names.
    pub isa: Vec<String>,
    /// KVM SBI extensions.
    pub sbi: Vec<String>,
}

/// ISA or SBI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An ISA extension (`--disable-isa`).
    Isa,
    /// An SBI extension (`--disable-sbi`).
    Sbi,
}

impl Kind {
    fn register(self, name: &str) -> Option<u64> {
        match self {
            Kind::Isa => isa_ext_id(name).map(isa_ext),
            Kind::Sbi => sbi_ext_id(name).map(sbi_ext),
        }
    }

    fn names(self) -> Vec<&'static str> {
        match self {
            Kind::Isa => ISA_LETTERS
                .iter()
                .chain(ISA_EXTS)
                .map(|(_, n)| *n)
                .collect(),
            Kind::Sbi => SBI_EXTS.iter().map(|(_, n)| *n).collect(),
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Kind::Isa => "--disable-isa",
            Kind::Sbi => "--disable-sbi",
        }
    }
}

/// Why an extension stays on.
#[derive(Debug, thiserror::Error)]
#[error("KVM on this host cannot switch off {name} ({flag} can switch off: {can})")]
pub struct CannotDisable {
    /// The extension.
    pub name: String,
    /// The flag asked.
    pub flag: &'static str,
    /// What this vCPU can switch off, comma-separated.
    pub can: String,
}

/// What a vCPU offers of `kind`: each extension it has, and whether KVM would switch it off.
/// Tries each write on `vcpu` and puts the extension back, so `vcpu` must not have run.
pub fn probe<B: VcpuBackend>(vcpu: &mut B, kind: Kind) -> Vec<(&'static str, bool)> {
    kind.names()
        .into_iter()
        .filter_map(|name| {
            let reg = kind.register(name)?;
            // A register the kernel does not know reads as an error: the vCPU lacks it. KVM
            // keeps some SBI extensions (DBCN) off until the VMM turns them on.
            let on =
                vcpu.get_reg(reg).ok()? == 1 || (kind == Kind::Sbi && vcpu.set_reg(reg, 1).is_ok());
            on.then(|| {
                let can = vcpu.set_reg(reg, 0).is_ok();
                if can {
                    // Put back; failing that, the probe's vCPU has one less, which is harmless
                    // for a vCPU that only answers this question.
                    let _ = vcpu.set_reg(reg, 1);
                }
                (name, can)
            })
        })
        .collect()
}

/// Switches off each of `names` of `kind` on `vcpu` (before its first run). An extension the
/// vCPU does not have is already off (a warning says so); one KVM keeps on is an error that
/// lists what it could switch off.
pub fn switch_off<B: VcpuBackend>(
    vcpu: &mut B,
    kind: Kind,
    names: &[String],
) -> Result<(), CannotDisable> {
    for name in names {
        let Some(reg) = kind.register(name) else {
            // The config checks names; an unknown one here has nothing to switch.
            continue;
        };
        if vcpu.get_reg(reg).unwrap_or(0) != 1 {
            log::warn!(
                "{} {name}: this host's KVM vCPU has it off already",
                kind.flag()
            );
            continue;
        }
        if vcpu.set_reg(reg, 0).is_err() {
            let can: Vec<&str> = probe(vcpu, kind)
                .into_iter()
                .filter(|(_, can)| *can)
                .map(|(n, _)| n)
                .collect();
            return Err(CannotDisable {
                name: name.clone(),
                flag: kind.flag(),
                can: if can.is_empty() {
                    "none".into()
                } else {
                    can.join(", ")
                },
            });
        }
    }
    Ok(())
}

/// `--list-extensions`: what this host's KVM vCPU offers, and what can be switched off, as
/// text.
pub fn report<V: VmBackend>(vm: &V) -> Result<String, HypervisorError> {
    let mut vcpu = vm.create_vcpu(0)?;
    let mut text = String::new();
    for (kind, what) in [(Kind::Isa, "ISA"), (Kind::Sbi, "SBI")] {
        let offered = probe(&mut vcpu, kind);
        let line = |f: fn(&(&str, bool)) -> bool| {
            offered
                .iter()
                .filter(|e| f(e))
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(" ")
        };
        text.push_str(&format!(
            "{what} extensions this host's KVM vCPU offers: {}\n",
            line(|_| true)
        ));
        text.push_str(&format!(
            "  {} can switch off: {}\n",
            kind.flag(),
            line(|(_, can)| *can)
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::scripted::ScriptedVm;

    /// A host whose KVM offers f, zbb (which it cannot hide) and sstc, and of the SBI
    /// extensions only DBCN (off until turned on, as KVM keeps it).
    fn vm() -> ScriptedVm {
        let vm = ScriptedVm::default()
            .with_reg(isa_ext(3), 1) // f
            .with_reg(isa_ext(13), 1) // zbb
            .with_reg(isa_ext(8), 1) // sstc
            .with_fixed_reg(isa_ext(13));
        SBI_EXTS
            .iter()
            .filter(|(_, name)| *name != "dbcn")
            .fold(vm, |vm, (id, _)| vm.with_fixed_reg(sbi_ext(*id)))
    }

    #[test]
    fn the_report_lists_what_kvm_offers_and_what_it_lets_go() {
        let text = report(&vm()).unwrap();
        assert!(
            text.contains("ISA extensions this host's KVM vCPU offers: f zbb sstc\n"),
            "{text}"
        );
        assert!(
            text.contains("--disable-isa can switch off: f sstc\n"),
            "{text}"
        );
        assert!(
            text.contains("SBI extensions this host's KVM vCPU offers: dbcn\n"),
            "{text}"
        );
    }

    #[test]
    fn switching_off_writes_zero_or_names_what_could_be() {
        let vm = vm();
        let mut vcpu = vm.create_vcpu(0).unwrap();
        switch_off(&mut vcpu, Kind::Isa, &["sstc".into(), "v".into()]).unwrap();
        assert_eq!(vcpu.get_reg(isa_ext(8)).unwrap(), 0);
        let e = switch_off(&mut vcpu, Kind::Isa, &["zbb".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "KVM on this host cannot switch off zbb (--disable-isa can switch off: f)"
        );
        // The probe put back what it tried.
        assert_eq!(vcpu.get_reg(isa_ext(3)).unwrap(), 1);
        vcpu.set_reg(sbi_ext(9), 1).unwrap();
        switch_off(&mut vcpu, Kind::Sbi, &["dbcn".into()]).unwrap();
        assert_eq!(vcpu.get_reg(sbi_ext(9)).unwrap(), 0);
    }
}
