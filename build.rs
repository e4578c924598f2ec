//! Builds the bare-metal test guests that tests/kvm.rs boots on real KVM, when the crate is
//! built for riscv64 (natively with the host's `cc`, else with Debian's cross compiler
//! `riscv64-linux-gnu-gcc`; `RVVMM_GUEST_CC` overrides). The test executables carry the guests
//! (`include_bytes!`), so they run on a riscv64 machine that has no compiler: the lab's L1.
//! Building for another architecture builds nothing. A guest that does not compile does not
//! fail the build of rvvmm: the KVM tests then say why they cannot run.

use std::path::{Path, PathBuf};

include!("resources/guests/compile.rs");

/// The guests the KVM tests boot: (name, source, extra C flags).
const KVM_TEST_GUESTS: &[(&str, &str, &str)] = &[
    ("hello", "hello", ""),
    ("boot_regs", "boot_regs", ""),
    ("dbcn", "dbcn", ""),
    ("hypercall", "hypercall", ""),
    ("mmio", "mmio", ""),
    ("smp", "smp", ""),
    ("reboot", "reboot", ""),
    ("sysfail", "sysfail", ""),
    ("finisher", "finisher", ""),
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=resources/guests");
    println!("cargo:rerun-if-env-changed=RVVMM_GUEST_CC");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("riscv64") {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let generated = match build_all(&out.join("guests")) {
        Ok(entries) => format!(
            "/// Why the guests are missing, if they are.\npub const NOT_BUILT: Option<&str> = None;\n\
             /// A test guest's flat binary.\npub fn guest(name: &str) -> &'static [u8] {{\n    match name {{\n{entries}        _ => panic!(\"no test guest {{name}}\"),\n    }}\n}}\n"
        ),
        Err(why) => {
            println!("cargo:warning=the KVM tests' guests were not built: {why}");
            format!(
                "/// Why the guests are missing, if they are.\npub const NOT_BUILT: Option<&str> = Some({why:?});\n\
                 /// A test guest's flat binary.\npub fn guest(name: &str) -> &'static [u8] {{\n    panic!(\"no test guest {{name}}\")\n}}\n"
            )
        }
    };
    std::fs::write(out.join("kvm_guests.rs"), generated).expect("OUT_DIR is writable");
}

/// Compiles every guest to `dir/NAME.bin`; returns the `match` arms that include them.
fn build_all(dir: &Path) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let native = std::env::var("HOST").is_ok_and(|h| h.starts_with("riscv64"));
    let cc = std::env::var("RVVMM_GUEST_CC").unwrap_or_else(|_| {
        if native {
            "cc"
        } else {
            "riscv64-linux-gnu-gcc"
        }
        .to_string()
    });
    let objcopy = if native {
        "objcopy"
    } else {
        "riscv64-linux-gnu-objcopy"
    };
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("resources/guests");
    let mut arms = String::new();
    for (name, source, extra) in KVM_TEST_GUESTS {
        let elf = dir.join(format!("{name}.elf"));
        let bin = dir.join(format!("{name}.bin"));
        run(&mut guest_compile(&cc, &src, source, extra, &elf))?;
        run(std::process::Command::new(objcopy)
            .args(["-O", "binary"])
            .arg(&elf)
            .arg(&bin))?;
        arms.push_str(&format!(
            "        {name:?} => include_bytes!({:?}),\n",
            bin.display().to_string()
        ));
    }
    Ok(arms)
}

fn run(cmd: &mut std::process::Command) -> Result<(), String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{program} failed: {}",
            err.lines().next().unwrap_or("").trim()
        ));
    }
    Ok(())
}
