//! Device trees: the one rvvmm generates (exactly the machine it builds, on QEMU virt's
//! addresses), and a user's, patched to that machine ([`patch`]).
//! One `create_*_node` function per node, as Cloud Hypervisor's `arch/src/riscv64/fdt.rs` does.

pub mod patch;
pub mod tree;

use vm_fdt::{FdtWriter, FdtWriterResult};

use super::layout::{
    APLIC_BASE, APLIC_SIZE, FDT_MAX_SIZE, FINISHER_BASE, FINISHER_SIZE, IMSIC_BASE, IMSIC_STRIDE,
    PLIC_BASE, PLIC_NDEV, PLIC_SIZE, RAM_BASE, TESTDEV_BASE, TESTDEV_SIZE, UART_BASE, UART_IRQ,
    UART_SIZE, VIRTIO_SIZE,
};
use super::regs::VcpuIsa;
use crate::interrupts::IrqMode;

/// Phandle of hart N's interrupt controller is `CPU_INTC_PHANDLE_BASE + N`.
const CPU_INTC_PHANDLE_BASE: u32 = 1;
/// Phandle of the finisher's syscon (after 32 harts' controllers).
const FINISHER_PHANDLE: u32 = 64;
/// Phandle of the PLIC.
const PLIC_PHANDLE: u32 = 65;
/// Phandle of the IMSICs.
const IMSIC_PHANDLE: u32 = 66;
/// Phandle of the APLIC.
const APLIC_PHANDLE: u32 = 67;
/// Two-cell APLIC interrupt specifier flag: rising edge, a virtio device's source on the AIA
/// (rvvmm pulses the line, as kvmtool does: see [`crate::interrupts`]). A level source costs
/// the guest an APLIC write (an exit) at every EOI, where Linux re-pends a still-high level.
pub const IRQ_TYPE_EDGE_RISING: u32 = 1;
/// Two-cell APLIC interrupt specifier flag: level-high, the UART's (its line follows its IIR).
pub const IRQ_TYPE_LEVEL_HIGH: u32 = 4;
/// `interrupts-extended` cause of a hart's M-mode external interrupt (unused under KVM).
const IRQ_M_EXT: u32 = 11;
/// `interrupts-extended` cause of a hart's S-mode external interrupt.
const IRQ_S_EXT: u32 = 9;

/// Errors building a device tree.
#[derive(Debug, thiserror::Error)]
pub enum FdtError {
    /// vm-fdt refused a node or property.
    #[error("cannot build the device tree: {0}")]
    Write(#[from] vm_fdt::Error),
    /// The result is larger than the room reserved for it.
    #[error("the device tree is {0} bytes, more than the {FDT_MAX_SIZE} bytes rvvmm reserves")]
    TooLarge(usize),
    /// A user dtb that cannot describe this machine.
    #[error("the dtb {0}")]
    Unusable(String),
}

/// What the device tree describes.
#[derive(Debug, Clone)]
pub struct FdtConfig {
    /// The interrupt controller.
    pub irqchip: IrqMode,
    /// Number of harts (hart IDs 0..n).
    pub num_cpus: u32,
    /// What each vCPU offers (read from KVM).
    pub isa: VcpuIsa,
    /// Bytes of RAM at [`RAM_BASE`].
    pub ram_size: u64,
    /// Kernel command line, if any.
    pub cmdline: Option<String>,
    /// Initial ramdisk: [start, end) guest-physical.
    pub initrd: Option<(u64, u64)>,
    /// Whether the MMIO test device is present.
    pub testdev: bool,
    /// virtio-mmio slots in use: (base, interrupt).
    pub virtio: Vec<(u64, u32)>,
    /// Which boot of this VM this is (1, then 2 after a reboot...), in /chosen/rvvmm,boot-count.
    pub boot_count: u32,
}

/// The /chosen property that tells the guest which boot this is.
pub const BOOT_COUNT: &str = "rvvmm,boot-count";

/// Path of the UART node in the generated tree (and what `stdout-path` names).
pub const UART_PATH: &str = "/soc/serial@10000000";

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
    log::debug!("generated a {}-byte device tree", blob.len());
    with_room(blob)
}

/// The blob as the guest gets it: its totalsize grown to all the room reserved for it
/// ([`FDT_MAX_SIZE`]), the rest zero, as kvmtool does. Bootloaders edit the tree they are given
/// in place: U-Boot keeps a copy in room sized from totalsize and adds bootargs, initrd and
/// boot-hartid properties to it before it starts Linux; with a packed tree (13 bytes to spare)
/// it wrote over its own data, and its extlinux boot hung after "No RNG device" walking a list
/// the tree had overwritten.
pub fn with_room(mut blob: Vec<u8>) -> Result<Vec<u8>, FdtError> {
    check_size(&blob)?;
    blob.resize(FDT_MAX_SIZE as usize, 0);
    blob[4..8].copy_from_slice(&(FDT_MAX_SIZE as u32).to_be_bytes());
    Ok(blob)
}

/// Fails if `blob` does not fit the room reserved for the device tree.
pub fn check_size(blob: &[u8]) -> Result<(), FdtError> {
    if blob.len() as u64 > FDT_MAX_SIZE {
        return Err(FdtError::TooLarge(blob.len()));
    }
    Ok(())
}

fn create_chosen_node(fdt: &mut FdtWriter, config: &FdtConfig) -> FdtWriterResult<()> {
    let chosen = fdt.begin_node("chosen")?;
    if let Some(cmdline) = &config.cmdline {
        fdt.property_string("bootargs", cmdline)?;
    }
    if let Some((start, end)) = config.initrd {
        fdt.property_u64("linux,initrd-start", start)?;
        fdt.property_u64("linux,initrd-end", end)?;
    }
    fdt.property_string("stdout-path", UART_PATH)?;
    fdt.property_u32(BOOT_COUNT, config.boot_count)?;
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
    let irq_parent = match config.irqchip {
        IrqMode::Plic => {
            create_plic_node(fdt, config.num_cpus)?;
            PLIC_PHANDLE
        }
        IrqMode::Aia {
            num_ids,
            num_sources,
        } => {
            create_aia_nodes(fdt, config.num_cpus, num_ids, num_sources)?;
            APLIC_PHANDLE
        }
    };
    let irq_cells = |irq: u32, flags: u32| -> Vec<u32> {
        match config.irqchip {
            IrqMode::Plic => vec![irq],
            IrqMode::Aia { .. } => vec![irq, flags],
        }
    };
    create_uart_node(fdt, irq_parent, &irq_cells(UART_IRQ, IRQ_TYPE_LEVEL_HIGH))?;
    for (base, irq) in &config.virtio {
        create_virtio_node(
            fdt,
            *base,
            irq_parent,
            &irq_cells(*irq, IRQ_TYPE_EDGE_RISING),
        )?;
    }
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

/// The PLIC with QEMU virt's contexts: per hart an M-mode one (2h) and an S-mode one (2h+1).
fn create_plic_node(fdt: &mut FdtWriter, num_cpus: u32) -> FdtWriterResult<()> {
    let plic = fdt.begin_node(&format!("plic@{PLIC_BASE:x}"))?;
    fdt.property_string_list(
        "compatible",
        vec!["sifive,plic-1.0.0".into(), "riscv,plic0".into()],
    )?;
    fdt.property_array_u64("reg", &[PLIC_BASE, PLIC_SIZE])?;
    fdt.property_u32("#address-cells", 0)?;
    fdt.property_u32("#interrupt-cells", 1)?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("riscv,ndev", PLIC_NDEV)?;
    let contexts: Vec<u32> = (0..num_cpus)
        .flat_map(|h| {
            let intc = CPU_INTC_PHANDLE_BASE + h;
            [intc, IRQ_M_EXT, intc, IRQ_S_EXT]
        })
        .collect();
    fdt.property_array_u32("interrupts-extended", &contexts)?;
    fdt.property_phandle(PLIC_PHANDLE)?;
    fdt.end_node(plic)
}

/// KVM's AIA as QEMU virt's `aia=aplic-imsic` describes its supervisor level: one IMSIC file
/// per hart, and an APLIC that turns wired interrupts into MSIs to them.
fn create_aia_nodes(
    fdt: &mut FdtWriter,
    num_cpus: u32,
    num_ids: u32,
    num_sources: u32,
) -> FdtWriterResult<()> {
    let imsic = fdt.begin_node(&format!("imsics@{IMSIC_BASE:x}"))?;
    fdt.property_string("compatible", "riscv,imsics")?;
    fdt.property_array_u64("reg", &[IMSIC_BASE, IMSIC_STRIDE * u64::from(num_cpus)])?;
    fdt.property_u32("#interrupt-cells", 0)?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_null("msi-controller")?;
    fdt.property_u32("#msi-cells", 0)?;
    fdt.property_u32("riscv,num-ids", num_ids)?;
    let harts: Vec<u32> = (0..num_cpus)
        .flat_map(|h| [CPU_INTC_PHANDLE_BASE + h, IRQ_S_EXT])
        .collect();
    fdt.property_array_u32("interrupts-extended", &harts)?;
    fdt.property_phandle(IMSIC_PHANDLE)?;
    fdt.end_node(imsic)?;

    let aplic = fdt.begin_node(&format!("aplic@{APLIC_BASE:x}"))?;
    fdt.property_string("compatible", "riscv,aplic")?;
    fdt.property_array_u64("reg", &[APLIC_BASE, APLIC_SIZE])?;
    fdt.property_u32("#address-cells", 0)?;
    fdt.property_u32("#interrupt-cells", 2)?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("msi-parent", IMSIC_PHANDLE)?;
    fdt.property_u32("riscv,num-sources", num_sources)?;
    fdt.property_phandle(APLIC_PHANDLE)?;
    fdt.end_node(aplic)
}

fn create_virtio_node(
    fdt: &mut FdtWriter,
    base: u64,
    parent: u32,
    irq: &[u32],
) -> FdtWriterResult<()> {
    let node = fdt.begin_node(&format!("virtio_mmio@{base:x}"))?;
    fdt.property_string("compatible", "virtio,mmio")?;
    fdt.property_array_u64("reg", &[base, VIRTIO_SIZE])?;
    fdt.property_array_u32("interrupts", irq)?;
    fdt.property_u32("interrupt-parent", parent)?;
    fdt.property_null("dma-coherent")?;
    fdt.end_node(node)
}

fn create_uart_node(fdt: &mut FdtWriter, parent: u32, irq: &[u32]) -> FdtWriterResult<()> {
    let uart = fdt.begin_node(&format!("serial@{UART_BASE:x}"))?;
    fdt.property_string("compatible", "ns16550a")?;
    fdt.property_array_u64("reg", &[UART_BASE, UART_SIZE])?;
    fdt.property_u32("clock-frequency", 0x38_4000)?;
    fdt.property_array_u32("interrupts", irq)?;
    fdt.property_u32("interrupt-parent", parent)?;
    fdt.end_node(uart)
}

#[cfg(test)]
mod tests {
    use super::tree::Tree;
    use super::*;

    #[test]
    fn the_blob_has_room_to_grow_in_place() {
        let blob = create_fdt(&config(1)).unwrap();
        assert_eq!(blob.len() as u64, FDT_MAX_SIZE);
        assert_eq!(
            u32::from_be_bytes(blob[4..8].try_into().unwrap()) as u64,
            FDT_MAX_SIZE
        );
        // The content is packed at the start; the rest is free space a bootloader may use.
        let tree = Tree::parse(&blob).unwrap();
        assert!(tree.to_blob().unwrap().len() < 4096);
        assert!(matches!(
            with_room(vec![0u8; FDT_MAX_SIZE as usize + 1]),
            Err(FdtError::TooLarge(_))
        ));
    }

    pub(crate) fn config(num_cpus: u32) -> FdtConfig {
        FdtConfig {
            irqchip: IrqMode::Plic,
            num_cpus,
            isa: VcpuIsa {
                base: 0x112d, // imafdc
                extensions: vec!["zicsr", "sstc"],
                satp_mode: 9,
                timebase_frequency: 10_000_000,
                ..Default::default()
            },
            ram_size: 128 << 20,
            cmdline: Some("console=ttyS0".into()),
            initrd: Some((0x8600_0000, 0x8680_0000)),
            testdev: true,
            virtio: vec![(0x1000_1000, 1), (0x1000_2000, 2)],
            boot_count: 1,
        }
    }

    #[test]
    fn generated_fdt_describes_the_machine() {
        let blob = create_fdt(&config(2)).unwrap();
        let tree = Tree::parse(&blob).unwrap();
        let names: Vec<&str> = tree.root.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["chosen", "memory@80000000", "cpus", "soc"]);
        let chosen = tree.node("/chosen").unwrap();
        assert_eq!(chosen.prop_str("bootargs"), Some("console=ttyS0"));
        assert_eq!(chosen.prop_str("stdout-path"), Some(UART_PATH));
        assert_eq!(chosen.prop_u32(BOOT_COUNT), Some(1));
        assert_eq!(
            chosen.prop("linux,initrd-start").unwrap(),
            0x8600_0000u64.to_be_bytes()
        );
        let cpu1 = tree.node("/cpus/cpu@1").unwrap();
        assert_eq!(cpu1.prop_str("riscv,isa"), Some("rv64imafdc_zicsr_sstc"));
        assert_eq!(cpu1.prop_str("mmu-type"), Some("riscv,sv48"));
        assert_eq!(
            tree.node("/cpus").unwrap().prop_u32("timebase-frequency"),
            Some(10_000_000)
        );
        let plic = tree.node("/soc/plic@c000000").unwrap();
        assert_eq!(
            plic.prop_u32s("interrupts-extended"),
            [1, 11, 1, 9, 2, 11, 2, 9]
        );
        let uart = tree.node(UART_PATH).unwrap();
        assert_eq!(uart.prop_u32("interrupt-parent"), plic.prop_u32("phandle"));
        assert!(tree.node("/soc/testdev@10080000").is_some());
        let vio = tree.node("/soc/virtio_mmio@10002000").unwrap();
        assert_eq!(vio.prop_u32("interrupts"), Some(2));
        assert!(vio.is_compatible("virtio,mmio"));
        assert!(Tree::parse(&create_fdt(&config(1)).unwrap())
            .unwrap()
            .node("/cpus/cpu@1")
            .is_none());
    }

    #[test]
    fn aia_machines_describe_aplic_and_imsics() {
        let mut cfg = config(2);
        cfg.irqchip = IrqMode::Aia {
            num_ids: 255,
            num_sources: 95,
        };
        let tree = Tree::parse(&create_fdt(&cfg).unwrap()).unwrap();
        assert!(tree.node("/soc/plic@c000000").is_none());
        let imsic = tree.node("/soc/imsics@28000000").unwrap();
        assert_eq!(imsic.prop_u32s("interrupts-extended"), [1, 9, 2, 9]);
        assert_eq!(imsic.prop_u32("riscv,num-ids"), Some(255));
        let aplic = tree.node("/soc/aplic@d000000").unwrap();
        assert_eq!(aplic.prop_u32("msi-parent"), imsic.prop_u32("phandle"));
        let uart = tree.node(UART_PATH).unwrap();
        assert_eq!(uart.prop_u32("interrupt-parent"), aplic.prop_u32("phandle"));
        assert_eq!(uart.prop_u32s("interrupts"), [10, 4]);
        assert_eq!(
            tree.node("/soc/virtio_mmio@10001000")
                .unwrap()
                .prop_u32s("interrupts"),
            [1, IRQ_TYPE_EDGE_RISING],
            "a virtio line is pulsed"
        );
    }

    #[test]
    fn thirty_two_harts_fit() {
        let tree = Tree::parse(&create_fdt(&config(32)).unwrap()).unwrap();
        assert!(tree.node("/cpus/cpu@1f").is_some());
    }
}
