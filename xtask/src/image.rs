//! `cargo xtask image`: the container image that ships rvvmm for riscv64 hosts (the top-level
//! Dockerfile: `FROM scratch`, the static binary, `ENTRYPOINT ["/rvvmm"]`), built with
//! Debian's buildah, then checked: the image says it is for riscv64, its entry point is
//! /rvvmm, and that file, run as the image runs it (in a buildah container of the image,
//! through qemu-user on a host that is not riscv64), is this rvvmm and prints its version.

use std::fs;
use std::process::Command;

use crate::host::{self, RISCV_TARGET};
use crate::paths;

/// The image's name in buildah's local storage.
pub const IMAGE: &str = "localhost/rvvmm:latest";

/// Builds the image and checks it; prints the build's last lines and the checks.
pub fn run() -> Result<bool, String> {
    host::ensure_tools()?;
    for (pkg, program) in [("buildah", "buildah")] {
        if !host::have(program) {
            eprintln!("image: installing {pkg}");
            host::run_quiet(
                Command::new("apt-get")
                    .args(["install", "-y", "-q", "--no-install-recommends", pkg])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
        }
    }
    if !cfg!(target_arch = "riscv64") {
        host::ensure_riscv64_binfmt()?;
    }
    let root = paths::root();
    host::run_visible(host::cargo().current_dir(&root).args([
        "build",
        "--quiet",
        "--release",
        "--package",
        "rvvmm",
        "--bin",
        "rvvmm",
        "--target",
        RISCV_TARGET,
    ]))?;
    // A context of the binary alone: the repository (and target/) is not sent.
    let context = paths::work_dir().join("image");
    let _ = fs::remove_dir_all(&context);
    fs::create_dir_all(&context).map_err(|e| e.to_string())?;
    fs::copy(
        root.join(format!("target/{RISCV_TARGET}/release/rvvmm")),
        context.join("rvvmm"),
    )
    .map_err(|e| format!("cannot stage rvvmm: {e}"))?;
    let build = host::run_quiet(
        Command::new("buildah")
            .args([
                "bud",
                "--platform",
                "linux/riscv64",
                "--layers=false",
                "-t",
                IMAGE,
                "-f",
            ])
            .arg(root.join("Dockerfile"))
            .arg(&context),
    )?;
    for line in build.lines().filter(|l| l.contains("Successfully tagged")) {
        println!("image: buildah: {line}");
    }
    let inspect = |format: &str| -> Result<String, String> {
        Ok(host::run_quiet(
            Command::new("buildah").args(["inspect", "--type", "image", "--format", format, IMAGE]),
        )?
        .trim()
        .to_string())
    };
    let arch = inspect("{{.OCIv1.Architecture}}")?;
    let entry = inspect("{{.OCIv1.Config.Entrypoint}}")?;
    println!("image: {IMAGE}: architecture {arch}, entry point {entry}");
    // Run the entry point as the image runs it: a container of the image, `--version`.
    let container = host::run_quiet(Command::new("buildah").args(["from", IMAGE]))?;
    let container = container.trim();
    let version = host::run_quiet(Command::new("buildah").args([
        "run",
        // chroot isolation: buildah's own, no OCI runtime (crun cannot run on a host whose
        // cgroups are in hybrid mode, as this workplace's are).
        "--isolation",
        "chroot",
        container,
        "--",
        "/rvvmm",
        "--version",
    ]));
    let _ = host::run_quiet(Command::new("buildah").args(["rm", container]));
    let _ = host::run_quiet(Command::new("buildah").args(["rmi", "--prune"]));
    let version = version?.trim().to_string();
    println!("image: /rvvmm --version in a container of the image: {version}");
    let manifest = fs::read_to_string(root.join("Cargo.toml")).map_err(|e| e.to_string())?;
    let crate_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or("?");
    let want = format!("rvvmm {crate_version}");
    let ok = arch == "riscv64" && entry == "[/rvvmm]" && version == want;
    if !ok {
        println!("image: FAILED: expected architecture riscv64, entry point [/rvvmm] and {want:?}");
    }
    Ok(ok)
}
