//! The command line (clap): the flags, and how they lay over a config file.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::json::read_file;
use super::{
    check_isa_name, check_sbi_name, parse_cmdline, parse_disk, parse_duration, parse_fs,
    parse_memory, parse_name, parse_net, parse_serial_log, parse_vsock, ConfigError, ConsoleKind,
    DiskSpec, FsSpec, IrqChipKind, NetSpec, SerialLog, Source, Sources, VmConfig, VsockSpec,
    MAX_CPUS,
};

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

    /// Kernel to boot: a RISC-V Linux Image, an ELF, or a flat binary (loaded and entered at
    /// RAM + 2 MiB, 0x8020_0000, as on QEMU virt and kvmtool; see --load-addr).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["config", "api_socket", "list_extensions", "restore"])]
    pub kernel: Option<PathBuf>,

    /// Restore the VM a snapshot holds (`rvvmm remote snapshot file:///DIR` wrote it), paused
    /// unless `resume=on`; the snapshot's config describes the VM, so no other VM flags.
    #[arg(long, value_name = "source_url=file:///DIR[,resume=on]", conflicts_with_all = ["kernel", "config"],
          value_parser = |s: &str| crate::snapshot::parse_restore(s))]
    pub restore: Option<(PathBuf, bool)>,

    /// Load and enter a flat --kernel at ADDR instead of RAM base + 2 MiB (0x80200000), for a
    /// binary linked elsewhere (a Linux Image or an ELF says where it goes).
    #[arg(long, value_name = "ADDR", value_parser = super::parse_addr)]
    pub load_addr: Option<u64>,

    /// The VM's description as JSON (Cloud Hypervisor's VmConfig shape, see the README);
    /// flags given beside it override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Write the effective configuration (config file + flags + what the dtb describes) as
    /// JSON on stdout, say on stderr where each value came from, and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Serve the REST API (Cloud Hypervisor's, the part rvvmm honours) on this Unix socket,
    /// made with mode 0600; drive it with `rvvmm remote` or ch-remote. Without --kernel or
    /// --config, rvvmm waits for `vm.create` and `vm.boot`.
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,

    /// Device tree to patch and pass to the guest (e.g. dumped from QEMU with
    /// `-M virt,dumpdtb=virt.dtb`); its RAM size and hart count are the defaults for --memory
    /// and --cpus. Without it, rvvmm generates one.
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

    /// Number of vCPUs (1 to 32) [default: the --dtb's harts, else 1]. Hart 0 boots; the
    /// guest starts the others with SBI HSM.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_CPUS as i64))]
    pub cpus: Option<u32>,

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

    /// A virtio-vsock device with guest CID N (3 or more): host processes connect to the Unix
    /// socket PATH (rvvmm creates it) and write `CONNECT <port>\n` to reach the guest's
    /// listener on that port; a guest connect to CID 2 port P reaches the host listener on
    /// `PATH_P`.
    #[arg(long, value_name = "cid=N,socket=PATH", value_parser = parse_vsock)]
    pub vsock: Option<VsockSpec>,

    /// A virtio-fs device (repeatable) whose files a running vhost-user-fs backend serves
    /// (`virtiofsd --socket-path=PATH --shared-dir=DIR`); the guest mounts it with `mount -t
    /// virtiofs TAG /mnt`. Guest RAM is then a shared memfd the backend maps.
    #[arg(long, value_name = "tag=T,socket=PATH[,queue_size=N]", value_parser = parse_fs)]
    pub fs: Vec<FsSpec>,

    /// Where the guest's console input goes: the 16550 UART (ttyS0) or a virtio console (hvc0)
    /// [default: uart].
    #[arg(long, value_enum)]
    pub console: Option<ConsoleKind>,

    /// Interrupt controller: KVM's in-kernel AIA (APLIC + IMSICs), rvvmm's user-space PLIC, or
    /// auto (the AIA when the host has one and the --dtb, if any, describes one) [default: auto].
    #[arg(long, value_enum)]
    pub irqchip: Option<IrqChipKind>,

    /// Switch off KVM SBI extensions for the guest, e.g. `dbcn,sta` (their probes answer 0).
    #[arg(long, value_name = "EXT[,EXT]", value_delimiter = ',', value_parser = |s: &str| parse_name(s, check_sbi_name))]
    pub disable_sbi: Vec<String>,

    /// Switch off ISA extensions the host's KVM offers, e.g. `sstc,zbb` or `v` (the device tree
    /// lists only what stays on; see --list-extensions for what this host can switch off).
    #[arg(long, value_name = "EXT[,EXT]", value_delimiter = ',', value_parser = |s: &str| parse_name(s, check_isa_name))]
    pub disable_isa: Vec<String>,

    /// Print the ISA and SBI extensions this host's KVM vCPU offers, and which of them
    /// --disable-isa / --disable-sbi can switch off, and exit.
    #[arg(long)]
    pub list_extensions: bool,

    /// Write the final device tree to FILE and exit, without running the guest.
    #[arg(long, value_name = "FILE")]
    pub dump_dtb: Option<PathBuf>,

    /// Map rvvmm's MMIO test device at 0x1008_0000 (for testing the VMM).
    #[arg(long)]
    pub testdev: bool,

    /// Seccomp filters on rvvmm's threads: `true` (each thread may make only the system calls
    /// its work needs; any other ends rvvmm with a message), `log` (the kernel logs the calls
    /// outside the lists and lets them through), `false` (no filters).
    #[arg(long, value_name = "true|false|log", default_value = "true")]
    pub seccomp: crate::seccomp::SeccompMode,

    /// Stop the guest after DURATION (`90s`, `5m`, `1h`, `500ms`; a bare number is seconds)
    /// and exit with status 124, as timeout(1) does: for CI jobs whose guest may hang.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Wake a guest that suspended the system (SBI SUSP, e.g. Linux's `echo mem >
    /// /sys/power/state`) after DURATION at the latest; console input and the API's vm.resume
    /// wake it earlier. Needs KVM with SBI SUSP (Linux 6.14 or later).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub suspend_seconds: Option<Duration>,

    /// Write the guest console's output to FILE as well (created or truncated), or with
    /// `,only` to FILE alone: a CI job keeps the log.
    #[arg(long, value_name = "FILE[,only]", value_parser = parse_serial_log)]
    pub serial_log: Option<SerialLog>,
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
    /// ping, info, counters, create, boot, pause, resume, snapshot, restore, shutdown, reboot,
    /// power-button, delete, shutdown-vmm.
    pub command: String,
    /// A JSON body for the request, or a file holding it (`create vm.json`); for snapshot a
    /// `file:///dir` URL, for restore `source_url=file:///dir[,resume=on]`.
    pub json: Option<String>,
}

impl Args {
    /// The VM these flags describe, over the `--config` file if there is one, with where each
    /// given value came from. `None` when neither names a VM (only `--api-socket`: the VM comes
    /// later through `vm.create`).
    pub fn vm_config(&self) -> Result<Option<(VmConfig, Sources)>, ConfigError> {
        let (mut config, mut sources) = match &self.config {
            Some(path) => read_file(path)?,
            None => (VmConfig::default(), Sources::default()),
        };
        let before = sources.clone();
        self.lay_over(&mut config, &mut sources);
        if self.config.is_none() && self.kernel.is_none() {
            if sources != before {
                return Err(ConfigError::Format(
                    "flags describing a VM need --kernel or --config (with only --api-socket, send the VM with vm.create)".into(),
                ));
            }
            return Ok(None);
        }
        Ok(Some((config, sources)))
    }

    /// Sets every value a flag gives, over what `config` has.
    fn lay_over(&self, config: &mut VmConfig, sources: &mut Sources) {
        fn set<T: Clone>(
            value: &Option<T>,
            slot: &mut T,
            sources: &mut Sources,
            path: &'static str,
            flag: &'static str,
        ) {
            if let Some(v) = value {
                *slot = v.clone();
                sources.set(path, Source::Flag(flag));
            }
        }
        fn on(
            value: bool,
            slot: &mut bool,
            sources: &mut Sources,
            path: &'static str,
            flag: &'static str,
        ) {
            if value {
                *slot = true;
                sources.set(path, Source::Flag(flag));
            }
        }
        let some = |v: &Option<PathBuf>| v.clone().map(Some);
        let s = sources;
        set(
            &self.kernel,
            &mut config.kernel,
            s,
            "payload.kernel",
            "--kernel",
        );
        set(
            &self.load_addr.map(Some),
            &mut config.load_addr,
            s,
            "rvvmm.load_addr",
            "--load-addr",
        );
        set(&some(&self.dtb), &mut config.dtb, s, "rvvmm.dtb", "--dtb");
        set(
            &some(&self.initrd),
            &mut config.initrd,
            s,
            "payload.initramfs",
            "--initrd",
        );
        set(
            &self.memory.map(Some),
            &mut config.memory,
            s,
            "memory.size",
            "--memory",
        );
        on(
            self.hugepages,
            &mut config.hugepages,
            s,
            "memory.hugepages",
            "--hugepages",
        );
        set(&self.cpus.map(Some), &mut config.cpus, s, "cpus", "--cpus");
        set(
            &self.cmdline.clone().map(Some),
            &mut config.cmdline,
            s,
            "payload.cmdline",
            "--cmdline",
        );
        let disks = (!self.disk.is_empty()).then(|| self.disk.clone());
        set(&disks, &mut config.disks, s, "disks", "--disk");
        let nets = (!self.net.is_empty()).then(|| self.net.clone());
        set(&nets, &mut config.nets, s, "net", "--net");
        on(self.rng, &mut config.rng, s, "rng", "--rng");
        set(
            &self.vsock.clone().map(Some),
            &mut config.vsock,
            s,
            "vsock",
            "--vsock",
        );
        let fs = (!self.fs.is_empty()).then(|| self.fs.clone());
        set(&fs, &mut config.fs, s, "fs", "--fs");
        if let Some(console) = self.console {
            config.console = console;
            s.set("serial", Source::Flag("--console"));
            s.set("console", Source::Flag("--console"));
        }
        set(
            &self.irqchip,
            &mut config.irqchip,
            s,
            "rvvmm.irqchip",
            "--irqchip",
        );
        on(
            self.testdev,
            &mut config.testdev,
            s,
            "rvvmm.testdev",
            "--testdev",
        );
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        set(
            &list(&self.disable_sbi),
            &mut config.disable_sbi,
            s,
            "rvvmm.disable_sbi",
            "--disable-sbi",
        );
        set(
            &list(&self.disable_isa),
            &mut config.disable_isa,
            s,
            "rvvmm.disable_isa",
            "--disable-isa",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("rvvmm").chain(args.iter().copied()))
    }

    #[test]
    fn cpus_bounds() {
        assert!(parse(&["--kernel", "k", "--cpus", "0"]).is_err());
        assert!(parse(&["--kernel", "k", "--cpus", "33"]).is_err());
        assert_eq!(
            parse(&["--kernel", "k", "--cpus", "32"]).unwrap().cpus,
            Some(32)
        );
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn a_vm_needs_a_kernel_or_a_config_but_the_api_may_wait_for_one() {
        assert!(parse(&["--api-socket", "s"])
            .unwrap()
            .vm_config()
            .unwrap()
            .is_none());
        let e = parse(&["--api-socket", "s", "--cpus", "2"])
            .unwrap()
            .vm_config()
            .unwrap_err();
        assert!(e.to_string().contains("need --kernel or --config"), "{e}");
        let (config, sources) = parse(&["--kernel", "k", "--cpus", "2"])
            .unwrap()
            .vm_config()
            .unwrap()
            .unwrap();
        assert_eq!(config.cpus, Some(2));
        assert_eq!(sources.of("cpus.boot_vcpus"), Some(&Source::Flag("--cpus")));
        assert_eq!(sources.of("memory.size"), None);
    }

    #[test]
    fn load_addr_is_laid_over() {
        let (config, sources) = parse(&["--kernel", "k", "--load-addr", "0x80000000"])
            .unwrap()
            .vm_config()
            .unwrap()
            .unwrap();
        assert_eq!(config.load_addr, Some(0x8000_0000));
        assert_eq!(
            sources.of("rvvmm.load_addr"),
            Some(&Source::Flag("--load-addr"))
        );
        assert!(parse(&["--kernel", "k", "--load-addr", "zz"]).is_err());
    }

    #[test]
    fn extension_lists_are_checked() {
        let args = parse(&[
            "--kernel",
            "k",
            "--disable-isa",
            "sstc,ZBB",
            "--disable-sbi",
            "dbcn",
        ])
        .unwrap();
        assert_eq!(args.disable_isa, ["sstc", "zbb"]);
        assert_eq!(args.disable_sbi, ["dbcn"]);
        let e = parse(&["--kernel", "k", "--disable-isa", "zzz"]).unwrap_err();
        assert!(e.to_string().contains("unknown ISA extension 'zzz'"), "{e}");
        let e = parse(&["--kernel", "k", "--disable-sbi", "nope"]).unwrap_err();
        assert!(e.to_string().contains("dbcn"), "{e}");
    }
}
