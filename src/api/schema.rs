//! The API's own JSON bodies, shaped as Cloud Hypervisor's (field names from its OpenAPI
//! file). The VM's configuration is [`crate::config::json`].

use serde::Serialize;

use crate::config::json::VmConfigJson;

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
