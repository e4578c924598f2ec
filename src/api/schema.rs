//! The API's JSON bodies, shaped as Cloud Hypervisor's (field names from its OpenAPI file), for
//! what rvvmm has; what is RISC-V specific and has no counterpart sits under `rvvmm`.

use serde::Serialize;

use crate::config::{ConsoleKind, IrqChipKind, VmConfig};

/// `GET vmm.ping`.
#[derive(Debug, Clone, Serialize)]
pub struct VmmPingResponse {
    /// rvvmm's version and build.
    pub build_version: String,
    /// rvvmm's version.
    pub version: String,
    /// The VMM's process ID.
    pub pid: u32,
    /// Optional features compiled in.
    pub features: Vec<String>,
}

impl VmmPingResponse {
    /// This process's answer.
    pub fn here() -> Self {
        let version = env!("CARGO_PKG_VERSION").to_string();
        VmmPingResponse {
            build_version: format!("rvvmm v{version}"),
            version,
            pid: std::process::id(),
            features: Vec::new(),
        }
    }
}

/// A VM's state (Cloud Hypervisor's `VmState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VmState {
    /// Configured, not booted.
    Created,
    /// Its vCPUs run.
    Running,
    /// Stopped by `vm.shutdown`.
    Shutdown,
    /// Its vCPUs and devices are parked.
    Paused,
}

/// `GET vm.info`.
#[derive(Debug, Clone, Serialize)]
pub struct VmInfo {
    /// The VM's configuration.
    pub config: VmConfigJson,
    /// Its state.
    pub state: VmState,
    /// Bytes of guest RAM.
    pub memory_actual_size: u64,
}

/// `cpus`.
#[derive(Debug, Clone, Serialize)]
pub struct CpusConfig {
    /// vCPUs at boot.
    pub boot_vcpus: u32,
    /// Most vCPUs (rvvmm has no CPU hotplug: the same).
    pub max_vcpus: u32,
}

/// `memory`.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryConfig {
    /// Bytes.
    pub size: u64,
    /// Backed by hugetlb pages.
    pub hugepages: bool,
}

/// `payload`.
#[derive(Debug, Clone, Serialize)]
pub struct PayloadConfig {
    /// Kernel file.
    pub kernel: String,
    /// Kernel command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Initial ramdisk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<String>,
}

/// `disks[]`.
#[derive(Debug, Clone, Serialize)]
pub struct DiskConfig {
    /// Image file.
    pub path: String,
    /// Guest writes refused.
    pub readonly: bool,
    /// The device's ID.
    pub id: String,
}

/// `net[]`.
#[derive(Debug, Clone, Serialize)]
pub struct NetConfig {
    /// Tap interface.
    pub tap: String,
    /// MAC address.
    pub mac: String,
    /// The device's ID.
    pub id: String,
}

/// `rng`.
#[derive(Debug, Clone, Serialize)]
pub struct RngConfig {
    /// Where the entropy comes from.
    pub src: String,
}

/// `serial` / `console`.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleConfig {
    /// `Tty` (rvvmm's stdin/stdout) or `Off`.
    pub mode: String,
}

/// What rvvmm has that Cloud Hypervisor's `VmConfig` does not.
#[derive(Debug, Clone, Serialize)]
pub struct RvvmmConfig {
    /// The user's device tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtb: Option<String>,
    /// `auto`, `aia` or `plic`.
    pub irqchip: String,
    /// The MMIO test device.
    pub testdev: bool,
}

/// `VmConfig`, the part rvvmm implements.
#[derive(Debug, Clone, Serialize)]
pub struct VmConfigJson {
    /// vCPUs.
    pub cpus: CpusConfig,
    /// RAM.
    pub memory: MemoryConfig,
    /// What boots.
    pub payload: PayloadConfig,
    /// virtio-blk disks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskConfig>,
    /// virtio-net cards.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub net: Vec<NetConfig>,
    /// virtio-rng.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rng: Option<RngConfig>,
    /// The UART.
    pub serial: ConsoleConfig,
    /// virtio-console.
    pub console: ConsoleConfig,
    /// RISC-V specifics.
    pub rvvmm: RvvmmConfig,
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl VmConfigJson {
    /// The description of `config` with `ram_size` bytes of RAM (the size in effect).
    pub fn new(config: &VmConfig, ram_size: u64) -> Self {
        let tty = |on: bool| ConsoleConfig {
            mode: if on { "Tty" } else { "Off" }.into(),
        };
        VmConfigJson {
            cpus: CpusConfig {
                boot_vcpus: config.cpus,
                max_vcpus: config.cpus,
            },
            memory: MemoryConfig {
                size: ram_size,
                hugepages: config.hugepages,
            },
            payload: PayloadConfig {
                kernel: path(&config.kernel),
                cmdline: config.cmdline.clone(),
                initramfs: config.initrd.as_deref().map(path),
            },
            disks: config
                .disks
                .iter()
                .enumerate()
                .map(|(i, d)| DiskConfig {
                    path: path(&d.path),
                    readonly: d.readonly,
                    id: format!("_disk{i}"),
                })
                .collect(),
            net: config
                .nets
                .iter()
                .enumerate()
                .map(|(i, n)| NetConfig {
                    tap: n.tap.clone(),
                    mac: mac_text(n.mac.unwrap_or([0x52, 0x54, 0, 0x12, 0x34, 0x56 + i as u8])),
                    id: format!("_net{i}"),
                })
                .collect(),
            rng: config.rng.then(|| RngConfig {
                src: "getrandom".into(),
            }),
            serial: tty(true),
            console: tty(config.console == ConsoleKind::Virtio),
            rvvmm: RvvmmConfig {
                dtb: config.dtb.as_deref().map(path),
                irqchip: match config.irqchip {
                    IrqChipKind::Auto => "auto",
                    IrqChipKind::Aia => "aia",
                    IrqChipKind::Plic => "plic",
                }
                .into(),
                testdev: config.testdev,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NetSpec;

    #[test]
    fn the_config_has_cloud_hypervisors_field_names() {
        let config = VmConfig {
            kernel: "/l2/Image".into(),
            cpus: 2,
            cmdline: Some("console=ttyS0".into()),
            nets: vec![NetSpec {
                tap: "tap0".into(),
                mac: None,
            }],
            rng: true,
            ..Default::default()
        };
        let json = serde_json::to_value(VmInfo {
            config: VmConfigJson::new(&config, 256 << 20),
            state: VmState::Running,
            memory_actual_size: 256 << 20,
        })
        .unwrap();
        assert_eq!(json["state"], "Running");
        assert_eq!(json["config"]["cpus"]["boot_vcpus"], 2);
        assert_eq!(json["config"]["memory"]["size"], 256u64 << 20);
        assert_eq!(json["config"]["payload"]["kernel"], "/l2/Image");
        assert_eq!(json["config"]["payload"]["cmdline"], "console=ttyS0");
        assert_eq!(json["config"]["net"][0]["mac"], "52:54:00:12:34:56");
        assert_eq!(json["config"]["rng"]["src"], "getrandom");
        assert_eq!(json["config"]["serial"]["mode"], "Tty");
        assert_eq!(json["config"]["console"]["mode"], "Off");
        assert_eq!(json["config"]["rvvmm"]["irqchip"], "auto");
        assert!(json["config"].get("disks").is_none());
    }
}
