//! The lab's kernels: Debian stable's, pinned by sha256, and the newest riscv64 kernel in
//! Debian's unstable suite, looked up in that suite's index each time the lab runs (files of
//! unstable leave the archive when superseded, so no pin would last), checked against the
//! sha256 the index gives, and kept in the cache as the fallback for when the archive has
//! moved on or cannot be reached. Each runs as L1 (its kvm.ko is the KVM rvvmm meets) and as
//! the L2 Linux guest.

use std::fs;
use std::path::{Path, PathBuf};

use crate::lab::{self, Pinned};

/// Which kernel L1 and the L2 Linux guest run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Debian stable's (trixie), pinned: [`STABLE_DEB`].
    Stable,
    /// The newest riscv64 kernel in [`NEWEST_SUITE`], whatever it is today.
    Newest,
}

impl Kernel {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kernel::Stable => "stable",
            Kernel::Newest => "newest",
        }
    }

    /// `stable`, `newest` or `both`, as `--kernel` takes them.
    pub(crate) fn parse(arg: Option<&String>) -> Result<Vec<Kernel>, String> {
        match arg.map(String::as_str) {
            Some("stable") => Ok(vec![Kernel::Stable]),
            Some("newest") => Ok(vec![Kernel::Newest]),
            Some("both") => Ok(vec![Kernel::Stable, Kernel::Newest]),
            other => Err(format!(
                "--kernel takes stable, newest or both, not {other:?}"
            )),
        }
    }
}

/// Debian stable's kernel: the Image in `boot/vmlinux-*`, modules beside it in one package.
const STABLE_DEB: Pinned = Pinned {
    pool_path: "pool/main/l/linux/linux-image-6.12.107+deb13-riscv64_6.12.107-1_riscv64.deb",
    sha256: "abe9f65d74b434692149482b031db7a2aaf832921e09f69f775293c0e0c5799c",
};
const STABLE_RELEASE: &str = "6.12.107+deb13-riscv64";

/// The suite whose newest kernel the lab runs: unstable carries Debian's newest kernels
/// (7.2.x in December 2026), packaged as `linux-binary-RELEASE` (the Image at
/// `usr/lib/modules/RELEASE/vmlinuz`) and `linux-modules-RELEASE`.
const NEWEST_SUITE: &str = "sid";

/// A kernel unpacked in the cache.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub kernel: Kernel,
    /// `uname -r`, e.g. 6.12.107+deb13-riscv64.
    pub release: String,
    /// The Image (a PE/EFI file that also boots as a RISC-V Linux Image).
    pub image: PathBuf,
    /// `usr/lib/modules/RELEASE/kernel`: where each module's `.ko.xz` is.
    pub modules: PathBuf,
}

/// Fetches (or finds in the cache) and unpacks `kernel`.
pub fn unpack(kernel: Kernel, mirror: &str, cache: &Path) -> Result<Unpacked, String> {
    match kernel {
        Kernel::Stable => {
            let dir = lab::unpack_deb(
                &lab::fetch_pinned(mirror, &STABLE_DEB, cache)?,
                &cache.join("kernel"),
            )?;
            Ok(Unpacked {
                kernel,
                release: STABLE_RELEASE.into(),
                image: dir.join(format!("boot/vmlinux-{STABLE_RELEASE}")),
                modules: dir.join(format!("usr/lib/modules/{STABLE_RELEASE}/kernel")),
            })
        }
        Kernel::Newest => newest(mirror, &cache.join("newest")),
    }
}

/// The record of the newest kernel last unpacked: its release, on one line.
const CURRENT: &str = "current";

fn newest(mirror: &str, dir: &Path) -> Result<Unpacked, String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let fetched = look_up(mirror, dir).and_then(|found| {
        let release_dir = dir.join(&found.release);
        for (deb, sub) in [(&found.binary, "binary"), (&found.modules, "modules")] {
            let file = lab::fetch_pool(mirror, &deb.0, &deb.1, dir)?;
            lab::unpack_deb(&file, &release_dir.join(sub))?;
        }
        Ok(found)
    });
    let release = match fetched {
        Ok(found) => {
            fs::write(dir.join(CURRENT), &found.release).map_err(|e| e.to_string())?;
            forget_superseded(dir, &found);
            found.release
        }
        Err(why) => {
            let cached = fs::read_to_string(dir.join(CURRENT))
                .map(|s| s.trim().to_string())
                .ok()
                .filter(|r| !r.is_empty() && unpacked_in(dir, r).image.exists());
            let Some(release) = cached else {
                return Err(format!(
                    "the newest kernel: {why}; and no earlier one is in {}",
                    dir.display()
                ));
            };
            eprintln!(
                "lab: the newest kernel could not be fetched ({why}); using the cached {release}"
            );
            release
        }
    };
    Ok(unpacked_in(dir, &release))
}

fn unpacked_in(dir: &Path, release: &str) -> Unpacked {
    let at = dir.join(release);
    Unpacked {
        kernel: Kernel::Newest,
        release: release.to_string(),
        image: at.join(format!("binary/usr/lib/modules/{release}/vmlinuz")),
        modules: at.join(format!("modules/usr/lib/modules/{release}/kernel")),
    }
}

/// What the suite's index names as its newest riscv64 kernel.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    release: String,
    /// (pool path, sha256) of `linux-binary-RELEASE` and of `linux-modules-RELEASE`.
    binary: (String, String),
    modules: (String, String),
}

/// Reads the suite's `Packages.xz` (fetched anew: it is 10 MiB and changes daily).
fn look_up(mirror: &str, dir: &Path) -> Result<Found, String> {
    let xz = dir.join("Packages.xz");
    let _ = fs::remove_file(&xz);
    crate::host::download(
        &format!("{mirror}/dists/{NEWEST_SUITE}/main/binary-riscv64/Packages.xz"),
        &xz,
    )?;
    let text = lab::decompress_xz(&xz, &dir.join("Packages"))?;
    newest_in(&String::from_utf8_lossy(&text))
}

/// The highest-versioned `linux-binary-*-riscv64` in a Packages index whose
/// `linux-modules-*` is there too.
fn newest_in(index: &str) -> Result<Found, String> {
    let mut binaries = Vec::new();
    let mut modules = Vec::new();
    for stanza in index.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
                .map(str::trim)
        };
        let (Some(package), Some(file), Some(sha)) =
            (field("Package"), field("Filename"), field("SHA256"))
        else {
            continue;
        };
        let entry = (file.to_string(), sha.to_string());
        if let Some(rel) = package.strip_prefix("linux-binary-") {
            binaries.push((rel.to_string(), entry));
        } else if let Some(rel) = package.strip_prefix("linux-modules-") {
            modules.push((rel.to_string(), entry));
        }
    }
    binaries.retain(|(rel, _)| rel.ends_with("-riscv64"));
    binaries.sort_by_key(|(rel, _)| version_key(rel));
    let (release, binary) = binaries.pop().ok_or(format!(
        "{NEWEST_SUITE}'s index names no linux-binary-*-riscv64 package"
    ))?;
    let modules = modules
        .into_iter()
        .find(|(rel, _)| *rel == release)
        .map(|(_, m)| m)
        .ok_or(format!(
            "{NEWEST_SUITE}'s index has linux-binary-{release} but no linux-modules-{release}"
        ))?;
    Ok(Found {
        release,
        binary,
        modules,
    })
}

/// 7.2.13+deb14-riscv64 -> [7, 2, 13, 14]: the numbers, in order.
pub(crate) fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Removes the cached files of any other release (each is ~150 MiB unpacked).
fn forget_superseded(dir: &Path, found: &Found) {
    let keep: Vec<String> = [&found.binary.0, &found.modules.0]
        .iter()
        .filter_map(|p| p.rsplit('/').next().map(String::from))
        .chain([found.release.clone(), CURRENT.into()])
        .chain(["Packages.xz".into(), "Packages".into()])
        .collect();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) {
            let path = entry.path();
            let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
        }
    }
}

/// The modules the L2 guest loads, by where they are in one kernel or another (crc16 moved to
/// lib/crc/ and crc32c to crypto/crc32c-cryptoapi after 6.12). Its /init loads them in order.
const L2_MODULES: &[&[&str]] = &[
    &["drivers/virtio/virtio_mmio"],
    &["drivers/block/virtio_blk"],
    &["drivers/char/hw_random/virtio-rng"],
    &["net/core/failover"],
    &["drivers/net/net_failover"],
    &["drivers/net/virtio_net"],
    &["lib/crc16", "lib/crc/crc16"],
    &["crypto/crc32c_generic", "crypto/crc32c-cryptoapi"],
    &["fs/mbcache"],
    &["fs/jbd2/jbd2"],
    &["fs/ext4/ext4"],
    &["net/vmw_vsock/vsock"],
    &["net/vmw_vsock/vmw_vsock_virtio_transport_common"],
    &["net/vmw_vsock/vmw_vsock_virtio_transport"],
];

impl Unpacked {
    /// A module of this kernel, decompressed into `out`: (file name, bytes).
    pub fn module(&self, path: &str, out: &Path) -> Result<(String, Vec<u8>), String> {
        let name = format!("{}.ko", path.rsplit('/').next().unwrap_or(path));
        let bytes = lab::decompress_xz(
            &self.modules.join(format!("{path}.ko.xz")),
            &out.join(&name),
        )?;
        Ok((name, bytes))
    }

    /// L2's modules, decompressed into `out`.
    pub fn l2_modules(&self, out: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
        fs::create_dir_all(out).map_err(|e| e.to_string())?;
        L2_MODULES
            .iter()
            .map(|places| {
                let path = places
                    .iter()
                    .find(|p| self.modules.join(format!("{p}.ko.xz")).exists())
                    .ok_or(format!(
                        "kernel {} has no module at {}",
                        self.release,
                        places.join(" or ")
                    ))?;
                self.module(path, out)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanza(package: &str, file: &str) -> String {
        format!(
            "Package: {package}\nVersion: 1\nFilename: {file}\nSize: 1\nSHA256: sha-of-{package}\n"
        )
    }

    #[test]
    fn the_index_gives_the_highest_release_with_its_modules() {
        let index = [
            stanza("linux-binary-7.2.9+deb14-riscv64", "pool/b9.deb"),
            stanza("linux-modules-7.2.9+deb14-riscv64", "pool/m9.deb"),
            stanza("linux-binary-7.2.13+deb14-riscv64", "pool/b13.deb"),
            stanza("linux-binary-7.2.13+deb14-riscv64-dbg", "pool/dbg.deb"),
            stanza("linux-modules-7.2.13+deb14-riscv64", "pool/m13.deb"),
            stanza("busybox-static", "pool/bb.deb"),
        ]
        .join("\n");
        let found = newest_in(&index).unwrap();
        assert_eq!(found.release, "7.2.13+deb14-riscv64");
        assert_eq!(
            found.binary,
            (
                "pool/b13.deb".into(),
                "sha-of-linux-binary-7.2.13+deb14-riscv64".into()
            )
        );
        assert_eq!(found.modules.0, "pool/m13.deb");
    }

    #[test]
    fn an_index_without_a_whole_kernel_is_an_error() {
        let only_binary = stanza("linux-binary-7.3.1+deb14-riscv64", "pool/b.deb");
        let err = newest_in(&only_binary).unwrap_err();
        assert!(
            err.contains("no linux-modules-7.3.1+deb14-riscv64"),
            "{err}"
        );
        assert!(newest_in("Package: gcc\n")
            .unwrap_err()
            .contains("no linux-binary"));
    }

    #[test]
    fn kernel_flags_parse() {
        let arg = |s: &str| Kernel::parse(Some(&s.to_string()));
        assert_eq!(arg("both").unwrap(), [Kernel::Stable, Kernel::Newest]);
        assert_eq!(arg("newest").unwrap(), [Kernel::Newest]);
        assert!(arg("7.2").unwrap_err().contains("stable, newest or both"));
    }
}
