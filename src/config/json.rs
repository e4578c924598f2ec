//! [`VmConfig`] as JSON: the subset of Cloud Hypervisor's `VmConfig` (field names from its
//! OpenAPI file, `vmm/src/api/openapi/cloud-hypervisor.yaml`) that rvvmm implements, plus an
//! `rvvmm` section for what is RISC-V specific. Config files and `vm.create` bodies are read
//! here, `vm.info` and `--print-config` written here.
//!
//! Reading is three steps, each naming the field it refuses: the text must be JSON; every key
//! must be one rvvmm honours, or one of Cloud Hypervisor's that rvvmm knows, holding a value
//! that asks for nothing rvvmm lacks (`"iommu": false`, `"num_queues": 1`: what a full
//! Cloud Hypervisor config, such as Kata's, carries); then typed deserialization
//! (`serde_path_to_error` names the field of a wrong type) and [`VmConfig::check_values`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    check_fs, check_vsock, ConfigError, ConsoleKind, DiskSpec, FsSpec, IrqChipKind, NetSpec,
    Resolved, Source, Sources, VmConfig, VsockSpec,
};
use crate::devices::virtio::net::parse_mac;

/// Largest config file or `vm.create` body read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// `cpus`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpusConfig {
    /// vCPUs at boot.
    pub boot_vcpus: u32,
    /// Most vCPUs (rvvmm has no CPU hotplug: the same as `boot_vcpus`).
    #[serde(default)]
    pub max_vcpus: Option<u32>,
}

/// `memory`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Bytes.
    pub size: u64,
    /// Backed by hugetlb pages.
    #[serde(default)]
    pub hugepages: bool,
    /// A shared memfd (what a vhost-user backend maps; implied by an `fs` device).
    #[serde(default)]
    pub shared: bool,
}

/// `payload`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadConfig {
    /// Kernel file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Initial ramdisk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<String>,
}

/// `disks[]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Image file.
    pub path: String,
    /// Guest writes refused.
    #[serde(default)]
    pub readonly: bool,
    /// The device's ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `net[]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Tap interface.
    pub tap: String,
    /// MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The device's ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `rng`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RngConfig {
    /// Where the entropy comes from: rvvmm uses getrandom(2), the kernel's pool that
    /// `/dev/urandom` (Cloud Hypervisor's default) also reads.
    pub src: String,
}

/// `vsock`: Cloud Hypervisor's `VsockConfig` (its hybrid vsock, as rvvmm's).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// The guest's context ID.
    pub cid: u64,
    /// The host's Unix socket.
    pub socket: String,
}

/// `fs`: Cloud Hypervisor's `FsConfig` (a vhost-user-fs backend's socket and the tag).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsConfig {
    /// The tag the guest mounts.
    pub tag: String,
    /// The backend's vhost-user socket.
    pub socket: String,
    /// Entries of each queue.
    #[serde(default = "default_fs_queue_size")]
    pub queue_size: u16,
}

fn default_fs_queue_size() -> u16 {
    crate::devices::virtio::fs::DEFAULT_QUEUE_SIZE
}

/// Cloud Hypervisor's `ConsoleMode`, the modes rvvmm has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsoleMode {
    /// No device (virtio-console only).
    Off,
    /// rvvmm's stdin and stdout.
    Tty,
}

/// `serial` / `console`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// `Tty` or `Off`.
    pub mode: ConsoleMode,
}

/// What rvvmm has that Cloud Hypervisor's `VmConfig` does not.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RvvmmConfig {
    /// The user's device tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtb: Option<String>,
    /// Where a flat kernel goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_addr: Option<u64>,
    /// `auto`, `aia` or `plic`.
    #[serde(default)]
    pub irqchip: IrqChipKind,
    /// The MMIO test device.
    #[serde(default)]
    pub testdev: bool,
    /// KVM SBI extensions switched off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disable_sbi: Vec<String>,
    /// ISA extensions switched off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disable_isa: Vec<String>,
}

/// `VmConfig`, the part rvvmm implements.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfigJson {
    /// vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<CpusConfig>,
    /// RAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryConfig>,
    /// What boots.
    #[serde(default)]
    pub payload: PayloadConfig,
    /// virtio-blk disks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskConfig>,
    /// virtio-net cards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net: Vec<NetConfig>,
    /// virtio-rng.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rng: Option<RngConfig>,
    /// virtio-vsock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockConfig>,
    /// virtio-fs devices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fs: Vec<FsConfig>,
    /// The UART.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<ConsoleConfig>,
    /// virtio-console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleConfig>,
    /// RISC-V specifics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rvvmm: Option<RvvmmConfig>,
}

/// A section of the JSON: the keys rvvmm honours, and Cloud Hypervisor's keys it knows with
/// the values (as JSON text) that ask for nothing it lacks. `null` is always accepted.
struct Section {
    path: &'static str,
    honoured: &'static [&'static str],
    known: &'static [(&'static str, &'static [&'static str])],
    /// Why rvvmm cannot honour the other values.
    why: &'static str,
}

const SECTIONS: &[Section] = &[
    Section {
        path: "",
        honoured: &["cpus", "memory", "payload", "disks", "net", "rng", "vsock", "fs", "serial", "console", "rvvmm"],
        known: &[
            ("rate_limit_groups", &["[]"]),
            ("balloon", &[]),
            ("generic_vhost_user", &["[]"]),
            ("pmem", &["[]"]),
            ("debug_console", &["{\"mode\":\"Off\"}"]),
            ("devices", &["[]"]),
            ("user_devices", &["[]"]),
            ("vdpa", &["[]"]),
            ("numa", &["[]"]),
            ("iommu", &["false"]),
            ("watchdog", &["false"]),
            ("rtc", &[]),
            ("pvpanic", &["false"]),
            ("pci_segments", &["[]"]),
            ("platform", &[]),
            ("tpm", &[]),
            ("landlock_enable", &["false"]),
            ("landlock_rules", &["[]"]),
            ("sgx_epc", &["[]"]),
        ],
        why: "rvvmm has no such device or feature",
    },
    Section {
        path: "cpus",
        honoured: &["boot_vcpus", "max_vcpus"],
        known: &[
            ("topology", &[]),
            ("kvm_hyperv", &["false"]),
            ("max_phys_bits", &[]),
            ("nested", &["true"]),
            ("affinity", &["[]"]),
            ("features", &["{}"]),
            ("core_scheduling", &["\"Off\""]),
        ],
        why: "rvvmm has no CPU topology, affinity or core scheduling (use rvvmm.disable_isa [\"h\"] for no nesting)",
    },
    Section {
        path: "memory",
        honoured: &["size", "hugepages", "shared"],
        known: &[
            ("hotplug_size", &["0"]),
            ("hotplugged_size", &["0"]),
            ("mergeable", &["false"]),
            ("hotplug_method", &["\"Acpi\""]),
            ("hugepage_size", &["2097152"]),
            ("prefault", &["false"]),
            ("reserve", &["false"]),
            ("thp", &["true"]),
            ("zones", &["[]"]),
        ],
        why: "rvvmm maps one RAM region (private, or a shared memfd), in 4 KiB or 2 MiB pages, with no hotplug",
    },
    Section {
        path: "payload",
        honoured: &["kernel", "cmdline", "initramfs"],
        known: &[("firmware", &[]), ("igvm", &[]), ("host_data", &[])],
        why: "rvvmm boots a kernel (or a flat binary) given as payload.kernel",
    },
    Section {
        path: "disks[]",
        honoured: &["path", "readonly", "id"],
        known: &[
            ("direct", &["false"]),
            ("iommu", &["false"]),
            ("num_queues", &["1"]),
            ("queue_size", &["128", "256"]),
            ("vhost_user", &["false"]),
            ("vhost_socket", &[]),
            ("rate_limiter_config", &[]),
            ("pci_segment", &[]),
            ("pci_device_id", &[]),
            ("serial", &[]),
            ("rate_limit_group", &[]),
            ("queue_affinity", &["[]"]),
            ("backing_files", &["false"]),
            ("sparse", &["true", "false"]),
            ("image_type", &["\"Raw\""]),
            ("lock_granularity", &["\"ByteRange\"", "\"Full\""]),
        ],
        why: "rvvmm's disks are raw images on one virtio-mmio queue, without PCI, vhost-user or rate limits",
    },
    Section {
        path: "net[]",
        honoured: &["tap", "mac", "id"],
        known: &[
            ("ip", &[]),
            ("mask", &[]),
            ("host_mac", &[]),
            ("mtu", &[]),
            ("iommu", &["false"]),
            ("num_queues", &["2"]),
            ("queue_size", &["256"]),
            ("vhost_user", &["false"]),
            ("vhost_socket", &[]),
            ("vhost_mode", &["\"Client\""]),
            ("pci_segment", &[]),
            ("pci_device_id", &[]),
            ("rate_limiter_config", &[]),
            ("offload_tso", &["true", "false"]),
            ("offload_ufo", &["true", "false"]),
            ("offload_csum", &["true", "false"]),
        ],
        why: "rvvmm's cards are one queue pair on an existing or created tap, without PCI, vhost-user or host addresses",
    },
    Section {
        path: "rng",
        honoured: &["src"],
        known: &[("id", &[]), ("iommu", &["false"])],
        why: "rvvmm's rng has no PCI and no ID",
    },
    Section {
        path: "vsock",
        honoured: &["cid", "socket"],
        known: &[("id", &[]), ("iommu", &["false"]), ("pci_segment", &[])],
        why: "rvvmm's vsock has no PCI and no ID",
    },
    Section {
        path: "fs[]",
        honoured: &["tag", "socket", "queue_size"],
        known: &[("num_queues", &["1"]), ("id", &[]), ("pci_segment", &[])],
        why: "rvvmm's virtio-fs has one request queue, no PCI and no ID",
    },
    Section {
        path: "serial",
        honoured: &["mode"],
        known: &[("file", &[]), ("socket", &[]), ("iommu", &["false"]), ("id", &[])],
        why: "rvvmm's consoles are on its own stdin and stdout",
    },
    Section {
        path: "console",
        honoured: &["mode"],
        known: &[("file", &[]), ("socket", &[]), ("iommu", &["false"]), ("id", &[])],
        why: "rvvmm's consoles are on its own stdin and stdout",
    },
    Section {
        path: "rvvmm",
        honoured: &["dtb", "load_addr", "irqchip", "testdev", "disable_sbi", "disable_isa"],
        known: &[],
        why: "",
    },
];

/// Checks every key of `value` against [`SECTIONS`], and drops the known keys whose values
/// ask for nothing, so that typed deserialization sees only what rvvmm honours.
fn check_keys(value: &mut Value) -> Result<(), ConfigError> {
    let Value::Object(top) = value else {
        return Err(ConfigError::Format(
            "a VM config is a JSON object ({\"payload\": {\"kernel\": ...}, ...})".into(),
        ));
    };
    check_section(top, &SECTIONS[0], "")?;
    for section in &SECTIONS[1..] {
        match section.path.strip_suffix("[]") {
            Some(name) => {
                if let Some(Value::Array(items)) = top.get_mut(name) {
                    for (i, item) in items.iter_mut().enumerate() {
                        if let Value::Object(map) = item {
                            check_section(map, section, &format!("{name}[{i}]"))?;
                        }
                    }
                }
            }
            None => {
                if let Some(Value::Object(map)) = top.get_mut(section.path) {
                    check_section(map, section, section.path)?;
                }
            }
        }
    }
    Ok(())
}

fn check_section(
    map: &mut Map<String, Value>,
    section: &Section,
    at: &str,
) -> Result<(), ConfigError> {
    let field = |key: &str| {
        if at.is_empty() {
            key.to_string()
        } else {
            format!("{at}.{key}")
        }
    };
    let mut harmless = Vec::new();
    for (key, value) in map.iter() {
        if section.honoured.contains(&key.as_str()) {
            continue;
        }
        let Some((_, accepted)) = section.known.iter().find(|(k, _)| k == key) else {
            return Err(ConfigError::field(
                field(key),
                format!(
                    "unknown field (rvvmm takes here: {})",
                    section.honoured.join(", ")
                ),
            ));
        };
        let fine = value.is_null()
            || accepted
                .iter()
                .any(|a| serde_json::from_str::<Value>(a).is_ok_and(|a| a == *value));
        if !fine {
            let also = if accepted.is_empty() {
                String::new()
            } else {
                format!(" (it takes only {})", accepted.join(" or "))
            };
            return Err(ConfigError::field(
                field(key),
                format!(
                    "{value} is Cloud Hypervisor's, and rvvmm cannot honour it{also}: {}",
                    section.why
                ),
            ));
        }
        harmless.push(key.clone());
    }
    for key in harmless {
        map.remove(&key);
    }
    Ok(())
}

/// Parses a VM config from JSON text. `source` is where its values are said to come from.
pub fn parse(text: &[u8], source: Source) -> Result<(VmConfig, Sources), ConfigError> {
    let mut value: Value =
        serde_json::from_slice(text).map_err(|e| ConfigError::Format(format!("not JSON: {e}")))?;
    check_keys(&mut value)?;
    let json: VmConfigJson = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::field(path, e.into_inner().to_string())
    })?;
    json.into_config(source)
}

/// Reads a config file (JSON).
pub fn read_file(path: &Path) -> Result<(VmConfig, Sources), ConfigError> {
    let fail = |e: String| ConfigError::Format(format!("config {}: {e}", path.display()));
    let text =
        crate::files::read_bounded(path, MAX_CONFIG_BYTES).map_err(|e| fail(e.to_string()))?;
    parse(&text, Source::File).map_err(|e| fail(e.to_string()))
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn path_text(p: &Path) -> String {
    p.display().to_string()
}

impl VmConfigJson {
    /// The description of `config` with the values in effect (`resolved`) filled in.
    pub fn new(config: &VmConfig, resolved: &Resolved) -> Self {
        let tty = |on: bool| {
            Some(ConsoleConfig {
                mode: if on {
                    ConsoleMode::Tty
                } else {
                    ConsoleMode::Off
                },
            })
        };
        VmConfigJson {
            cpus: Some(CpusConfig {
                boot_vcpus: resolved.cpus,
                max_vcpus: Some(resolved.cpus),
            }),
            memory: Some(MemoryConfig {
                size: resolved.memory,
                hugepages: config.hugepages,
                shared: config.ram_shared(),
            }),
            payload: PayloadConfig {
                kernel: Some(path_text(&config.kernel)),
                cmdline: config.cmdline.clone(),
                initramfs: config.initrd.as_deref().map(path_text),
            },
            disks: config
                .disks
                .iter()
                .enumerate()
                .map(|(i, d)| DiskConfig {
                    path: path_text(&d.path),
                    readonly: d.readonly,
                    id: Some(d.id.clone().unwrap_or_else(|| format!("_disk{i}"))),
                })
                .collect(),
            net: config
                .nets
                .iter()
                .enumerate()
                .map(|(i, n)| NetConfig {
                    tap: n.tap.clone(),
                    mac: Some(mac_text(n.mac.unwrap_or(default_mac(i)))),
                    id: Some(n.id.clone().unwrap_or_else(|| format!("_net{i}"))),
                })
                .collect(),
            rng: config.rng.then(|| RngConfig {
                src: "/dev/urandom".into(),
            }),
            vsock: config.vsock.as_ref().map(|v| VsockConfig {
                cid: v.cid,
                socket: path_text(&v.socket),
            }),
            fs: config
                .fs
                .iter()
                .map(|f| FsConfig {
                    tag: f.tag.clone(),
                    socket: path_text(&f.socket),
                    queue_size: f.queue_size,
                })
                .collect(),
            serial: tty(true),
            console: tty(config.console == ConsoleKind::Virtio),
            rvvmm: Some(RvvmmConfig {
                dtb: config.dtb.as_deref().map(path_text),
                load_addr: config.load_addr,
                irqchip: config.irqchip,
                testdev: config.testdev,
                disable_sbi: config.disable_sbi.clone(),
                disable_isa: config.disable_isa.clone(),
            }),
        }
    }

    /// The [`VmConfig`] this describes, value-checked; every value present is recorded as
    /// coming from `source`.
    pub fn into_config(self, source: Source) -> Result<(VmConfig, Sources), ConfigError> {
        let mut sources = Sources::default();
        let mut mark = |path: &'static str| sources.set(path, source.clone());
        let mut config = VmConfig::default();
        if let Some(cpus) = self.cpus {
            if let Some(max) = cpus.max_vcpus.filter(|m| *m != cpus.boot_vcpus) {
                return Err(ConfigError::field(
                    "cpus.max_vcpus",
                    format!(
                        "{max} is not boot_vcpus ({}): rvvmm has no CPU hotplug",
                        cpus.boot_vcpus
                    ),
                ));
            }
            config.cpus = Some(cpus.boot_vcpus);
            mark("cpus");
        }
        if let Some(memory) = self.memory {
            config.memory = Some(memory.size);
            config.hugepages = memory.hugepages;
            config.shared_memory = memory.shared;
            mark("memory");
        }
        if let Some(kernel) = self.payload.kernel {
            config.kernel = PathBuf::from(kernel);
            mark("payload.kernel");
        }
        if let Some(cmdline) = self.payload.cmdline {
            config.cmdline = Some(cmdline);
            mark("payload.cmdline");
        }
        if let Some(initrd) = self.payload.initramfs {
            config.initrd = Some(PathBuf::from(initrd));
            mark("payload.initramfs");
        }
        if !self.disks.is_empty() {
            mark("disks");
        }
        for (i, d) in self.disks.into_iter().enumerate() {
            if d.path.is_empty() {
                return Err(ConfigError::field(
                    format!("disks[{i}].path"),
                    "a disk needs a path",
                ));
            }
            config.disks.push(DiskSpec {
                path: d.path.into(),
                readonly: d.readonly,
                id: d.id,
            });
        }
        if !self.net.is_empty() {
            mark("net");
        }
        for (i, n) in self.net.into_iter().enumerate() {
            let mac = match n.mac {
                Some(m) => Some(parse_mac(&m).ok_or_else(|| {
                    ConfigError::field(
                        format!("net[{i}].mac"),
                        format!("'{m}' is not a unicast MAC address like 52:54:00:12:34:56"),
                    )
                })?),
                None => None,
            };
            config.nets.push(NetSpec {
                tap: n.tap,
                mac,
                id: n.id,
            });
        }
        if let Some(rng) = self.rng {
            if !matches!(
                rng.src.as_str(),
                "/dev/urandom" | "/dev/random" | "getrandom"
            ) {
                return Err(ConfigError::field(
                    "rng.src",
                    format!(
                        "'{}': rvvmm's entropy is getrandom(2) (give /dev/urandom)",
                        rng.src
                    ),
                ));
            }
            config.rng = true;
            mark("rng");
        }
        if let Some(v) = self.vsock {
            let spec = VsockSpec {
                cid: v.cid,
                socket: PathBuf::from(v.socket),
            };
            check_vsock(&spec).map_err(|e| ConfigError::field("vsock", e))?;
            config.vsock = Some(spec);
            mark("vsock");
        }
        if !self.fs.is_empty() {
            mark("fs");
        }
        for (i, f) in self.fs.into_iter().enumerate() {
            let spec = FsSpec {
                tag: f.tag,
                socket: PathBuf::from(f.socket),
                queue_size: f.queue_size,
            };
            check_fs(&spec).map_err(|e| ConfigError::field(format!("fs[{i}]"), e))?;
            config.fs.push(spec);
        }
        if let Some(serial) = self.serial {
            if serial.mode != ConsoleMode::Tty {
                return Err(ConfigError::field(
                    "serial.mode",
                    "rvvmm's UART is always there, on its stdout: only Tty",
                ));
            }
            mark("serial");
        }
        if let Some(console) = self.console {
            config.console = match console.mode {
                ConsoleMode::Tty => ConsoleKind::Virtio,
                ConsoleMode::Off => ConsoleKind::Uart,
            };
            mark("console");
        }
        if let Some(r) = self.rvvmm {
            if let Some(dtb) = r.dtb {
                config.dtb = Some(dtb.into());
                mark("rvvmm.dtb");
            }
            if let Some(addr) = r.load_addr {
                config.load_addr = Some(addr);
                mark("rvvmm.load_addr");
            }
            config.irqchip = r.irqchip;
            config.testdev = r.testdev;
            mark("rvvmm.irqchip");
            mark("rvvmm.testdev");
            config.disable_sbi = lower(r.disable_sbi);
            config.disable_isa = lower(r.disable_isa);
            if !config.disable_sbi.is_empty() {
                mark("rvvmm.disable_sbi");
            }
            if !config.disable_isa.is_empty() {
                mark("rvvmm.disable_isa");
            }
        }
        config.check_values()?;
        Ok((config, sources))
    }
}

fn lower(names: Vec<String>) -> Vec<String> {
    names.into_iter().map(|n| n.to_ascii_lowercase()).collect()
}

/// The MAC of card `index` when none is given.
pub fn default_mac(index: usize) -> [u8; 6] {
    [0x52, 0x54, 0, 0x12, 0x34, 0x56u8.wrapping_add(index as u8)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
        parse(text.as_bytes(), Source::File)
            .unwrap_err()
            .to_string()
    }

    fn full() -> VmConfig {
        VmConfig {
            kernel: "/l2/Image".into(),
            load_addr: None,
            dtb: Some("/l2/virt.dtb".into()),
            initrd: Some("/l2/initrd".into()),
            memory: Some(512 << 20),
            cpus: Some(2),
            hugepages: true,
            cmdline: Some("console=ttyS0 quiet".into()),
            testdev: true,
            disks: vec![DiskSpec {
                path: "/l2/disk.img".into(),
                readonly: true,
                id: Some("root".into()),
            }],
            nets: vec![NetSpec {
                tap: "tap0".into(),
                mac: Some([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]),
                id: None,
            }],
            rng: true,
            vsock: Some(VsockSpec {
                cid: 3,
                socket: "/tmp/vm.vsock".into(),
            }),
            fs: vec![FsSpec {
                tag: "share".into(),
                socket: "/tmp/vfs.sock".into(),
                queue_size: 512,
            }],
            // Written out as memory.shared, which an fs device implies.
            shared_memory: true,
            console: ConsoleKind::Virtio,
            irqchip: IrqChipKind::Plic,
            disable_sbi: vec!["dbcn".into()],
            disable_isa: vec!["sstc".into(), "v".into()],
        }
    }

    #[test]
    fn a_config_survives_json_and_back() {
        let config = full();
        let resolved = Resolved {
            cpus: 2,
            memory: 512 << 20,
            dtb: None,
        };
        let text = serde_json::to_string(&VmConfigJson::new(&config, &resolved)).unwrap();
        let (back, sources) = parse(text.as_bytes(), Source::File).unwrap();
        let mut expected = config;
        // Written out, every device has its ID.
        expected.nets[0].id = Some("_net0".into());
        assert_eq!(back, expected);
        assert_eq!(sources.of("disks[0].path"), Some(&Source::File));
        assert_eq!(sources.of("cpus.max_vcpus"), Some(&Source::File));
    }

    #[test]
    fn the_json_has_cloud_hypervisors_field_names() {
        let config = VmConfig {
            kernel: "/l2/Image".into(),
            nets: vec![NetSpec {
                tap: "tap0".into(),
                ..Default::default()
            }],
            rng: true,
            ..Default::default()
        };
        let resolved = Resolved {
            cpus: 1,
            memory: 256 << 20,
            dtb: None,
        };
        let json = serde_json::to_value(VmConfigJson::new(&config, &resolved)).unwrap();
        assert_eq!(json["cpus"]["boot_vcpus"], 1);
        assert_eq!(json["memory"]["size"], 256u64 << 20);
        assert_eq!(json["payload"]["kernel"], "/l2/Image");
        assert_eq!(json["net"][0]["mac"], "52:54:00:12:34:56");
        assert_eq!(json["rng"]["src"], "/dev/urandom");
        assert_eq!(json["serial"]["mode"], "Tty");
        assert_eq!(json["console"]["mode"], "Off");
        assert_eq!(json["rvvmm"]["irqchip"], "auto");
        assert!(json.get("disks").is_none());
    }

    #[test]
    fn an_empty_config_is_all_defaults() {
        let (config, sources) = parse(b"{}", Source::File).unwrap();
        assert_eq!(config, VmConfig::default());
        assert!(sources.is_empty());
    }

    #[test]
    fn every_refusal_names_its_field() {
        for (text, expected) in [
            ("[1]", "a VM config is a JSON object"),
            ("{\"payload\": ", "not JSON: EOF while parsing"),
            ("{\"cpu\": {}}", "cpu: unknown field (rvvmm takes here: cpus, memory"),
            ("{\"cpus\": {\"boot_vcpus\": 1, \"threads\": 2}}", "cpus.threads: unknown field"),
            ("{\"disks\": [{\"path\": \"a\"}, {\"path\": \"b\", \"size\": 1}]}", "disks[1].size: unknown field"),
            ("{\"rvvmm\": {\"irqchip\": \"apic\"}}", "rvvmm.irqchip: unknown variant `apic`"),
            ("{\"cpus\": {\"boot_vcpus\": -1}}", "cpus.boot_vcpus: invalid value: integer `-1`"),
            ("{\"cpus\": {\"boot_vcpus\": 0}}", "cpus.boot_vcpus: 0 vCPUs: rvvmm runs 1 to 32"),
            ("{\"cpus\": {\"boot_vcpus\": 2, \"max_vcpus\": 4}}", "cpus.max_vcpus: 4 is not boot_vcpus (2): rvvmm has no CPU hotplug"),
            ("{\"memory\": {\"size\": 1099511627776}}", "memory.size: 1099511627776 bytes is more than"),
            ("{\"memory\": {\"size\": 268435457}}", "memory.size: 268435457 bytes is not a multiple of 4 KiB"),
            ("{\"memory\": {\"size\": 268435456, \"mergeable\": true}}", "memory.mergeable: true is Cloud Hypervisor's, and rvvmm cannot honour it (it takes only false)"),
            ("{\"memory\": {\"hugepages\": true}}", "memory: missing field `size`"),
            ("{\"payload\": {\"firmware\": \"fw.bin\"}}", "payload.firmware: \"fw.bin\" is Cloud Hypervisor's"),
            ("{\"payload\": {\"cmdline\": \"a\\u0001b\"}}", "payload.cmdline: the command line has a character that is not printable ASCII"),
            ("{\"net\": [{\"tap\": \"a/b\"}]}", "net[0].tap: 'a/b' is not an interface name"),
            ("{\"net\": [{\"tap\": \"t\", \"mac\": \"ff:ff:ff:ff:ff:ff\"}]}", "net[0].mac: 'ff:ff:ff:ff:ff:ff' is not a unicast MAC"),
            ("{\"net\": [{\"tap\": \"t\", \"num_queues\": 4}]}", "net[0].num_queues: 4 is Cloud Hypervisor's"),
            ("{\"disks\": [{\"path\": \"a\", \"id\": \"x\"}, {\"path\": \"b\", \"id\": \"x\"}]}", "disks[1].id: 'x' is empty, longer than 64 bytes or not unique"),
            ("{\"rng\": {\"src\": \"/dev/hwrng\"}}", "rng.src: '/dev/hwrng'"),
            ("{\"serial\": {\"mode\": \"Pty\"}}", "serial.mode: unknown variant `Pty`"),
            ("{\"serial\": {\"mode\": \"Off\"}}", "serial.mode: rvvmm's UART is always there"),
            ("{\"vsock\": {\"cid\": 2, \"socket\": \"/tmp/v\"}}", "vsock: cid 2: a guest's CID is 3 to 4294967294"),
            ("{\"fs\": [{\"tag\": \"0123456789012345678901234567890123456\", \"socket\": \"/tmp/v\"}]}", "fs[0]: tag '0123456789012345678901234567890123456': 1 to 36 bytes"),
            ("{\"fs\": [{\"tag\": \"t\", \"socket\": \"/tmp/v\", \"num_queues\": 2}]}", "fs[0].num_queues: 2 is Cloud Hypervisor's, and rvvmm cannot honour it (it takes only 1)"),
            ("{\"fs\": [{\"tag\": \"t\", \"socket\": \"/tmp/v\", \"queue_size\": 100}]}", "fs[0]: queue_size 100: a power of two up to 32768"),
            ("{\"vsock\": {\"cid\": 3, \"socket\": \"/tmp/v\", \"iommu\": true}}", "vsock.iommu: true is Cloud Hypervisor's, and rvvmm cannot honour it (it takes only false)"),
            ("{\"rvvmm\": {\"disable_isa\": [\"zzz\"]}}", "rvvmm.disable_isa: unknown ISA extension 'zzz'"),
            ("{\"rvvmm\": {\"disable_sbi\": [\"hsm\", \"nope\"]}}", "rvvmm.disable_sbi: unknown SBI extension 'nope' (one of: v01, time"),
            ("{\"rvvmm\": {\"kvm\": true}}", "rvvmm.kvm: unknown field (rvvmm takes here: dtb, load_addr, irqchip"),
        ] {
            let e = parse_err(text);
            assert!(e.contains(expected), "{text}: {e:?} lacks {expected:?}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn cloud_hypervisors_defaults_ask_for_nothing() {
        let text = r#"{
            "cpus": {"boot_vcpus": 2, "max_vcpus": 2, "kvm_hyperv": false, "nested": true},
            "memory": {"size": 268435456, "mergeable": false, "shared": false, "hugepages": false,
                       "thp": true, "zones": null},
            "payload": {"kernel": "/k", "firmware": null},
            "disks": [{"path": "/d", "readonly": false, "direct": false, "iommu": false,
                       "num_queues": 1, "queue_size": 128, "vhost_user": false, "id": "_disk0"}],
            "net": [{"tap": "tap0", "mac": "52:54:00:12:34:56", "num_queues": 2,
                     "queue_size": 256, "offload_tso": true}],
            "rng": {"src": "/dev/urandom", "iommu": false},
            "serial": {"mode": "Tty"}, "console": {"mode": "Off", "iommu": false},
            "iommu": false, "watchdog": false, "pvpanic": false, "fs": [], "pmem": null
        }"#;
        let (config, _) = parse(text.as_bytes(), Source::Api).unwrap();
        assert_eq!(config.cpus, Some(2));
        assert_eq!(config.disks[0].id.as_deref(), Some("_disk0"));
        assert!(config.rng);
        assert_eq!(config.console, ConsoleKind::Uart);
    }
}

#[cfg(test)]
mod examples {
    use super::*;

    /// Every config in resources/examples (the README's) parses, and says what its command
    /// line would.
    #[test]
    fn the_readme_examples_parse() {
        // Carried in the test executable, which also runs far from the tree (the lab's L1).
        const EXAMPLES: &[(&str, &str)] = &[
            (
                "linux-qemu-dtb.json",
                include_str!("../../resources/examples/linux-qemu-dtb.json"),
            ),
            (
                "linux-disk-net.json",
                include_str!("../../resources/examples/linux-disk-net.json"),
            ),
            (
                "bare-metal.json",
                include_str!("../../resources/examples/bare-metal.json"),
            ),
        ];
        let read = |name: &str| {
            let (_, text) = EXAMPLES.iter().find(|(n, _)| *n == name).unwrap();
            parse(text.as_bytes(), Source::File)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .0
        };
        let qemu = read("linux-qemu-dtb.json");
        assert_eq!((qemu.cpus, qemu.memory), (Some(2), Some(1 << 30)));
        assert_eq!(qemu.dtb.as_deref(), Some(Path::new("virt.dtb")));
        let disk = read("linux-disk-net.json");
        assert_eq!(disk.disks[0].id.as_deref(), Some("root"));
        assert_eq!(disk.nets[0].mac, Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert!(disk.rng);
        assert_eq!(
            (disk.disable_isa.as_slice(), disk.disable_sbi.as_slice()),
            (&["zicboz".to_string()][..], &["sta".to_string()][..])
        );
        let bare = read("bare-metal.json");
        assert_eq!(bare.kernel, Path::new("guest.bin"));
        assert_eq!(bare.memory, Some(64 << 20));
        // Where the tree is at hand: a new example needs a check here.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/resources/examples");
        if let Ok(entries) = std::fs::read_dir(dir) {
            assert_eq!(
                entries.count(),
                EXAMPLES.len(),
                "a new example needs a check here"
            );
        }
    }
}
