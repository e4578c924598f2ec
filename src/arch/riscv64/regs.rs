//! RISC-V KVM ONE_REG register IDs (linux `arch/riscv/include/uapi/asm/kvm.h`).
//!
//! An ID is `KVM_REG_RISCV | size | type | (subtype) | index`. They are spelled out here rather
//! than taken from kvm-bindings because kvm-bindings only has them when built for riscv64,
//! and rvvmm's register logic is unit-tested on x86_64. The tests pin every ID to a literal.

/// `KVM_REG_RISCV`.
pub const KVM_REG_RISCV: u64 = 0x8000_0000_0000_0000;
/// `KVM_REG_SIZE_U64`.
pub const KVM_REG_SIZE_U64: u64 = 0x0030_0000_0000_0000;
/// `KVM_REG_RISCV_CONFIG`.
pub const TYPE_CONFIG: u64 = 1 << 24;
/// `KVM_REG_RISCV_CORE`.
pub const TYPE_CORE: u64 = 2 << 24;
/// `KVM_REG_RISCV_CSR`.
pub const TYPE_CSR: u64 = 3 << 24;
/// `KVM_REG_RISCV_TIMER`.
pub const TYPE_TIMER: u64 = 4 << 24;
/// `KVM_REG_RISCV_ISA_EXT`.
pub const TYPE_ISA_EXT: u64 = 7 << 24;
/// `KVM_REG_RISCV_SBI_EXT`.
pub const TYPE_SBI_EXT: u64 = 8 << 24;

const fn reg(kind: u64, index: u64) -> u64 {
    KVM_REG_RISCV | KVM_REG_SIZE_U64 | kind | index
}

/// `pc` (index 0 of `struct kvm_riscv_core`).
pub const PC: u64 = reg(TYPE_CORE, 0);

/// The core register ID of `a<n>` (`a0` is index 10 of `struct kvm_riscv_core`).
pub const fn a(n: u64) -> u64 {
    reg(TYPE_CORE, 10 + n)
}

/// CONFIG `isa`: the single-letter extension bitmap (bit 0 = 'a').
pub const CONFIG_ISA: u64 = reg(TYPE_CONFIG, 0);
/// CONFIG `zicbom_block_size`.
pub const CONFIG_ZICBOM_BLOCK_SIZE: u64 = reg(TYPE_CONFIG, 1);
/// CONFIG `mvendorid`.
pub const CONFIG_MVENDORID: u64 = reg(TYPE_CONFIG, 2);
/// CONFIG `zicboz_block_size`.
pub const CONFIG_ZICBOZ_BLOCK_SIZE: u64 = reg(TYPE_CONFIG, 5);
/// CONFIG `satp_mode`: the largest paging mode (8 = Sv39, 9 = Sv48, 10 = Sv57).
pub const CONFIG_SATP_MODE: u64 = reg(TYPE_CONFIG, 6);
/// CSR `sstateen0` (subtype `KVM_REG_RISCV_CSR_SMSTATEEN`, index 0), where the vCPU has
/// Smstateen.
pub const CSR_SSTATEEN0: u64 = reg(TYPE_CSR, 2 << 16);
/// TIMER `frequency`: the timebase frequency in Hz.
pub const TIMER_FREQUENCY: u64 = reg(TYPE_TIMER, 0);

/// The ISA_EXT register of multi-letter extension `id` (1 when the vCPU has it).
pub const fn isa_ext(id: u64) -> u64 {
    reg(TYPE_ISA_EXT, id)
}

/// `KVM_RISCV_SBI_EXT_DBCN`.
pub const SBI_EXT_DBCN: u64 = 9;
/// `KVM_RISCV_SBI_EXT_SUSP`.
pub const SBI_EXT_SUSP: u64 = 11;

/// KVM's SBI extensions by `KVM_RISCV_SBI_EXT_*` ID, with the names `--disable-sbi` takes.
pub const SBI_EXTS: &[(u64, &str)] = &[
    (0, "v01"),
    (1, "time"),
    (2, "ipi"),
    (3, "rfence"),
    (4, "srst"),
    (5, "hsm"),
    (6, "pmu"),
    (7, "experimental"),
    (8, "vendor"),
    (SBI_EXT_DBCN, "dbcn"),
    (10, "sta"),
    (SBI_EXT_SUSP, "susp"),
    (crate::hypervisor::uapi::KVM_RISCV_SBI_EXT_FWFT, "fwft"),
    (crate::hypervisor::uapi::KVM_RISCV_SBI_EXT_MPXY, "mpxy"),
];

/// The single-letter extensions by `KVM_RISCV_ISA_EXT_*` ID (their ISA_EXT registers switch
/// them like the multi-letter ones).
pub const ISA_LETTERS: &[(u64, &str)] = &[
    (0, "a"),
    (1, "c"),
    (2, "d"),
    (3, "f"),
    (4, "h"),
    (5, "i"),
    (6, "m"),
    (15, "v"),
];

/// The KVM ID of ISA extension `name` (a letter or a multi-letter name).
pub fn isa_ext_id(name: &str) -> Option<u64> {
    ISA_LETTERS
        .iter()
        .chain(ISA_EXTS)
        .find(|(_, n)| *n == name)
        .map(|(id, _)| *id)
}

/// The KVM ID of SBI extension `name`.
pub fn sbi_ext_id(name: &str) -> Option<u64> {
    SBI_EXTS.iter().find(|(_, n)| *n == name).map(|(id, _)| *id)
}

/// The SBI_EXT register (SINGLE subtype) that turns KVM's SBI extension `id` on (1) or off (0).
pub const fn sbi_ext(id: u64) -> u64 {
    reg(TYPE_SBI_EXT, id)
}

/// Multi-letter extensions by `KVM_RISCV_ISA_EXT_*` ID, in the canonical order the device
/// tree's `riscv,isa` string wants (Z* by category, then S*).
pub const ISA_EXTS: &[(u64, &str)] = &[
    (19, "zicntr"),
    (20, "zicsr"),
    (21, "zifencei"),
    (22, "zihpm"),
    (10, "zihintpause"),
    (48, "zihintntl"),
    (11, "zicbom"),
    (12, "zicboz"),
    (24, "zicond"),
    (55, "zimop"),
    (53, "zacas"),
    (61, "zawrs"),
    (46, "zfh"),
    (47, "zfhmin"),
    (51, "zfa"),
    (56, "zca"),
    (57, "zcb"),
    (58, "zcd"),
    (59, "zcf"),
    (60, "zcmop"),
    (17, "zba"),
    (13, "zbb"),
    (25, "zbc"),
    (18, "zbs"),
    (26, "zbkb"),
    (27, "zbkc"),
    (28, "zbkx"),
    (29, "zknd"),
    (30, "zkne"),
    (31, "zknh"),
    (32, "zkr"),
    (33, "zksed"),
    (34, "zksh"),
    (35, "zkt"),
    (52, "ztso"),
    (36, "zvbb"),
    (37, "zvbc"),
    (38, "zvkb"),
    (39, "zvkg"),
    (40, "zvkned"),
    (41, "zvknha"),
    (42, "zvknhb"),
    (43, "zvksed"),
    (44, "zvksh"),
    (45, "zvkt"),
    (49, "zvfh"),
    (50, "zvfhmin"),
    (14, "ssaia"),
    (54, "sscofpmf"),
    (23, "smstateen"),
    (8, "sstc"),
    (9, "svinval"),
    (16, "svnapot"),
    (7, "svpbmt"),
];

/// What a vCPU offers, read through ONE_REG by `Vcpu::setup`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VcpuIsa {
    /// CONFIG `isa` bitmap of single-letter extensions.
    pub base: u64,
    /// Names of the multi-letter extensions whose ISA_EXT register reads 1, canonical order.
    pub extensions: Vec<&'static str>,
    /// CONFIG `satp_mode` (0 when unknown).
    pub satp_mode: u64,
    /// TIMER `frequency` in Hz.
    pub timebase_frequency: u64,
    /// CONFIG `zicbom_block_size` (0 when the vCPU lacks Zicbom).
    pub zicbom_block_size: u64,
    /// CONFIG `zicboz_block_size` (0 when the vCPU lacks Zicboz).
    pub zicboz_block_size: u64,
}

impl VcpuIsa {
    /// The single letters, in canonical order (i m a f d q c b v h), that `base` sets.
    pub fn letters(&self) -> String {
        "imafdqcbvh"
            .chars()
            .filter(|c| self.base & (1 << (*c as u64 - 'a' as u64)) != 0)
            .collect()
    }

    /// The `riscv,isa` string: `rv64` + letters + `_`-joined multi-letter extensions.
    pub fn isa_string(&self) -> String {
        let mut s = format!("rv64{}", self.letters());
        for ext in &self.extensions {
            s.push('_');
            s.push_str(ext);
        }
        s
    }

    /// The `riscv,isa-extensions` list: every letter, then every multi-letter extension.
    pub fn isa_extensions(&self) -> Vec<String> {
        self.letters()
            .chars()
            .map(String::from)
            .chain(self.extensions.iter().map(|e| e.to_string()))
            .collect()
    }

    /// The device tree `mmu-type` for `satp_mode`.
    pub fn mmu_type(&self) -> &'static str {
        match self.satp_mode {
            10 => "riscv,sv57",
            9 => "riscv,sv48",
            _ => "riscv,sv39",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_the_kernel_uapi() {
        assert_eq!(PC, 0x8030_0000_0200_0000);
        assert_eq!(a(0), 0x8030_0000_0200_000a);
        assert_eq!(a(1), 0x8030_0000_0200_000b);
        assert_eq!(a(7), 0x8030_0000_0200_0011);
        assert_eq!(CONFIG_ISA, 0x8030_0000_0100_0000);
        assert_eq!(CONFIG_SATP_MODE, 0x8030_0000_0100_0006);
        assert_eq!(TIMER_FREQUENCY, 0x8030_0000_0400_0000);
        assert_eq!(CSR_SSTATEEN0, 0x8030_0000_0302_0000);
        assert_eq!(isa_ext(8), 0x8030_0000_0700_0008);
        assert_eq!(sbi_ext(SBI_EXT_DBCN), 0x8030_0000_0800_0009);
    }

    #[test]
    fn isa_string_is_canonical() {
        let bit = |c: char| 1u64 << (c as u64 - 'a' as u64);
        let isa = VcpuIsa {
            base: bit('i') | bit('m') | bit('a') | bit('f') | bit('d') | bit('c') | bit('h'),
            extensions: vec!["zicsr", "zifencei", "sstc"],
            satp_mode: 10,
            ..Default::default()
        };
        assert_eq!(isa.isa_string(), "rv64imafdch_zicsr_zifencei_sstc");
        assert_eq!(
            isa.isa_extensions()[..2],
            ["i".to_string(), "m".to_string()]
        );
        assert_eq!(isa.mmu_type(), "riscv,sv57");
        assert_eq!(VcpuIsa::default().mmu_type(), "riscv,sv39");
    }

    #[test]
    fn isa_ext_table_has_unique_ids() {
        assert_eq!(isa_ext_id("v"), Some(15));
        assert_eq!(isa_ext_id("zbb"), Some(13));
        assert_eq!(sbi_ext_id("dbcn"), Some(9));
        assert_eq!(isa_ext_id("q"), None);
        let mut ids: Vec<u64> = ISA_EXTS
            .iter()
            .chain(ISA_LETTERS)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ISA_EXTS.len() + ISA_LETTERS.len());
    }
}
