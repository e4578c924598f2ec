//! A user's device tree (usually dumped from QEMU: `-M virt,dumpdtb=virt.dtb`) patched to the
//! machine rvvmm really builds.
//!
//! QEMU's tree describes QEMU's CPU and board. A KVM vCPU may lack what it lists (`h`, `sv57`,
//! `zicbop`, ...) and a guest that trusts those dies of illegal instructions, so rvvmm rewrites:
//! /memory, /chosen (bootargs, initrd, stdout-path), the cpus (count, `riscv,isa`,
//! `riscv,isa-extensions`, `mmu-type`, cache-block sizes, `timebase-frequency`, all from KVM),
//! and disables every device it does not emulate. The file on disk is never changed.

use super::tree::{Node, Tree};
use super::{FdtConfig, FdtError, BOOT_COUNT, UART_PATH};
use crate::arch::riscv64::layout::{
    APLIC_BASE, FINISHER_BASE, IMSIC_BASE, IMSIC_STRIDE, PLIC_BASE, RAM_BASE, UART_BASE,
};
use crate::interrupts::IrqMode;

/// The interrupt controller nodes of each kind of machine, by `compatible` and base.
const PLIC_NODES: &[(&str, Option<u64>)] = &[
    ("sifive,plic-1.0.0", Some(PLIC_BASE)),
    ("riscv,plic0", Some(PLIC_BASE)),
];
/// KVM's AIA is the supervisor level: QEMU's M-level APLIC and IMSICs stay disabled.
const AIA_NODES: &[(&str, Option<u64>)] = &[
    ("riscv,aplic", Some(APLIC_BASE)),
    ("riscv,imsics", Some(IMSIC_BASE)),
];

/// Which interrupt controller a user tree describes: the AIA (an S-level APLIC at QEMU's
/// address), else the PLIC.
pub fn describes_aia(tree: &Tree) -> bool {
    tree.root
        .any(&|n| n.is_compatible("riscv,aplic") && reg_base(n) == Some(APLIC_BASE))
}

/// `compatible` strings of what rvvmm emulates (or KVM provides), by base address where the
/// address matters.
const EMULATED: &[(&str, Option<u64>)] = &[
    ("ns16550a", Some(UART_BASE)),
    ("sifive,test0", Some(FINISHER_BASE)),
    ("syscon-poweroff", None),
    ("syscon-reboot", None),
    ("riscv,cpu-intc", None),
    // SBI PMU: KVM implements it in the kernel.
    ("riscv,pmu", None),
];

/// Top-level nodes that are not devices.
const NOT_DEVICES: &[&str] = &["cpus", "memory", "chosen", "aliases", "reserved-memory"];

/// Patches `tree` for `config`. Returns the paths of the devices it disabled.
pub fn patch_fdt(tree: &mut Tree, config: &FdtConfig) -> Result<Vec<String>, FdtError> {
    patch_memory(tree, config.ram_size);
    patch_chosen(tree, config);
    patch_cpus(tree, config)?;
    if let IrqMode::Aia {
        num_ids,
        num_sources,
    } = config.irqchip
    {
        tree.root.for_each_mut(&mut |node| {
            if node.is_compatible("riscv,aplic") && reg_base(node) == Some(APLIC_BASE) {
                // The sources KVM's APLIC has (QEMU's has 96, KVM's as many as rvvmm asked).
                node.set_u32("riscv,num-sources", num_sources);
            }
            if node.is_compatible("riscv,imsics") && reg_base(node) == Some(IMSIC_BASE) {
                // KVM's layout, not QEMU's: one 4 KiB file a hart, no guest files between
                // them (QEMU's `aia-guests=N` spaces them 2^guest-index-bits pages apart, and
                // a guest trusting that sends hart 1's IPIs where KVM has no file), no groups.
                node.set_u32("riscv,num-ids", num_ids);
                node.set_u64s(
                    "reg",
                    &[IMSIC_BASE, IMSIC_STRIDE * u64::from(config.num_cpus)],
                );
                for prop in [
                    "riscv,guest-index-bits",
                    "riscv,hart-index-bits",
                    "riscv,group-index-bits",
                    "riscv,group-index-shift",
                ] {
                    node.remove_prop(prop);
                }
            }
        });
    }
    Ok(disable_unemulated(&mut tree.root, config))
}

/// RAM size a user tree describes at [`RAM_BASE`] (the first /memory node's first range).
pub fn memory_size(tree: &Tree) -> Option<u64> {
    let cells = tree.root.prop_u32("#address-cells").unwrap_or(2);
    let size_cells = tree.root.prop_u32("#size-cells").unwrap_or(1);
    let node = tree
        .root
        .children
        .iter()
        .find(|n| n.prop_str("device_type") == Some("memory"))?;
    let reg = node.prop_u32s("reg");
    let take = |cells: &[u32]| {
        cells
            .iter()
            .fold(0u64, |acc, c| (acc << 32) | u64::from(*c))
    };
    let (a, s) = (cells as usize, size_cells as usize);
    if reg.len() < a + s || a > 2 || s > 2 {
        return None;
    }
    (take(&reg[..a]) == RAM_BASE).then(|| take(&reg[a..a + s]))
}

/// How many harts the tree describes: the `/cpus` children whose `device_type` is "cpu" and
/// that are not disabled (QEMU's `-smp N` dtb has N). `None` when it describes none.
pub fn cpu_count(tree: &Tree) -> Option<u32> {
    let cpus = tree.node("/cpus")?;
    let n = cpus
        .children
        .iter()
        .filter(|n| n.prop_str("device_type") == Some("cpu"))
        .filter(|n| !matches!(n.prop_str("status"), Some("disabled" | "fail")))
        .count();
    (n > 0).then(|| u32::try_from(n).unwrap_or(u32::MAX))
}

fn patch_memory(tree: &mut Tree, ram_size: u64) {
    tree.root
        .children
        .retain(|n| n.prop_str("device_type") != Some("memory"));
    let mut memory = Node::new(&format!("memory@{RAM_BASE:x}"));
    memory.set_str("device_type", "memory");
    memory.set_u64s("reg", &[RAM_BASE, ram_size]);
    let at = tree
        .root
        .children
        .iter()
        .position(|n| n.name == "cpus")
        .unwrap_or(0);
    tree.root.children.insert(at, memory);
}

fn patch_chosen(tree: &mut Tree, config: &FdtConfig) {
    let has_uart = tree.node(UART_PATH).is_some();
    let chosen = tree.root.child_or_insert("chosen");
    if let Some(cmdline) = &config.cmdline {
        chosen.set_str("bootargs", cmdline);
    }
    match config.initrd {
        Some((start, end)) => {
            chosen.set_u64s("linux,initrd-start", &[start]);
            chosen.set_u64s("linux,initrd-end", &[end]);
        }
        None => {
            chosen.remove_prop("linux,initrd-start");
            chosen.remove_prop("linux,initrd-end");
        }
    }
    if has_uart {
        chosen.set_str("stdout-path", UART_PATH);
    }
    chosen.set_u32(BOOT_COUNT, config.boot_count);
}

fn is_cpu(n: &Node) -> bool {
    n.prop_str("device_type") == Some("cpu")
}

fn patch_cpus(tree: &mut Tree, config: &FdtConfig) -> Result<(), FdtError> {
    // Phandles are 1..=0xffff_fffe (0 and 0xffff_ffff mean none); a dtb may use the highest.
    let mut last_phandle = tree.root.max_phandle();
    let mut fresh_phandle = || {
        last_phandle = last_phandle
            .checked_add(1)
            .filter(|p| *p < u32::MAX)
            .ok_or_else(|| {
                FdtError::Unusable(format!(
                    "uses phandle {last_phandle:#x}: none is left for the harts rvvmm must add"
                ))
            })?;
        Ok::<u32, FdtError>(last_phandle)
    };
    let cpus = tree
        .root
        .child_mut("cpus")
        .ok_or_else(|| FdtError::Unusable("has no /cpus node".into()))?;
    let template = cpus
        .children
        .iter()
        .find(|n| is_cpu(n))
        .cloned()
        .ok_or_else(|| FdtError::Unusable("has no cpu node under /cpus".into()))?;
    cpus.set_u32("timebase-frequency", config.isa.timebase_frequency as u32);

    // Harts the tree lacks are copies of its first cpu, with fresh phandles.
    let present: Vec<u32> = cpus
        .children
        .iter()
        .filter(|n| is_cpu(n))
        .filter_map(|n| n.prop_u32("reg"))
        .collect();
    for hart in (0..config.num_cpus).filter(|h| !present.contains(h)) {
        let mut cpu = template.clone();
        cpu.name = format!("cpu@{hart:x}");
        cpu.set_u32("reg", hart);
        if cpu.prop("phandle").is_some() {
            cpu.set_u32("phandle", fresh_phandle()?);
        }
        for intc in &mut cpu.children {
            if intc.prop("phandle").is_some() {
                intc.set_u32("phandle", fresh_phandle()?);
            }
        }
        log::warn!(
            "the dtb has no cpu with hart ID {hart}; added one (no interrupt controller routes to it)"
        );
        cpus.children.push(cpu);
    }

    let isa = &config.isa;
    for cpu in cpus.children.iter_mut().filter(|n| is_cpu(n)) {
        let hart = cpu.prop_u32("reg").unwrap_or(u32::MAX);
        if hart >= config.num_cpus {
            cpu.set_str("status", "disabled");
            continue;
        }
        cpu.set_str("status", "okay");
        cpu.set_str("riscv,isa", &isa.isa_string());
        cpu.set_str("riscv,isa-base", "rv64i");
        cpu.set_strs("riscv,isa-extensions", &isa.isa_extensions());
        cpu.set_str("mmu-type", isa.mmu_type());
        cpu.remove_prop("riscv,cbop-block-size");
        for (prop, size) in [
            ("riscv,cbom-block-size", isa.zicbom_block_size),
            ("riscv,cboz-block-size", isa.zicboz_block_size),
        ] {
            if size == 0 {
                cpu.remove_prop(prop);
            } else {
                cpu.set_u32(prop, size as u32);
            }
        }
    }
    Ok(())
}

/// The base address in a node's `reg` (assuming the 2-cell addresses of QEMU virt's buses).
fn reg_base(node: &Node) -> Option<u64> {
    let reg = node.prop_u32s("reg");
    (reg.len() >= 2).then(|| (u64::from(reg[0]) << 32) | u64::from(reg[1]))
}

fn emulated(node: &Node, config: &FdtConfig) -> bool {
    if node.is_compatible("virtio,mmio") {
        return reg_base(node).is_some_and(|b| config.virtio.iter().any(|(base, _)| *base == b));
    }
    let irqchip = match config.irqchip {
        IrqMode::Plic => PLIC_NODES,
        IrqMode::Aia { .. } => AIA_NODES,
    };
    EMULATED.iter().chain(irqchip).any(|(compat, base)| {
        node.is_compatible(compat) && base.is_none_or(|b| reg_base(node) == Some(b))
    })
}

/// How many disabled devices are named; the rest are counted (a hostile dtb could hold
/// thousands, with long names).
const MAX_NAMED: usize = 32;

/// Sets `status = "disabled"` on every device node rvvmm does not emulate; returns their paths
/// (the first [`MAX_NAMED`], then "and N more").
fn disable_unemulated(root: &mut Node, config: &FdtConfig) -> Vec<String> {
    let mut disabled = Vec::new();
    let mut more = 0;
    // One path buffer, grown and cut as the walk goes down and up.
    let mut path = String::new();
    for child in root.children.iter_mut() {
        if NOT_DEVICES.contains(&child.base_name()) {
            continue;
        }
        visit(child, &mut path, config, &mut disabled, &mut more);
    }
    if more > 0 {
        disabled.push(format!("and {more} more"));
    }
    disabled
}

fn visit(
    node: &mut Node,
    path: &mut String,
    config: &FdtConfig,
    disabled: &mut Vec<String>,
    more: &mut usize,
) {
    if node.prop("compatible").is_none() {
        return;
    }
    let parent_len = path.len();
    path.push('/');
    path.push_str(&node.name);
    if node.is_compatible("simple-bus") {
        for child in node.children.iter_mut() {
            visit(child, path, config, disabled, more);
        }
    } else if !emulated(node, config) && node.prop_str("status") != Some("disabled") {
        node.set_str("status", "disabled");
        if disabled.len() < MAX_NAMED {
            disabled.push(path.clone());
        } else {
            *more += 1;
        }
    }
    path.truncate(parent_len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::riscv64::regs::VcpuIsa;

    const QEMU_DTB: &[u8] = include_bytes!("../../../../tests/data/qemu-virt-smp2.dtb");

    fn config(num_cpus: u32) -> FdtConfig {
        FdtConfig {
            irqchip: IrqMode::Plic,
            num_cpus,
            isa: VcpuIsa {
                base: 0x112d,
                extensions: vec!["zicsr", "zicbom", "sstc"],
                satp_mode: 8,
                timebase_frequency: 10_000_000,
                zicbom_block_size: 64,
                zicboz_block_size: 0,
            },
            ram_size: 512 << 20,
            cmdline: Some("console=ttyS0 rdinit=/init".into()),
            initrd: Some((0x9000_0000, 0x9010_0000)),
            testdev: false,
            virtio: vec![(0x1000_8000, 8)],
            boot_count: 2,
        }
    }

    #[test]
    fn qemu_dtb_is_patched_to_the_kvm_vcpu() {
        let mut tree = Tree::parse(QEMU_DTB).unwrap();
        assert_eq!(memory_size(&tree), Some(2 << 30));
        assert_eq!(cpu_count(&tree), Some(2));
        let disabled = patch_fdt(&mut tree, &config(2)).unwrap();
        let tree = Tree::parse(&tree.to_blob().unwrap()).unwrap();

        assert_eq!(memory_size(&tree), Some(512 << 20));
        let cpu = tree.node("/cpus/cpu@1").unwrap();
        assert_eq!(
            cpu.prop_str("riscv,isa"),
            Some("rv64imafdc_zicsr_zicbom_sstc")
        );
        assert!(!cpu.prop_strs("riscv,isa-extensions").contains(&"h"));
        assert_eq!(cpu.prop_str("mmu-type"), Some("riscv,sv39"));
        assert_eq!(cpu.prop_u32("riscv,cbom-block-size"), Some(64));
        assert!(cpu.prop("riscv,cboz-block-size").is_none());
        assert!(cpu.prop("riscv,cbop-block-size").is_none());
        let chosen = tree.node("/chosen").unwrap();
        assert_eq!(
            chosen.prop_str("bootargs"),
            Some("console=ttyS0 rdinit=/init")
        );
        assert_eq!(
            chosen.prop("linux,initrd-end").unwrap(),
            0x9010_0000u64.to_be_bytes()
        );
        assert_eq!(chosen.prop_str("stdout-path"), Some(UART_PATH));
        assert_eq!(chosen.prop_u32(BOOT_COUNT), Some(2));

        for path in [
            "/fw-cfg@10100000",
            "/flash@20000000",
            "/soc/rtc@101000",
            "/soc/pci@30000000",
            "/soc/clint@2000000",
            "/soc/virtio_mmio@10001000",
        ] {
            assert!(
                disabled.iter().any(|d| d == path),
                "{path} not in {disabled:?}"
            );
            assert_eq!(
                tree.node(path).unwrap().prop_str("status"),
                Some("disabled"),
                "{path}"
            );
        }
        for path in [
            "/soc/serial@10000000",
            "/soc/plic@c000000",
            "/soc/test@100000",
            "/poweroff",
            "/reboot",
            "/pmu",
        ] {
            assert!(
                tree.node(path).unwrap().prop_str("status").is_none(),
                "{path} was disabled"
            );
        }
    }

    #[test]
    fn cpus_follow_the_vcpu_count() {
        let mut one = Tree::parse(QEMU_DTB).unwrap();
        patch_fdt(&mut one, &config(1)).unwrap();
        assert_eq!(
            one.node("/cpus/cpu@1").unwrap().prop_str("status"),
            Some("disabled")
        );
        assert_eq!(
            one.node("/cpus/cpu@0").unwrap().prop_str("status"),
            Some("okay")
        );

        let mut four = Tree::parse(QEMU_DTB).unwrap();
        let before = four.root.max_phandle();
        patch_fdt(&mut four, &config(4)).unwrap();
        let cpu3 = four.node("/cpus/cpu@3").unwrap();
        assert_eq!(cpu3.prop_u32("reg"), Some(3));
        assert!(cpu3.prop_u32("phandle").unwrap() > before);
        assert_eq!(Tree::parse(&four.to_blob().unwrap()).unwrap(), four);
    }

    #[test]
    fn a_dtb_using_the_last_phandle_gets_an_error_not_an_overflow() {
        let mut tree = Tree::parse(QEMU_DTB).unwrap();
        tree.root
            .child_mut("cpus")
            .unwrap()
            .set_u32("phandle", 0xffff_fffe);
        let e = patch_fdt(&mut tree, &config(4)).unwrap_err();
        assert!(e.to_string().contains("uses phandle 0xfffffffe"), "{e}");
        // With harts to spare, nothing needs a new phandle.
        let mut tree = Tree::parse(QEMU_DTB).unwrap();
        tree.root
            .child_mut("cpus")
            .unwrap()
            .set_u32("phandle", 0xffff_fffe);
        patch_fdt(&mut tree, &config(2)).unwrap();
    }

    #[test]
    fn an_aia_dtb_keeps_its_supervisor_aplic_and_imsics() {
        let aia = include_bytes!("../../../../tests/data/qemu-virt-aia-smp2.dtb");
        let mut tree = Tree::parse(aia).unwrap();
        assert!(describes_aia(&tree));
        assert!(!describes_aia(&Tree::parse(QEMU_DTB).unwrap()));
        let mut cfg = config(2);
        cfg.irqchip = IrqMode::Aia {
            num_ids: 127,
            num_sources: 95,
        };
        let disabled = patch_fdt(&mut tree, &cfg).unwrap();
        assert_eq!(
            tree.node("/soc/interrupt-controller@d000000")
                .unwrap()
                .prop_str("status"),
            None
        );
        let imsic = tree.node("/soc/interrupt-controller@28000000").unwrap();
        assert_eq!(imsic.prop_u32("riscv,num-ids"), Some(127));
        // QEMU's file was made with aia-guests=4: 32 KiB a hart. KVM's files are 4 KiB apart.
        assert_eq!(imsic.prop_u32s("reg"), [0, 0x2800_0000, 0, 0x2000]);
        assert_eq!(imsic.prop("riscv,guest-index-bits"), None);
        assert!(
            disabled
                .iter()
                .any(|d| d == "/soc/interrupt-controller@c000000"),
            "{disabled:?}"
        );
        assert!(
            disabled
                .iter()
                .any(|d| d == "/soc/interrupt-controller@24000000"),
            "{disabled:?}"
        );
        assert_eq!(
            tree.node("/soc/serial@10000000")
                .unwrap()
                .prop_u32s("interrupts"),
            [10, 4]
        );
    }

    #[test]
    fn a_dtb_without_cpus_is_refused() {
        let mut tree = Tree::parse(QEMU_DTB).unwrap();
        tree.root.children.retain(|c| c.name != "cpus");
        assert!(matches!(
            patch_fdt(&mut tree, &config(1)),
            Err(FdtError::Unusable(_))
        ));
    }

    #[test]
    fn no_cmdline_keeps_the_dtbs_own() {
        let mut tree = Tree::parse(QEMU_DTB).unwrap();
        tree.root
            .child_or_insert("chosen")
            .set_str("bootargs", "from the dtb");
        let mut cfg = config(2);
        cfg.cmdline = None;
        cfg.initrd = None;
        patch_fdt(&mut tree, &cfg).unwrap();
        let chosen = tree.node("/chosen").unwrap();
        assert_eq!(chosen.prop_str("bootargs"), Some("from the dtb"));
        assert!(chosen.prop("linux,initrd-start").is_none());
    }
}
