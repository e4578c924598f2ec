//! Where the lab keeps things.

use std::path::PathBuf;

/// The workspace root (the parent of xtask/).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Cached downloads, unpacked kernel and the QEMU chroot: kept across runs and clones.
/// `RVVMM_LAB_CACHE`, else `$XDG_CACHE_HOME/rvvmm`, else `~/.cache/rvvmm`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RVVMM_LAB_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("rvvmm")
}

/// Per-run outputs: guests, initramfs, console logs (under target/).
pub fn work_dir() -> PathBuf {
    root().join("target").join("lab")
}
