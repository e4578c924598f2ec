//! The VM's configuration: from command-line flags (clap), validated in one place.

use std::path::PathBuf;

use clap::Parser;

use crate::arch::riscv64::layout::{RAM_MAX, RAM_MIN};
use crate::devices::virtio::net::parse_mac;
use crate::devices::virtio::tap::valid_name as valid_tap_name;

/// Most vCPUs rvvmm creates.
pub const MAX_CPUS: u32 = 32;

/// rvvmm: a minimal KVM-backed RISC-V virtual machine monitor.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "rvvmm",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Args {
    /// `rvvmm remote ...` instead of running a VM.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Kernel to boot: a RISC-V Linux Image, or a flat binary loaded and entered at 0x8000_0000.
    #[arg(long, value_name = "FILE", required = true)]
    pub kernel: Option<PathBuf>,

    /// Serve the REST API (Cloud Hypervisor's, the part rvvmm honours) on this Unix socket,
    /// made with mode 0600; drive it with `rvvmm remote` or ch-remote.
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,

    /// Device tree to patch and pass to the guest (e.g. dumped from QEMU with
    /// `-M virt,dumpdtb=virt.dtb`). Without it, rvvmm generates one.
    #[arg(long, value_name = "FILE")]
    pub dtb: Option<PathBuf>,

    /// Initial ramdisk, placed in RAM and announced in the device tree.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,

    /// Guest RAM, e.g. 512M or 2G [default: the --dtb's /memory size, else 256M].
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub memory: Option<u64>,

    /// Back guest RAM with 2 MiB huge pages (hugetlb; reserve them first with
    /// `echo N > /proc/sys/vm/nr_hugepages`): far fewer page faults in the host and in KVM's
    /// stage-2 tables. --memory must then be a multiple of 2 MiB.
    #[arg(long)]
    pub hugepages: bool,

    /// Number of vCPUs (1 to 32). Hart 0 boots; the guest starts the others with SBI HSM.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_CPUS as i64))]
    pub cpus: u32,

    /// Kernel command line, placed in the device tree's /chosen/bootargs.
    #[arg(long, value_name = "STRING", value_parser = parse_cmdline)]
    pub cmdline: Option<String>,

    /// A raw disk image as a virtio-blk device (repeatable); `,readonly` refuses guest writes.
    #[arg(long, value_name = "PATH[,readonly]", value_parser = parse_disk)]
    pub disk: Vec<DiskSpec>,

    /// A virtio-net card on Linux tap device NAME (repeatable), made with e.g.
    /// `ip tuntap add NAME mode tap` (rvvmm creates it when it may); `mac=` sets its address.
    #[arg(long, value_name = "tap=NAME[,mac=MAC]", value_parser = parse_net)]
    pub net: Vec<NetSpec>,

    /// A virtio-rng device fed from the host's getrandom(2).
    #[arg(long)]
    pub rng: bool,

    /// Where the guest's console input goes: the 16550 UART (ttyS0) or a virtio console (hvc0).
    #[arg(long, value_enum, default_value_t = ConsoleKind::Uart)]
    pub console: ConsoleKind,

    /// Interrupt controller: KVM's in-kernel AIA (APLIC + IMSICs), rvvmm's user-space PLIC, or
    /// auto (the AIA when the host has one and the --dtb, if any, describes one).
    #[arg(long, value_enum, default_value_t = IrqChipKind::Auto)]
    pub irqchip: IrqChipKind,

    /// Write the final device tree to FILE and exit, without running the guest.
    #[arg(long, value_name = "FILE")]
    pub dump_dtb: Option<PathBuf>,

    /// Map rvvmm's MMIO test device at 0x1008_0000 (for testing the VMM).
    #[arg(long)]
    pub testdev: bool,
}

/// What rvvmm does instead of running a VM.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Send one request to a running rvvmm's API (as Cloud Hypervisor's ch-remote does).
    Remote(RemoteArgs),
}

/// `rvvmm remote`.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoteArgs {
    /// The API socket of the rvvmm to drive.
    #[arg(long, value_name = "PATH")]
    pub api_socket: PathBuf,
    /// ping, info, counters, pause, resume, shutdown, reboot, power-button, boot,
    /// shutdown-vmm.
    pub command: String,
    /// A JSON body for the request.
    pub json: Option<String>,
}

/// A `--disk` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// The image file.
    pub path: PathBuf,
    /// Whether the guest may not write.
    pub readonly: bool,
}

/// Parses `PATH[,readonly]`.
pub fn parse_disk(s: &str) -> Result<DiskSpec, String> {
    let (path, opts) = match s.rsplit_once(',') {
        Some((p, o)) if o == "readonly" || o == "ro" => (p, true),
        Some((_, o)) if !o.contains('/') => {
            return Err(format!("unknown disk option '{o}' (only 'readonly')"))
        }
        _ => (s, false),
    };
    if path.is_empty() {
        return Err("a disk needs a path".into());
    }
    Ok(DiskSpec {
        path: PathBuf::from(path),
        readonly: opts,
    })
}

/// A `--net` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    /// The tap interface.
    pub tap: String,
    /// The card's MAC address (else 52:54:00:12:34:56 + the card's index).
    pub mac: Option<[u8; 6]>,
}

/// Parses `tap=NAME[,mac=aa:bb:cc:dd:ee:ff]`.
pub fn parse_net(s: &str) -> Result<NetSpec, String> {
    let (mut tap, mut mac) = (None, None);
    for opt in s.split(',') {
        match opt.split_once('=') {
            Some(("tap", name)) if valid_tap_name(name) => tap = Some(name.to_string()),
            Some(("tap", name)) => {
                return Err(format!(
                    "'{name}' is not an interface name (1 to 15 bytes, no '/', ':' or blanks)"
                ))
            }
            Some(("mac", m)) => {
                mac = Some(parse_mac(m).ok_or_else(|| {
                    format!("'{m}' is not a unicast MAC address like 52:54:00:12:34:56")
                })?)
            }
            _ => return Err(format!("unknown net option '{opt}' (tap=NAME, mac=MAC)")),
        }
    }
    let tap = tap.ok_or("a net card needs tap=NAME")?;
    Ok(NetSpec { tap, mac })
}

/// The guest console rvvmm's stdin feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ConsoleKind {
    /// The 16550 UART (Linux: console=ttyS0).
    #[default]
    Uart,
    /// A virtio console (Linux: console=hvc0).
    Virtio,
}

/// `--irqchip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum IrqChipKind {
    /// The AIA when the host has it and the dtb (if any) describes it, else the PLIC.
    #[default]
    Auto,
    /// KVM's in-kernel AIA (APLIC + IMSICs); an error where the host has none.
    Aia,
    /// rvvmm's user-space PLIC, driving each vCPU with KVM_INTERRUPT.
    Plic,
}

/// Most virtio devices: QEMU virt's eight virtio-mmio slots.
pub const MAX_VIRTIO_DEVICES: usize = 8;

/// Everything the VMM needs to build a VM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmConfig {
    /// Kernel file.
    pub kernel: PathBuf,
    /// User device tree.
    pub dtb: Option<PathBuf>,
    /// Initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Bytes of guest RAM (else the dtb's, else [`DEFAULT_MEMORY`]).
    pub memory: Option<u64>,
    /// vCPU count.
    pub cpus: u32,
    /// Whether guest RAM is in 2 MiB huge pages.
    pub hugepages: bool,
    /// Kernel command line.
    pub cmdline: Option<String>,
    /// Whether to map the test device.
    pub testdev: bool,
    /// Where to write the final device tree instead of running.
    pub dump_dtb: Option<PathBuf>,
    /// virtio-blk disks.
    pub disks: Vec<DiskSpec>,
    /// virtio-net cards.
    pub nets: Vec<NetSpec>,
    /// Whether there is a virtio-rng.
    pub rng: bool,
    /// Which console takes input.
    pub console: ConsoleKind,
    /// Which interrupt controller.
    pub irqchip: IrqChipKind,
}

/// Guest RAM when neither --memory nor a --dtb says.
pub const DEFAULT_MEMORY: u64 = 256 << 20;

/// Longest kernel command line: Linux's RISC-V COMMAND_LINE_SIZE is 1024 with the NUL.
pub const MAX_CMDLINE: usize = 1023;

impl From<Args> for VmConfig {
    fn from(args: Args) -> Self {
        VmConfig {
            kernel: args.kernel.unwrap_or_default(),
            dtb: args.dtb,
            initrd: args.initrd,
            memory: args.memory,
            cpus: args.cpus,
            hugepages: args.hugepages,
            cmdline: args.cmdline,
            testdev: args.testdev,
            dump_dtb: args.dump_dtb,
            disks: args.disk,
            nets: args.net,
            rng: args.rng,
            console: args.console,
            irqchip: args.irqchip,
        }
    }
}

/// Parses a size: a number with an optional K, M, G or T suffix (powers of 1024), or an
/// optional trailing "B"/"iB". Bounded to what rvvmm can map.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let size = parse_size(s)?;
    if size < RAM_MIN {
        return Err(format!(
            "{s} is less than the {} MiB rvvmm needs",
            RAM_MIN >> 20
        ));
    }
    if size > RAM_MAX {
        return Err(format!(
            "{s} is more than the {} GiB rvvmm can map",
            RAM_MAX >> 30
        ));
    }
    if size % 4096 != 0 {
        return Err(format!("{s} is not a multiple of 4 KiB"));
    }
    Ok(size)
}

/// Accepts a command line Linux can take whole.
pub fn parse_cmdline(s: &str) -> Result<String, String> {
    if s.len() > MAX_CMDLINE {
        return Err(format!(
            "the command line is {} bytes; Linux on RISC-V takes at most {MAX_CMDLINE}",
            s.len()
        ));
    }
    Ok(s.to_string())
}

/// Parses "512M", "2G", "2GiB", "1048576".
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        Some('T' | 't') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size (try 512M or 2G)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "M", "twelve", "1.5G", "-1M", "99999999999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_bounds() {
        assert!(parse_memory("1M").is_err());
        assert!(parse_memory("1T").is_err());
        assert!(parse_memory("4194305").is_err());
        assert_eq!(parse_memory("128M"), Ok(128 << 20));
    }

    #[test]
    fn disk_specs() {
        assert_eq!(
            parse_disk("/a/b.img").unwrap(),
            DiskSpec {
                path: "/a/b.img".into(),
                readonly: false
            }
        );
        assert_eq!(
            parse_disk("b.img,readonly").unwrap(),
            DiskSpec {
                path: "b.img".into(),
                readonly: true
            }
        );
        assert!(parse_disk("b.img,fast").is_err());
        assert!(parse_disk(",readonly").is_err());
        assert_eq!(
            parse_disk("/x,y/z.img").unwrap().path,
            PathBuf::from("/x,y/z.img")
        );
    }

    #[test]
    fn net_specs() {
        assert_eq!(
            parse_net("tap=tap0").unwrap(),
            NetSpec {
                tap: "tap0".into(),
                mac: None
            }
        );
        assert_eq!(
            parse_net("tap=t1,mac=52:54:00:aa:bb:cc").unwrap().mac,
            Some([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc])
        );
        for bad in [
            "",
            "tap0",
            "mac=52:54:00:aa:bb:cc",
            "tap=",
            "tap=a/b",
            "tap=t,mac=ff:ff:ff:ff:ff:ff",
            "tap=t,mac=1",
            "tap=t,speed=10",
        ] {
            assert!(parse_net(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cmdline_bounds() {
        assert!(parse_cmdline(&"x".repeat(MAX_CMDLINE)).is_ok());
        assert!(parse_cmdline(&"x".repeat(MAX_CMDLINE + 1)).is_err());
    }

    #[test]
    fn cpus_bounds() {
        let parse = |cpus: &str| Args::try_parse_from(["rvvmm", "--kernel", "k", "--cpus", cpus]);
        assert!(parse("0").is_err());
        assert!(parse("33").is_err());
        assert_eq!(parse("32").unwrap().cpus, 32);
        assert!(Args::try_parse_from(["rvvmm"]).is_err());
    }
}
