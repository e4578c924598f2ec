//! Loading the kernel into guest RAM.
//!
//! Files are read straight into guest RAM at each boot (nothing is kept in rvvmm's own memory:
//! a 30 MiB Image would otherwise double the VMM's footprint and its startup copying).
//!
//! Where a kernel goes, as on QEMU virt with OpenSBI (fw_jump) and on kvmtool, so that what
//! runs there runs here:
//! - a file with the RISC-V Linux Image header (magic "RSC\x05" at offset 0x38, see the
//!   kernel's `Documentation/arch/riscv/boot-image-header.rst`) at RAM base + text_offset;
//! - an ELF (a bare-metal guest, U-Boot's `uboot.elf`, kvm-unit-tests' `.elf`) by its program
//!   headers' physical addresses, entered at its entry point;
//! - anything else is a flat binary, loaded and entered where an S-mode payload goes, RAM base
//!   + 2 MiB (U-Boot's qemu-riscv64_smode `u-boot.bin` is linked there), or at `--load-addr`.
//!
//! ELF is parsed here by hand: linux-loader's ELF loader builds only for x86 hosts.
//! The header is classified here by hand, on every host: linux-loader's PE loader only builds
//! for riscv64 (and aarch64) hosts, and the checks (text_offset alignment, the footprint that
//! must fit below the dtb, other formats refused with a hint) must be tested on x86_64 too. On
//! riscv64 the Image itself is then loaded by linux-loader's PE loader, which checks the magic
//! again and copies the file to RAM base + text_offset; a flat binary has no header for it.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::riscv64::layout::{fdt_addr, RAM_BASE, RAM_MAX};

/// Errors loading a kernel.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The file could not be read.
    #[error("cannot read kernel {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("kernel {0} is empty")]
    Empty(PathBuf),
    /// The image does not fit below the device tree.
    #[error("kernel {path} needs {need} bytes at {load:#x}, but guest RAM has room for {room} below the device tree; raise --memory")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Bytes the image occupies.
        need: u64,
        /// Load address.
        load: u64,
        /// Bytes available.
        room: u64,
    },
    /// A Linux Image header with an impossible text_offset.
    #[error("kernel {path} has a Linux Image header with text_offset {offset:#x}, which {why}")]
    BadTextOffset {
        /// The file.
        path: PathBuf,
        /// The offset.
        offset: u64,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An ELF rvvmm cannot load.
    #[error("kernel {path}: {what}")]
    BadElf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// `--load-addr` cannot be used.
    #[error("--load-addr {addr:#x}: {what}")]
    LoadAddr {
        /// The address.
        addr: u64,
        /// What is wrong.
        what: String,
    },
    /// A format rvvmm cannot boot.
    #[error("kernel {path} is {what}; rvvmm boots a RISC-V Linux Image (arch/riscv/boot/Image) or a flat binary")]
    Unloadable {
        /// The file.
        path: PathBuf,
        /// What it looks like.
        what: &'static str,
    },
    /// The initrd could not be read.
    #[error("cannot read initrd {path}: {source}")]
    ReadInitrd {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The initrd does not fit between the kernel and the device tree.
    #[error("initrd {path} is {len} bytes, but only {room} are free between the kernel and the device tree; raise --memory")]
    InitrdTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// Bytes free.
        room: u64,
    },
    /// Writing guest RAM failed.
    #[error("cannot write the kernel into guest RAM: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// What kind of kernel a file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelKind {
    /// A RISC-V Linux Image.
    LinuxImage {
        /// Offset from the RAM base (2 MiB-aligned).
        text_offset: u64,
        /// Bytes the kernel occupies once running (bss included).
        image_size: u64,
    },
    /// A flat binary, loaded and entered at `load`.
    Flat {
        /// Where it goes.
        load: u64,
    },
    /// An ELF executable.
    Elf {
        /// Where it is entered.
        entry: u64,
        /// Its loadable segments.
        segments: Vec<Segment>,
    },
}

/// A loadable ELF segment (`PT_LOAD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Offset in the file.
    pub offset: u64,
    /// Guest-physical address.
    pub paddr: u64,
    /// Bytes in the file.
    pub filesz: u64,
    /// Bytes in memory (the rest is zeroed).
    pub memsz: u64,
}

/// Where a flat binary goes: where an S-mode payload goes on QEMU virt and kvmtool.
pub const FLAT_LOAD_ADDR: u64 = RAM_BASE + (2 << 20);

/// A kernel file, classified, ready to be placed.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The file it came from.
    pub path: PathBuf,
    /// Its size in bytes.
    pub len: u64,
    /// Its kind.
    pub kind: KernelKind,
}

/// Opens `path` and returns it with its size; anything but a readable regular file is an
/// error (a FIFO is refused at once, not waited on).
fn open_sized(path: &Path) -> std::io::Result<(File, u64)> {
    let file = crate::files::open_regular(path, false)?;
    let len = file.metadata()?.len();
    Ok((file, len))
}

/// Reads all of `path` into guest RAM at `addr`, expecting `len` bytes.
fn read_into(memory: &GuestMemoryMmap, addr: u64, path: &Path, len: u64) -> std::io::Result<()> {
    let (mut file, now) = open_sized(path)?;
    if now != len {
        return Err(std::io::Error::other(format!(
            "{} changed size while rvvmm ran",
            path.display()
        )));
    }
    memory
        .read_exact_volatile_from(GuestAddress(addr), &mut file, len as usize)
        .map_err(std::io::Error::other)
}

const IMAGE_MAGIC2: &[u8; 4] = b"RSC\x05";
const IMAGE_HEADER_SIZE: usize = 64;

impl Kernel {
    /// Opens and classifies `path` (reading only its header).
    pub fn read(path: &Path) -> Result<Self, LoaderError> {
        let read_err = |source| LoaderError::Read {
            path: path.to_owned(),
            source,
        };
        let (mut file, len) = open_sized(path).map_err(read_err)?;
        if len == 0 {
            return Err(LoaderError::Empty(path.to_owned()));
        }
        let mut bytes = vec![0u8; IMAGE_HEADER_SIZE.min(len as usize)];
        file.read_exact(&mut bytes).map_err(read_err)?;
        if bytes.starts_with(ELF_MAGIC) {
            // The program headers follow; read as much as they can take (bounded).
            let more = (len.min(MAX_ELF_HEADERS) as usize).saturating_sub(bytes.len());
            let mut rest = vec![0u8; more];
            file.read_exact(&mut rest).map_err(read_err)?;
            bytes.extend_from_slice(&rest);
        }
        Self::from_header(path, &bytes, len)
    }

    /// Places a flat binary at `addr` instead of [`FLAT_LOAD_ADDR`] (`--load-addr`).
    pub fn at(mut self, addr: u64) -> Result<Self, LoaderError> {
        let refuse = |what: &str| {
            Err(LoaderError::LoadAddr {
                addr,
                what: what.into(),
            })
        };
        match self.kind {
            KernelKind::Flat { ref mut load } => {
                if addr < RAM_BASE {
                    return refuse("is below guest RAM (0x80000000)");
                }
                if !addr.is_multiple_of(4096) {
                    return refuse("is not 4 KiB-aligned");
                }
                *load = addr;
                Ok(self)
            }
            KernelKind::LinuxImage { .. } => {
                refuse("applies to flat binaries; a Linux Image says where it goes")
            }
            KernelKind::Elf { .. } => refuse("applies to flat binaries; an ELF says where it goes"),
        }
    }

    /// Classifies a kernel from its first bytes and its size.
    pub fn from_header(path: &Path, bytes: &[u8], len: u64) -> Result<Self, LoaderError> {
        if let Some(what) = unloadable(bytes) {
            return Err(LoaderError::Unloadable {
                path: path.to_owned(),
                what,
            });
        }
        let kind = if bytes.starts_with(ELF_MAGIC) {
            parse_elf(bytes, len).map_err(|what| LoaderError::BadElf {
                path: path.to_owned(),
                what,
            })?
        } else {
            classify(bytes)
        };
        if let KernelKind::LinuxImage { text_offset, .. } = kind {
            let why = if text_offset % (2 << 20) != 0 {
                Some("is not 2 MiB-aligned")
            } else if text_offset >= RAM_MAX {
                Some("lies beyond any guest RAM rvvmm can map (510 GiB)")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(LoaderError::BadTextOffset {
                    path: path.to_owned(),
                    offset: text_offset,
                    why,
                });
            }
        }
        Ok(Kernel {
            path: path.to_owned(),
            len,
            kind,
        })
    }

    /// The lowest guest address the kernel occupies.
    pub fn load_addr(&self) -> u64 {
        match &self.kind {
            KernelKind::LinuxImage { text_offset, .. } => RAM_BASE + text_offset,
            KernelKind::Flat { load } => *load,
            KernelKind::Elf { segments, .. } => {
                segments.iter().map(|s| s.paddr).min().unwrap_or(RAM_BASE)
            }
        }
    }

    /// Where the kernel is entered.
    pub fn entry(&self) -> u64 {
        match &self.kind {
            KernelKind::Elf { entry, .. } => *entry,
            _ => self.load_addr(),
        }
    }

    /// Bytes the kernel occupies from its load address once running.
    pub fn footprint(&self) -> u64 {
        match &self.kind {
            KernelKind::LinuxImage { image_size, .. } => (*image_size).max(self.len),
            KernelKind::Flat { .. } => self.len,
            KernelKind::Elf { segments, .. } => {
                let end = segments
                    .iter()
                    .map(|s| s.paddr.saturating_add(s.memsz))
                    .max()
                    .unwrap_or(0);
                end.saturating_sub(self.load_addr())
            }
        }
    }

    /// Checks the kernel fits in `ram_size` bytes of RAM below the device tree.
    pub fn check_fits(&self, ram_size: u64) -> Result<(), LoaderError> {
        let load = self.load_addr();
        let need = self.footprint();
        let room = fdt_addr(ram_size).saturating_sub(load);
        if let KernelKind::Elf { entry, segments } = &self.kind {
            let bad = |what: String| {
                Err(LoaderError::BadElf {
                    path: self.path.clone(),
                    what,
                })
            };
            for s in segments {
                if s.paddr < RAM_BASE || s.paddr.saturating_add(s.memsz) > RAM_BASE + ram_size {
                    return bad(format!(
                        "a segment at {:#x}..{:#x} lies outside guest RAM ({RAM_BASE:#x}..{:#x}); is it linked for physical addresses in RAM?",
                        s.paddr,
                        s.paddr.saturating_add(s.memsz),
                        RAM_BASE + ram_size
                    ));
                }
            }
            if !segments
                .iter()
                .any(|s| (s.paddr..s.paddr.saturating_add(s.memsz)).contains(entry))
            {
                return bad(format!(
                    "its entry point {entry:#x} is in no loadable segment"
                ));
            }
        }
        if need > room {
            return Err(LoaderError::TooLarge {
                path: self.path.clone(),
                need,
                load,
                room,
            });
        }
        Ok(())
    }

    /// Reads the kernel into guest RAM; returns the entry address.
    pub fn load(&self, memory: &GuestMemoryMmap) -> Result<u64, LoaderError> {
        #[cfg(target_arch = "riscv64")]
        if matches!(self.kind, KernelKind::LinuxImage { .. }) {
            return self.load_image(memory);
        }
        if let KernelKind::Elf { entry, segments } = &self.kind {
            self.load_segments(memory, segments)?;
            return Ok(*entry);
        }
        let load = self.load_addr();
        read_into(memory, load, &self.path, self.len).map_err(|source| LoaderError::Read {
            path: self.path.clone(),
            source,
        })?;
        Ok(load)
    }
}

#[cfg(target_arch = "riscv64")]
impl Kernel {
    /// A Linux Image through linux-loader's PE loader.
    fn load_image(&self, memory: &GuestMemoryMmap) -> Result<u64, LoaderError> {
        use linux_loader::loader::pe::PE;
        use linux_loader::loader::KernelLoader;
        let read_err = |source| LoaderError::Read {
            path: self.path.clone(),
            source,
        };
        let (mut file, now) = open_sized(&self.path).map_err(read_err)?;
        if now != self.len {
            return Err(read_err(std::io::Error::other(format!(
                "{} changed size while rvvmm ran",
                self.path.display()
            ))));
        }
        let loaded = PE::load(memory, Some(GuestAddress(RAM_BASE)), &mut file, None)
            .map_err(|e| read_err(std::io::Error::other(e.to_string())))?;
        Ok(loaded.kernel_load.0)
    }
}

impl Kernel {
    /// Copies each segment's file bytes to its address and zeroes the rest of it (RAM is
    /// not cleared between boots).
    fn load_segments(
        &self,
        memory: &GuestMemoryMmap,
        segments: &[Segment],
    ) -> Result<(), LoaderError> {
        use std::io::{Seek, SeekFrom};
        let read_err = |source| LoaderError::Read {
            path: self.path.clone(),
            source,
        };
        let (mut file, now) = open_sized(&self.path).map_err(read_err)?;
        if now != self.len {
            return Err(read_err(std::io::Error::other(
                "the file changed size while rvvmm ran",
            )));
        }
        for s in segments {
            file.seek(SeekFrom::Start(s.offset)).map_err(read_err)?;
            memory.read_exact_volatile_from(GuestAddress(s.paddr), &mut file, s.filesz as usize)?;
            let zeros = s.memsz - s.filesz;
            if zeros > 0 {
                let at = GuestAddress(s.paddr + s.filesz);
                let chunk = vec![0u8; zeros.min(1 << 20) as usize];
                let mut done = 0;
                while done < zeros {
                    let n = (zeros - done).min(chunk.len() as u64) as usize;
                    memory.write_slice(&chunk[..n], GuestAddress(at.0 + done))?;
                    done += n as u64;
                }
            }
        }
        Ok(())
    }
}

const ELF_MAGIC: &[u8] = b"\x7fELF";
/// Most bytes of an ELF's start read for its headers: 64 program headers of 56 bytes.
const MAX_ELF_HEADERS: u64 = 64 + 64 * 56;

/// Reads an ELF64 header and its `PT_LOAD` program headers from `bytes` (the file's start).
fn parse_elf(bytes: &[u8], len: u64) -> Result<KernelKind, String> {
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    match bytes.get(4) {
        Some(2) => {}
        Some(1) => return Err("a 32-bit ELF; rvvmm runs RV64 guests".into()),
        _ => return Err("a damaged ELF header".into()),
    }
    if bytes.get(5) != Some(&1) {
        return Err("a big-endian ELF; RISC-V is little-endian".into());
    }
    let short = || "a truncated ELF header".to_string();
    let machine = u16_at(18).ok_or_else(short)?;
    if machine != 243 {
        return Err(format!(
            "an ELF for another architecture (e_machine {machine}, RISC-V is 243)"
        ));
    }
    let kind = u16_at(16).ok_or_else(short)?;
    if kind != 2 && kind != 3 {
        return Err(format!("an ELF that is not an executable (e_type {kind})"));
    }
    let entry = u64_at(24).ok_or_else(short)?;
    let phoff = u64_at(32).ok_or_else(short)?;
    let phentsize = u16_at(54).ok_or_else(short)? as u64;
    let phnum = u16_at(56).ok_or_else(short)? as u64;
    if phentsize < 56 || phnum > 64 || phoff.saturating_add(phnum * phentsize) > MAX_ELF_HEADERS {
        return Err("its program headers are malformed or beyond the first 3.6 KiB".into());
    }
    let mut segments = Vec::new();
    for i in 0..phnum {
        let at = (phoff + i * phentsize) as usize;
        if u32_at(at).ok_or_else(short)? != 1 {
            continue; // not PT_LOAD
        }
        let field = |off: usize| u64_at(at + off).ok_or_else(short);
        let s = Segment {
            offset: field(8)?,
            paddr: field(24)?,
            filesz: field(32)?,
            memsz: field(40)?,
        };
        if s.filesz > s.memsz || s.offset.saturating_add(s.filesz) > len {
            return Err(format!(
                "segment {i} reaches past the end of the file or its memory size"
            ));
        }
        if s.memsz > 0 {
            segments.push(s);
        }
    }
    if segments.is_empty() {
        return Err("an ELF with no loadable segment".into());
    }
    let mut sorted: Vec<_> = segments
        .iter()
        .map(|s| (s.paddr, s.paddr.saturating_add(s.memsz)))
        .collect();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[1].0 < w[0].1) {
        return Err("its loadable segments overlap".into());
    }
    Ok(KernelKind::Elf { entry, segments })
}

/// An initial ramdisk file.
#[derive(Debug, Clone)]
pub struct Initrd {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub len: u64,
}

impl Initrd {
    /// Opens `path` to learn its size.
    pub fn read(path: &Path) -> Result<Self, LoaderError> {
        let (_, len) = open_sized(path).map_err(|source| LoaderError::ReadInitrd {
            path: path.to_owned(),
            source,
        })?;
        Ok(Initrd {
            path: path.to_owned(),
            len,
        })
    }

    /// Where the initrd goes: page-aligned, as high as it fits below the device tree and above
    /// the kernel. Returns [start, end).
    pub fn place(&self, kernel: &Kernel, ram_size: u64) -> Result<(u64, u64), LoaderError> {
        let len = self.len;
        let top = fdt_addr(ram_size);
        // The kernel's footprint, rounded up to 2 MiB: Linux maps itself in 2 MiB pages.
        let kernel_end =
            (kernel.load_addr() + kernel.footprint() + (2 << 20) - 1) & !((2 << 20) - 1);
        let room = top.saturating_sub(kernel_end);
        if len > room {
            return Err(LoaderError::InitrdTooLarge {
                path: self.path.clone(),
                len,
                room,
            });
        }
        let start = (top - len) & !0xfff;
        Ok((start, start + len))
    }

    /// Reads the initrd into guest RAM at `start`.
    pub fn load(&self, memory: &GuestMemoryMmap, start: u64) -> Result<(), LoaderError> {
        read_into(memory, start, &self.path, self.len).map_err(|source| LoaderError::ReadInitrd {
            path: self.path.clone(),
            source,
        })
    }
}

/// Formats that are kernels, but not ones rvvmm can boot.
fn unloadable(bytes: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(&[0x1f, 0x8b]) {
        Some("gzip-compressed (Image.gz); decompress it first")
    } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd-compressed; decompress it first")
    } else if starts(b"\xfd7zXZ\0") {
        Some("xz-compressed; decompress it first")
    } else if starts(b"MZ") && bytes.get(4..8) == Some(b"zimg") {
        Some("an EFI zboot image (vmlinuz.efi)")
    } else {
        None
    }
}

fn classify(bytes: &[u8]) -> KernelKind {
    if bytes.len() < IMAGE_HEADER_SIZE || &bytes[0x38..0x3c] != IMAGE_MAGIC2 {
        return KernelKind::Flat {
            load: FLAT_LOAD_ADDR,
        };
    }
    let le = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    KernelKind::LinuxImage {
        text_offset: le(0x08),
        image_size: le(0x10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_header(text_offset: u64, image_size: u64) -> Vec<u8> {
        let mut h = vec![0u8; 128];
        h[0x08..0x10].copy_from_slice(&text_offset.to_le_bytes());
        h[0x10..0x18].copy_from_slice(&image_size.to_le_bytes());
        h[0x30..0x38].copy_from_slice(b"RISCV\0\0\0");
        h[0x38..0x3c].copy_from_slice(IMAGE_MAGIC2);
        h
    }

    fn kernel(bytes: Vec<u8>) -> Kernel {
        Kernel::from_header(Path::new("k"), &bytes, bytes.len() as u64).unwrap()
    }

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rvvmm-loader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn impossible_text_offsets_are_refused_without_overflow() {
        for (offset, why) in [
            (0x1000, "is not 2 MiB-aligned"),
            (0xffff_ffff_ffe0_0000, "lies beyond any guest RAM"),
            (RAM_MAX, "lies beyond any guest RAM"),
        ] {
            let e = Kernel::from_header(Path::new("k"), &image_header(offset, 0x10_0000), 4096)
                .unwrap_err();
            assert!(e.to_string().contains(why), "{offset:#x}: {e}");
        }
    }

    #[test]
    fn linux_images_are_recognised() {
        let k = kernel(image_header(0x20_0000, 0x100_0000));
        assert_eq!(
            k.kind,
            KernelKind::LinuxImage {
                text_offset: 0x20_0000,
                image_size: 0x100_0000
            }
        );
        assert_eq!(k.load_addr(), 0x8020_0000);
        // Needs image_size (16 MiB) at +2 MiB: 16 MiB of RAM is too little, 32 MiB is enough.
        assert!(matches!(
            k.check_fits(16 << 20),
            Err(LoaderError::TooLarge { .. })
        ));
        k.check_fits(32 << 20).unwrap();
    }

    #[test]
    fn anything_else_is_flat_at_ram_plus_2_mib() {
        for bytes in [vec![0x13u8; 4], vec![0u8; 200], b"xyzRSC\x05".to_vec()] {
            let k = kernel(bytes);
            assert_eq!(k.kind, KernelKind::Flat { load: 0x8020_0000 });
            assert_eq!((k.load_addr(), k.entry()), (0x8020_0000, 0x8020_0000));
        }
    }

    #[test]
    fn flat_binaries_must_fit_below_the_dtb() {
        let k = kernel(vec![0u8; 3 << 20]);
        assert!(k.check_fits(4 << 20).is_err());
        k.check_fits(8 << 20).unwrap();
    }

    #[test]
    fn load_addr_moves_a_flat_binary_only() {
        let k = kernel(vec![0x13u8; 4]).at(RAM_BASE).unwrap();
        assert_eq!(k.entry(), RAM_BASE);
        for (addr, what) in [
            (0x1000, "below guest RAM"),
            (0x8000_0004, "not 4 KiB-aligned"),
        ] {
            let e = kernel(vec![0x13u8; 4]).at(addr).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
        let e = kernel(image_header(0x20_0000, 0x10_0000))
            .at(RAM_BASE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a Linux Image says where it goes"), "{e}");
        // Past the end of RAM is caught with the rest of the fit.
        let far = kernel(vec![0x13u8; 4]).at(RAM_BASE + (64 << 20)).unwrap();
        assert!(far.check_fits(32 << 20).is_err());
    }

    /// A minimal RV64 ELF: one header, `phdrs` program headers of (type, offset, paddr,
    /// filesz, memsz), and `body` after them.
    fn elf(
        machine: u16,
        class: u8,
        entry: u64,
        phdrs: &[(u32, u64, u64, u64, u64)],
        body: &[u8],
    ) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = class;
        h[5] = 1;
        h[16..18].copy_from_slice(&2u16.to_le_bytes());
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h[24..32].copy_from_slice(&entry.to_le_bytes());
        h[32..40].copy_from_slice(&64u64.to_le_bytes());
        h[54..56].copy_from_slice(&56u16.to_le_bytes());
        h[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for &(kind, offset, paddr, filesz, memsz) in phdrs {
            let mut p = vec![0u8; 56];
            p[..4].copy_from_slice(&kind.to_le_bytes());
            p[8..16].copy_from_slice(&offset.to_le_bytes());
            p[16..24].copy_from_slice(&paddr.to_le_bytes());
            p[24..32].copy_from_slice(&paddr.to_le_bytes());
            p[32..40].copy_from_slice(&filesz.to_le_bytes());
            p[40..48].copy_from_slice(&memsz.to_le_bytes());
            h.extend(p);
        }
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn elf_segments_go_to_their_addresses_and_bss_is_zeroed() {
        let off = 64 + 2 * 56;
        let bytes = elf(
            243,
            2,
            0x8040_0000,
            &[
                (1, off, 0x8040_0000, 4, 4),
                (1, off + 4, 0x8041_0000, 5, 0x2000),
            ],
            b"\x13\x00\x00\x00hello",
        );
        let path = temp_file("guest.elf", &bytes);
        let k = Kernel::read(&path).unwrap();
        assert_eq!((k.load_addr(), k.entry()), (0x8040_0000, 0x8040_0000));
        assert_eq!(k.footprint(), 0x1_2000);
        k.check_fits(16 << 20).unwrap();
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(RAM_BASE), 16 << 20)]).unwrap();
        memory
            .write_slice(&[0xff; 16], GuestAddress(0x8041_0005))
            .unwrap();
        assert_eq!(k.load(&memory).unwrap(), 0x8040_0000);
        let mut got = [0u8; 16];
        memory
            .read_slice(&mut got, GuestAddress(0x8041_0000))
            .unwrap();
        assert_eq!(
            &got, b"hello\0\0\0\0\0\0\0\0\0\0\0",
            "file bytes, then zeroed bss"
        );
    }

    #[test]
    fn bad_elves_are_one_line_each() {
        let off = 64 + 56;
        let load = |paddr: u64| [(1u32, off, paddr, 4u64, 4u64)];
        for (bytes, ram, what) in [
            (
                elf(62, 2, 0x8020_0000, &load(0x8020_0000), &[0; 4]),
                16,
                "another architecture (e_machine 62",
            ),
            (
                elf(243, 1, 0x8020_0000, &load(0x8020_0000), &[0; 4]),
                16,
                "a 32-bit ELF",
            ),
            (
                elf(243, 2, 0x8020_0000, &[], &[]),
                16,
                "no loadable segment",
            ),
            (
                elf(
                    243,
                    2,
                    0x8020_0000,
                    &[(1, off, 0x8020_0000, 400, 400)],
                    &[0; 4],
                ),
                16,
                "past the end of the file",
            ),
            (
                elf(
                    243,
                    2,
                    0xffff_ffff_8000_0000,
                    &load(0xffff_ffff_8000_0000),
                    &[0; 4],
                ),
                16,
                "lies outside guest RAM",
            ),
            (
                elf(243, 2, 0x8FF0_0000, &load(0x8FF0_0000), &[0; 4]),
                256,
                "raise --memory",
            ),
            (
                elf(243, 2, 0x9000_0000, &load(0x8020_0000), &[0; 4]),
                256,
                "entry point 0x90000000 is in no loadable segment",
            ),
        ] {
            let e = Kernel::from_header(Path::new("g.elf"), &bytes, bytes.len() as u64)
                .and_then(|k| k.check_fits(ram << 20).map(|()| k))
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(e.contains(what), "{what}: {e}");
        }
    }

    #[test]
    fn loading_copies_the_bytes() {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(RAM_BASE), 8 << 20)]).unwrap();
        let path = temp_file("flat.bin", b"\x13\x00\x00\x00hello");
        let k = Kernel::read(&path).unwrap();
        assert_eq!(k.load(&memory).unwrap(), FLAT_LOAD_ADDR);
        let mut got = [0u8; 9];
        memory
            .read_slice(&mut got, GuestAddress(FLAT_LOAD_ADDR))
            .unwrap();
        assert_eq!(&got, b"\x13\x00\x00\x00hello");
    }

    #[test]
    fn compressed_kernels_are_refused() {
        for (name, bytes) in [
            ("Image.gz", vec![0x1f, 0x8b, 8, 0]),
            ("Image.xz", b"\xfd7zXZ\0rest".to_vec()),
            ("vmlinuz.efi", b"MZ\0\0zimg".to_vec()),
        ] {
            let path = temp_file(name, &bytes);
            let err = Kernel::read(&path).unwrap_err();
            assert!(
                matches!(err, LoaderError::Unloadable { .. }),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn initrd_goes_high_and_must_clear_the_kernel() {
        let k = kernel(image_header(0x20_0000, 0x100_0000)); // 16 MiB at +2 MiB
        let initrd = Initrd {
            path: "i".into(),
            len: 0x12_345,
        };
        let (start, end) = initrd.place(&k, 64 << 20).unwrap();
        assert_eq!(start % 4096, 0);
        assert_eq!(end - start, 0x12_345);
        assert!(end <= fdt_addr(64 << 20));
        assert!(start >= 0x8120_0000);
        let big = Initrd {
            path: "i".into(),
            len: 40 << 20,
        };
        assert!(matches!(
            big.place(&k, 48 << 20),
            Err(LoaderError::InitrdTooLarge { .. })
        ));
    }

    #[test]
    fn read_errors_name_the_path() {
        let err = Kernel::read(Path::new("/nonexistent/kernel.bin")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/kernel.bin"));
    }
}
