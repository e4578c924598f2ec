//! The VM's description, [`VmConfig`]: one type for command-line flags ([`cli`]), config files
//! and the API's `vm.create` ([`json`], Cloud Hypervisor's `VmConfig` shape), checked by one
//! validation path: the value checks here, then [`VmConfig::resolve`], which also fills in what
//! the user's dtb describes (RAM size, hart count) and says where each value came from.

pub mod cli;
pub mod json;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::arch::riscv64::fdt::patch;
use crate::arch::riscv64::fdt::tree::{Tree, MAX_BLOB};
use crate::arch::riscv64::regs::{ISA_EXTS, ISA_LETTERS, SBI_EXTS};

use crate::arch::riscv64::layout::{RAM_MAX, RAM_MIN};
use crate::devices::virtio::net::parse_mac;
use crate::devices::virtio::tap::valid_name as valid_tap_name;

/// Most vCPUs rvvmm creates.
pub const MAX_CPUS: u32 = 32;

/// A `--disk` argument.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskSpec {
    /// The image file.
    pub path: PathBuf,
    /// Whether the guest may not write.
    pub readonly: bool,
    /// The device's ID (else `_disk<N>`).
    pub id: Option<String>,
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
        id: None,
    })
}

/// A `--net` argument.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetSpec {
    /// The tap interface.
    pub tap: String,
    /// The card's MAC address (else 52:54:00:12:34:56 + the card's index).
    pub mac: Option<[u8; 6]>,
    /// The device's ID (else `_net<N>`).
    pub id: Option<String>,
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
    Ok(NetSpec { tap, mac, id: None })
}

/// A `--vsock` argument.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VsockSpec {
    /// The guest's context ID.
    pub cid: u64,
    /// The Unix socket rvvmm listens on for host connections (`PATH_<port>`: where guest
    /// connections to host port `port` go).
    pub socket: PathBuf,
}

/// Longest `--vsock` socket path: `PATH_4294967295` must fit a Unix socket address (108 bytes
/// with the NUL).
pub const MAX_VSOCK_PATH: usize = 107 - 11;

/// Parses `cid=N,socket=PATH`.
pub fn parse_vsock(s: &str) -> Result<VsockSpec, String> {
    let (mut cid, mut socket) = (None, None);
    for opt in s.split(',') {
        match opt.split_once('=') {
            Some(("cid", n)) => {
                cid = Some(
                    n.parse::<u64>()
                        .map_err(|_| format!("cid '{n}' is not a number"))?,
                )
            }
            Some(("socket", p)) => socket = Some(PathBuf::from(p)),
            _ => return Err(format!("unknown vsock option '{opt}' (cid=N, socket=PATH)")),
        }
    }
    let spec = VsockSpec {
        cid: cid.ok_or("a vsock device needs cid=N (3 or more)")?,
        socket: socket.ok_or("a vsock device needs socket=PATH")?,
    };
    check_vsock(&spec)?;
    Ok(spec)
}

/// A `--fs` argument: a virtio-fs device served by a vhost-user backend (virtiofsd).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FsSpec {
    /// The tag the guest mounts (`mount -t virtiofs TAG /mnt`).
    pub tag: String,
    /// The backend's vhost-user socket (virtiofsd's `--socket-path`).
    pub socket: PathBuf,
    /// Entries of each queue.
    pub queue_size: u16,
}

/// Parses `tag=T,socket=PATH[,queue_size=N]`.
pub fn parse_fs(s: &str) -> Result<FsSpec, String> {
    let mut spec = FsSpec {
        queue_size: crate::devices::virtio::fs::DEFAULT_QUEUE_SIZE,
        ..Default::default()
    };
    let (mut tag, mut socket) = (None, None);
    for opt in s.split(',') {
        match opt.split_once('=') {
            Some(("tag", t)) => tag = Some(t.to_string()),
            Some(("socket", p)) => socket = Some(PathBuf::from(p)),
            Some(("queue_size", n)) => {
                spec.queue_size = n
                    .parse()
                    .map_err(|_| format!("queue_size '{n}' is not a number up to 32768"))?
            }
            _ => {
                return Err(format!(
                    "unknown fs option '{opt}' (tag=T, socket=PATH, queue_size=N)"
                ))
            }
        }
    }
    spec.tag = tag.ok_or("a virtio-fs device needs tag=T (what the guest mounts)")?;
    spec.socket =
        socket.ok_or("a virtio-fs device needs socket=PATH (virtiofsd's --socket-path)")?;
    check_fs(&spec)?;
    Ok(spec)
}

/// Checks a virtio-fs device's values (no file is touched).
pub fn check_fs(spec: &FsSpec) -> Result<(), String> {
    use crate::devices::virtio::fs::MAX_TAG_LEN;
    if spec.tag.is_empty() || spec.tag.len() > MAX_TAG_LEN {
        return Err(format!(
            "tag '{}': 1 to {MAX_TAG_LEN} bytes (the size of virtio-fs's config space field)",
            spec.tag
        ));
    }
    if spec.socket.as_os_str().is_empty() || spec.socket.as_os_str().len() > 107 {
        return Err(format!(
            "socket path '{}': 1 to 107 bytes (a Unix socket address)",
            spec.socket.display()
        ));
    }
    if !spec.queue_size.is_power_of_two() || spec.queue_size > 32768 {
        return Err(format!(
            "queue_size {}: a power of two up to 32768",
            spec.queue_size
        ));
    }
    Ok(())
}

/// Checks a vsock device's values (no file is touched).
pub fn check_vsock(spec: &VsockSpec) -> Result<(), String> {
    use crate::devices::virtio::vsock::{MAX_GUEST_CID, MIN_GUEST_CID};
    if !(MIN_GUEST_CID..=MAX_GUEST_CID).contains(&spec.cid) {
        return Err(format!(
            "cid {}: a guest's CID is {MIN_GUEST_CID} to {MAX_GUEST_CID} (0-2 are the hypervisor's, the local and the host's)",
            spec.cid
        ));
    }
    let len = spec.socket.as_os_str().len();
    if len == 0 || len > MAX_VSOCK_PATH {
        return Err(format!(
            "socket path '{}': 1 to {MAX_VSOCK_PATH} bytes (PATH_<port> must fit a Unix socket address)",
            spec.socket.display()
        ));
    }
    Ok(())
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
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
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

/// Everything the VMM needs to build a VM: the one description that flags, config files and
/// the API fill in. `None` means "the default": for RAM and vCPUs, what the dtb describes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmConfig {
    /// Kernel file.
    pub kernel: PathBuf,
    /// Where a flat kernel goes (else RAM base + 2 MiB).
    pub load_addr: Option<u64>,
    /// User device tree.
    pub dtb: Option<PathBuf>,
    /// Initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Bytes of guest RAM (else the dtb's, else [`DEFAULT_MEMORY`]).
    pub memory: Option<u64>,
    /// vCPU count (else the dtb's harts, else 1).
    pub cpus: Option<u32>,
    /// Whether guest RAM is in 2 MiB huge pages.
    pub hugepages: bool,
    /// Kernel command line.
    pub cmdline: Option<String>,
    /// Whether to map the test device.
    pub testdev: bool,
    /// virtio-blk disks.
    pub disks: Vec<DiskSpec>,
    /// virtio-net cards.
    pub nets: Vec<NetSpec>,
    /// Whether there is a virtio-rng.
    pub rng: bool,
    /// The virtio-vsock device.
    pub vsock: Option<VsockSpec>,
    /// virtio-fs devices (vhost-user).
    pub fs: Vec<FsSpec>,
    /// Whether guest RAM is shared (a memfd): always when there is a vhost-user device.
    pub shared_memory: bool,
    /// Which console takes input.
    pub console: ConsoleKind,
    /// Which interrupt controller.
    pub irqchip: IrqChipKind,
    /// KVM SBI extensions switched off (names as in [`SBI_EXTS`]).
    pub disable_sbi: Vec<String>,
    /// ISA extensions switched off (single letters and names as in [`ISA_EXTS`]).
    pub disable_isa: Vec<String>,
}

/// Where a value of the effective configuration came from (`--print-config` says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag(&'static str),
    /// The config file.
    File,
    /// The API's `vm.create`.
    Api,
    /// The user's dtb.
    Dtb,
}

/// The origin of each value that was given rather than defaulted, by its JSON path
/// (`cpus.boot_vcpus`, `disks`, `rvvmm.irqchip`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources(BTreeMap<&'static str, Source>);

impl Sources {
    /// Records that `path` came from `source`.
    pub fn set(&mut self, path: &'static str, source: Source) {
        self.0.insert(path, source);
    }

    /// Where the value at `path` (a leaf such as `disks[0].path`) came from: the entry whose
    /// path is the longest prefix of it.
    pub fn of(&self, path: &str) -> Option<&Source> {
        self.0
            .iter()
            .filter(|(k, _)| {
                path == **k
                    || path
                        .strip_prefix(**k)
                        .is_some_and(|rest| rest.starts_with(['.', '[']))
            })
            .max_by_key(|(k, _)| k.len())
            .map(|(_, s)| s)
    }

    /// Whether nothing was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A configuration error: the field (its JSON path, or the flag) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A field's value is wrong.
    #[error("{field}: {message}")]
    Field {
        /// `cpus.boot_vcpus`, `disks[1].path`, ...
        field: String,
        /// What is wrong, and what would do.
        message: String,
    },
    /// The text is not a config at all (not JSON, wrong shape).
    #[error("{0}")]
    Format(String),
}

impl ConfigError {
    /// An error in `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Field {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The configuration with its defaults filled in: what a boot uses.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The vCPU count in effect.
    pub cpus: u32,
    /// The RAM size in effect.
    pub memory: u64,
    /// The user's dtb, parsed.
    pub dtb: Option<Tree>,
}

impl VmConfig {
    /// Whether guest RAM must be a shared memfd: asked for, or a vhost-user backend maps it.
    pub fn ram_shared(&self) -> bool {
        self.shared_memory || !self.fs.is_empty()
    }

    /// Checks every value against the bounds rvvmm has (the same for flags, files and the
    /// API), that every named file exists, reads the dtb, and fills in the defaults.
    pub fn resolve(&self) -> Result<Resolved, ConfigError> {
        self.check_values()?;
        let exists = |field: &str, path: &Path| {
            std::fs::metadata(path)
                .map(|_| ())
                .map_err(|e| ConfigError::field(field, format!("{}: {e}", path.display())))
        };
        if self.kernel.as_os_str().is_empty() {
            return Err(ConfigError::field(
                "payload.kernel",
                "no kernel: give --kernel FILE or payload.kernel",
            ));
        }
        exists("payload.kernel", &self.kernel)?;
        if let Some(initrd) = &self.initrd {
            exists("payload.initramfs", initrd)?;
        }
        for (i, disk) in self.disks.iter().enumerate() {
            exists(&format!("disks[{i}].path"), &disk.path)?;
        }
        let dtb = match &self.dtb {
            Some(path) => Some(read_dtb(path)?),
            None => None,
        };
        let memory = match (self.memory, dtb.as_ref().and_then(patch::memory_size)) {
            (Some(size), _) => size,
            (None, Some(size)) => check_memory(size).map_err(|e| {
                ConfigError::field(
                    "rvvmm.dtb",
                    format!("its /memory size is unusable: {e}; give --memory"),
                )
            })?,
            (None, None) => DEFAULT_MEMORY,
        };
        let cpus = match (self.cpus, dtb.as_ref().and_then(patch::cpu_count)) {
            (Some(n), _) => n,
            (None, Some(n)) => check_cpus(n).map_err(|e| {
                ConfigError::field(
                    "rvvmm.dtb",
                    format!("it describes {n} harts: {e}; give --cpus"),
                )
            })?,
            (None, None) => 1,
        };
        Ok(Resolved { cpus, memory, dtb })
    }

    /// The value checks (no file is touched).
    pub fn check_values(&self) -> Result<(), ConfigError> {
        if let Some(size) = self.memory {
            check_memory(size).map_err(|e| ConfigError::field("memory.size", e))?;
            if self.hugepages && !size.is_multiple_of(2 << 20) {
                return Err(ConfigError::field(
                    "memory.size",
                    "with hugepages, RAM must be a multiple of 2 MiB",
                ));
            }
        }
        if let Some(n) = self.cpus {
            check_cpus(n).map_err(|e| ConfigError::field("cpus.boot_vcpus", e))?;
        }
        if let Some(cmdline) = &self.cmdline {
            parse_cmdline(cmdline).map_err(|e| ConfigError::field("payload.cmdline", e))?;
        }
        for (i, net) in self.nets.iter().enumerate() {
            if !valid_tap_name(&net.tap) {
                return Err(ConfigError::field(
                    format!("net[{i}].tap"),
                    format!(
                        "'{}' is not an interface name (1 to 15 bytes, no '/', ':' or blanks)",
                        net.tap
                    ),
                ));
            }
        }
        if let Some(vsock) = &self.vsock {
            check_vsock(vsock).map_err(|e| ConfigError::field("vsock", e))?;
        }
        for (i, fs) in self.fs.iter().enumerate() {
            check_fs(fs).map_err(|e| ConfigError::field(format!("fs[{i}]"), e))?;
        }
        let devices = self.disks.len()
            + self.nets.len()
            + usize::from(self.rng)
            + usize::from(self.console == ConsoleKind::Virtio)
            + usize::from(self.vsock.is_some())
            + self.fs.len();
        if devices > MAX_VIRTIO_DEVICES {
            return Err(ConfigError::field(
                "disks",
                format!("{devices} virtio devices asked for; QEMU virt has {MAX_VIRTIO_DEVICES} virtio-mmio slots"),
            ));
        }
        let mut ids = std::collections::HashSet::new();
        let given = self
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("disks[{i}].id"), &d.id))
            .chain(
                self.nets
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (format!("net[{i}].id"), &n.id)),
            );
        for (field, id) in given {
            if let Some(id) = id {
                if id.is_empty() || id.len() > 64 || !ids.insert(id.clone()) {
                    return Err(ConfigError::field(
                        field,
                        format!("'{id}' is empty, longer than 64 bytes or not unique"),
                    ));
                }
            }
        }
        for name in &self.disable_sbi {
            check_sbi_name(name).map_err(|e| ConfigError::field("rvvmm.disable_sbi", e))?;
        }
        for name in &self.disable_isa {
            check_isa_name(name).map_err(|e| ConfigError::field("rvvmm.disable_isa", e))?;
        }
        Ok(())
    }
}

/// Reads and parses a dtb file, bounded before it is read.
pub fn read_dtb(path: &Path) -> Result<Tree, ConfigError> {
    let err = |what: String| ConfigError::field("rvvmm.dtb", format!("{}: {what}", path.display()));
    let blob = crate::files::read_bounded(path, MAX_BLOB as u64).map_err(|e| err(e.to_string()))?;
    Tree::parse(&blob).map_err(|e| err(format!("not a device tree: {e}")))
}

/// Checks an SBI extension name for `--disable-sbi`.
pub fn check_sbi_name(name: &str) -> Result<(), String> {
    if SBI_EXTS.iter().any(|(_, n)| *n == name) {
        return Ok(());
    }
    let names: Vec<&str> = SBI_EXTS.iter().map(|(_, n)| *n).collect();
    Err(format!(
        "unknown SBI extension '{name}' (one of: {})",
        names.join(", ")
    ))
}

/// Checks an ISA extension name for `--disable-isa`.
pub fn check_isa_name(name: &str) -> Result<(), String> {
    if ISA_LETTERS.iter().any(|(_, n)| *n == name) || ISA_EXTS.iter().any(|(_, n)| *n == name) {
        return Ok(());
    }
    Err(format!(
        "unknown ISA extension '{name}' (a single letter such as f, d, v, h, or a name such as zbb, sstc, svpbmt)"
    ))
}

/// Parses one extension name of `--disable-sbi` or `--disable-isa` (any case).
pub fn parse_name(s: &str, check: fn(&str) -> Result<(), String>) -> Result<String, String> {
    let name = s.trim().to_ascii_lowercase();
    check(&name).map(|()| name)
}

/// Checks a vCPU count.
pub fn check_cpus(n: u32) -> Result<u32, String> {
    if (1..=MAX_CPUS).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} vCPUs: rvvmm runs 1 to {MAX_CPUS}"))
    }
}

/// Guest RAM when neither --memory nor a --dtb says.
pub const DEFAULT_MEMORY: u64 = 256 << 20;

/// Longest kernel command line: Linux's RISC-V COMMAND_LINE_SIZE is 1024 with the NUL.
pub const MAX_CMDLINE: usize = 1023;

/// The longest `--timeout`: a year (a longer one is a typo, not a plan).
const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

/// Parses a duration: a whole number with `ms`, `s`, `m` or `h` (a bare number is seconds),
/// more than zero and at most a year.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    use std::time::Duration;
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || format!("'{s}' is not a duration: write e.g. 90s, 5m, 1h or 500ms");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let millis = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(bad()),
    };
    match millis.map(Duration::from_millis) {
        Some(d) if d.is_zero() => {
            Err("a timeout of zero would stop the guest before it starts".into())
        }
        Some(d) if d <= MAX_TIMEOUT => Ok(d),
        _ => Err(format!("'{s}' is longer than a year")),
    }
}

/// A `--serial-log` argument: the console's output also (or `only`) to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialLog {
    /// The file, created or truncated.
    pub path: PathBuf,
    /// Whether the output goes to the file only, not to stdout.
    pub only: bool,
}

/// Parses `PATH[,only]`.
pub fn parse_serial_log(s: &str) -> Result<SerialLog, String> {
    let (path, only) = match s.strip_suffix(",only") {
        Some(p) => (p, true),
        None => (s, false),
    };
    if path.is_empty() {
        return Err("--serial-log needs a file path".into());
    }
    Ok(SerialLog {
        path: PathBuf::from(path),
        only,
    })
}

/// Parses a size: a number with an optional K, M, G or T suffix (powers of 1024), or an
/// optional trailing "B"/"iB". Bounded to what rvvmm can map.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    check_memory(parse_size(s)?)
}

/// Checks a RAM size in bytes against what rvvmm can map.
pub fn check_memory(size: u64) -> Result<u64, String> {
    let s = format!("{size} bytes");
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
    if !size.is_multiple_of(4096) {
        return Err(format!("{s} is not a multiple of 4 KiB"));
    }
    Ok(size)
}

/// Accepts a command line Linux can take whole: printable ASCII, at most [`MAX_CMDLINE`]
/// bytes. linux-loader's `Cmdline` does the checks (and trims the ends).
pub fn parse_cmdline(s: &str) -> Result<String, String> {
    use linux_loader::cmdline::{Cmdline, Error};
    let mut cmdline = Cmdline::new(MAX_CMDLINE + 1).map_err(|e| e.to_string())?;
    cmdline.insert_str(s).map_err(|e| match e {
        Error::TooLarge => format!(
            "the command line is {} bytes; Linux on RISC-V takes at most {MAX_CMDLINE}",
            s.trim().len()
        ),
        Error::InvalidAscii => {
            "the command line has a character that is not printable ASCII".to_string()
        }
        e => format!("bad command line: {e}"),
    })?;
    cmdline
        .as_cstring()
        .map_err(|e| format!("bad command line: {e}"))?
        .into_string()
        .map_err(|e| format!("bad command line: {e}"))
}

/// Parses an address: hex with `0x`, or decimal.
pub fn parse_addr(s: &str) -> Result<u64, String> {
    let t = s.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => t.parse(),
    }
    .map_err(|_| format!("'{s}' is not an address (try 0x80200000)"))
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
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in [
            "",
            "0",
            "0s",
            "s",
            "1.5s",
            "-3s",
            "5 min",
            "9999h",
            "99999999999999999999",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
    }

    #[test]
    fn serial_logs() {
        let log = parse_serial_log("/tmp/console.log").unwrap();
        assert_eq!(
            (log.path.to_str(), log.only),
            (Some("/tmp/console.log"), false)
        );
        let log = parse_serial_log("out,only").unwrap();
        assert_eq!((log.path.to_str(), log.only), (Some("out"), true));
        assert!(parse_serial_log("").is_err());
        assert!(parse_serial_log(",only").is_err());
    }

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
    fn addresses() {
        assert_eq!(parse_addr("0x80200000"), Ok(0x8020_0000));
        assert_eq!(parse_addr("0X8000_0000"), Ok(0x8000_0000));
        assert_eq!(parse_addr("4096"), Ok(4096));
        assert!(parse_addr("0xzz").is_err());
        assert!(parse_addr("").is_err());
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
                readonly: false,
                id: None
            }
        );
        assert_eq!(
            parse_disk("b.img,readonly").unwrap(),
            DiskSpec {
                path: "b.img".into(),
                readonly: true,
                id: None
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
                mac: None,
                id: None
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
}
