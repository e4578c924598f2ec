//! The device tree rvvmm generates: exactly the machine it builds, on QEMU virt's addresses.
//! One `create_*_node` function per node, as Cloud Hypervisor's `arch/src/riscv64/fdt.rs` does.

use vm_fdt::{FdtWriter, FdtWriterResult};

use super::layout::{
    FDT_MAX_SIZE, FINISHER_BASE, FINISHER_SIZE, RAM_BASE, TESTDEV_BASE, TESTDEV_SIZE,
};
use super::regs::VcpuIsa;

/// Phandle of hart N's interrupt controller is `CPU_INTC_PHANDLE_BASE + N`.
const CPU_INTC_PHANDLE_BASE: u32 = 1;
/// Phandle of the finisher's syscon (after 32 harts' controllers).
const FINISHER_PHANDLE: u32 = 64;

/// Errors building a device tree.
#[derive(Debug, thiserror::Error)]
pub enum FdtError {
    /// vm-fdt refused a node or property.
    #[error("cannot build the device tree: {0}")]
    Write(#[from] vm_fdt::Error),
    /// The result is larger than the room reserved for it.
    #[error("the device tree is {0} bytes, more than the {FDT_MAX_SIZE} bytes rvvmm reserves")]
    TooLarge(usize),
}

/// What the generated device tree describes.
#[derive(Debug, Clone)]
pub struct FdtConfig {
    /// Number of harts (hart IDs 0..n).
    pub num_cpus: u32,
    /// What each vCPU offers (read from KVM).
    pub isa: VcpuIsa,
    /// Bytes of RAM at [`RAM_BASE`].
    pub ram_size: u64,
    /// Kernel command line, if any.
    pub cmdline: Option<String>,
    /// Whether the MMIO test device is present.
    pub testdev: bool,
}

/// Builds the device tree blob.
pub fn create_fdt(config: &FdtConfig) -> Result<Vec<u8>, FdtError> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_string("compatible", "riscv-virtio")?;
    fdt.property_string("model", "riscv-virtio,rvvmm")?;
    create_chosen_node(&mut fdt, config)?;
    create_memory_node(&mut fdt, config.ram_size)?;
    create_cpus_node(&mut fdt, config)?;
    create_soc_node(&mut fdt, config)?;
    fdt.end_node(root)?;
    let blob = fdt.finish()?;
    if blob.len() as u64 > FDT_MAX_SIZE {
        return Err(FdtError::TooLarge(blob.len()));
    }
    log::debug!("generated a {}-byte device tree", blob.len());
    Ok(blob)
}

fn create_chosen_node(fdt: &mut FdtWriter, config: &FdtConfig) -> FdtWriterResult<()> {
    let chosen = fdt.begin_node("chosen")?;
    if let Some(cmdline) = &config.cmdline {
        fdt.property_string("bootargs", cmdline)?;
    }
    fdt.end_node(chosen)
}

fn create_memory_node(fdt: &mut FdtWriter, ram_size: u64) -> FdtWriterResult<()> {
    let memory = fdt.begin_node(&format!("memory@{RAM_BASE:x}"))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &[RAM_BASE, ram_size])?;
    fdt.end_node(memory)
}

fn create_cpus_node(fdt: &mut FdtWriter, config: &FdtConfig) -> FdtWriterResult<()> {
    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    fdt.property_u32("timebase-frequency", config.isa.timebase_frequency as u32)?;
    for hart in 0..config.num_cpus {
        let cpu = fdt.begin_node(&format!("cpu@{hart:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_u32("reg", hart)?;
        fdt.property_string("status", "okay")?;
        fdt.property_string("compatible", "riscv")?;
        fdt.property_string("riscv,isa", &config.isa.isa_string())?;
        fdt.property_string("riscv,isa-base", "rv64i")?;
        fdt.property_string_list("riscv,isa-extensions", config.isa.isa_extensions())?;
        fdt.property_string("mmu-type", config.isa.mmu_type())?;
        if config.isa.zicbom_block_size != 0 {
            fdt.property_u32("riscv,cbom-block-size", config.isa.zicbom_block_size as u32)?;
        }
        if config.isa.zicboz_block_size != 0 {
            fdt.property_u32("riscv,cboz-block-size", config.isa.zicboz_block_size as u32)?;
        }
        let intc = fdt.begin_node("interrupt-controller")?;
        fdt.property_u32("#interrupt-cells", 1)?;
        fdt.property_null("interrupt-controller")?;
        fdt.property_string("compatible", "riscv,cpu-intc")?;
        fdt.property_phandle(CPU_INTC_PHANDLE_BASE + hart)?;
        fdt.end_node(intc)?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)
}

fn create_soc_node(fdt: &mut FdtWriter, config: &FdtConfig) -> FdtWriterResult<()> {
    let soc = fdt.begin_node("soc")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_string("compatible", "simple-bus")?;
    fdt.property_null("ranges")?;
    create_finisher_nodes(fdt)?;
    if config.testdev {
        let testdev = fdt.begin_node(&format!("testdev@{TESTDEV_BASE:x}"))?;
        fdt.property_string("compatible", "rvvmm,testdev")?;
        fdt.property_array_u64("reg", &[TESTDEV_BASE, TESTDEV_SIZE])?;
        fdt.end_node(testdev)?;
    }
    fdt.end_node(soc)
}

/// The sifive,test0 finisher as QEMU virt describes it, plus the syscon-poweroff and
/// syscon-reboot nodes through which Linux drives it.
fn create_finisher_nodes(fdt: &mut FdtWriter) -> FdtWriterResult<()> {
    let test = fdt.begin_node(&format!("test@{FINISHER_BASE:x}"))?;
    fdt.property_string_list(
        "compatible",
        vec![
            "sifive,test1".into(),
            "sifive,test0".into(),
            "syscon".into(),
        ],
    )?;
    fdt.property_array_u64("reg", &[FINISHER_BASE, FINISHER_SIZE])?;
    fdt.property_phandle(FINISHER_PHANDLE)?;
    fdt.end_node(test)?;
    for (name, value) in [("poweroff", 0x5555u32), ("reboot", 0x7777)] {
        let node = fdt.begin_node(name)?;
        fdt.property_string("compatible", &format!("syscon-{name}"))?;
        fdt.property_u32("regmap", FINISHER_PHANDLE)?;
        fdt.property_u32("offset", 0)?;
        fdt.property_u32("value", value)?;
        fdt.end_node(node)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(num_cpus: u32) -> FdtConfig {
        FdtConfig {
            num_cpus,
            isa: VcpuIsa {
                base: 0x112d, // imafdc
                extensions: vec!["zicsr", "sstc"],
                satp_mode: 9,
                timebase_frequency: 10_000_000,
                ..Default::default()
            },
            ram_size: 128 << 20,
            cmdline: Some("console=hvc0".into()),
            testdev: true,
        }
    }

    /// Finds `needle` in the blob (the strings block and struct block hold names verbatim).
    fn contains(blob: &[u8], needle: &[u8]) -> bool {
        blob.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn generated_fdt_is_valid_and_describes_the_machine() {
        let blob = create_fdt(&config(2)).unwrap();
        assert_eq!(&blob[..4], &[0xd0, 0x0d, 0xfe, 0xed]);
        let total = u32::from_be_bytes(blob[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, blob.len());
        for needle in [
            &b"cpu@0\0"[..],
            b"cpu@1\0",
            b"rv64imafdc_zicsr_sstc\0",
            b"riscv,sv48\0",
            b"memory@80000000\0",
            b"console=hvc0\0",
            b"sifive,test0\0",
            b"testdev@10100000\0",
        ] {
            assert!(
                contains(&blob, needle),
                "missing {:?}",
                String::from_utf8_lossy(needle)
            );
        }
        assert!(!contains(&create_fdt(&config(1)).unwrap(), b"cpu@1\0"));
    }

    #[test]
    fn thirty_two_harts_fit() {
        let blob = create_fdt(&config(32)).unwrap();
        assert!(contains(&blob, b"cpu@1f\0"));
    }
}
