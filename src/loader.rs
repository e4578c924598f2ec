//! Loading the kernel into guest RAM.
//!
//! Files are read straight into guest RAM at each boot (nothing is kept in rvvmm's own memory:
//! a 30 MiB Image would otherwise double the VMM's footprint and its startup copying).
//!
//! A file with the RISC-V Linux Image header (magic "RSC\x05" at offset 0x38, see the kernel's
//! `Documentation/arch/riscv/boot-image-header.rst`) is placed at RAM base + text_offset and
//! entered there. Anything else is a flat binary loaded and entered at the RAM base.
//! The header is classified here by hand, on every host: linux-loader's PE loader only builds
//! for riscv64 (and aarch64) hosts, and the checks (text_offset alignment, the footprint that
//! must fit below the dtb, other formats refused with a hint) must be tested on x86_64 too. On
//! riscv64 the Image itself is then loaded by linux-loader's PE loader, which checks the magic
//! again and copies the file to RAM base + text_offset; a flat binary has no header for it.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::riscv64::layout::{fdt_addr, RAM_BASE};

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
    #[error("kernel {path} has a Linux Image header with text_offset {offset:#x}, which is not 2 MiB-aligned")]
    BadTextOffset {
        /// The file.
        path: PathBuf,
        /// The offset.
        offset: u64,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// A RISC-V Linux Image.
    LinuxImage {
        /// Offset from the RAM base (2 MiB-aligned).
        text_offset: u64,
        /// Bytes the kernel occupies once running (bss included).
        image_size: u64,
    },
    /// A flat binary.
    Flat,
}

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

/// Opens `path` and returns it with its size; a directory or unreadable file is an error.
fn open_sized(path: &Path) -> std::io::Result<(File, u64)> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(std::io::Error::from_raw_os_error(libc::EISDIR));
    }
    Ok((file, meta.len()))
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
        Self::from_header(path, &bytes, len)
    }

    /// Classifies a kernel from its first bytes and its size.
    pub fn from_header(path: &Path, bytes: &[u8], len: u64) -> Result<Self, LoaderError> {
        if let Some(what) = unloadable(bytes) {
            return Err(LoaderError::Unloadable {
                path: path.to_owned(),
                what,
            });
        }
        let kind = classify(bytes);
        if let KernelKind::LinuxImage { text_offset, .. } = kind {
            if text_offset % (2 << 20) != 0 {
                return Err(LoaderError::BadTextOffset {
                    path: path.to_owned(),
                    offset: text_offset,
                });
            }
        }
        Ok(Kernel {
            path: path.to_owned(),
            len,
            kind,
        })
    }

    /// The guest address the kernel is loaded at and entered at.
    pub fn load_addr(&self) -> u64 {
        match self.kind {
            KernelKind::LinuxImage { text_offset, .. } => RAM_BASE + text_offset,
            KernelKind::Flat => RAM_BASE,
        }
    }

    /// Bytes the kernel occupies from its load address once running.
    pub fn footprint(&self) -> u64 {
        match self.kind {
            KernelKind::LinuxImage { image_size, .. } => image_size.max(self.len),
            KernelKind::Flat => self.len,
        }
    }

    /// Checks the kernel fits in `ram_size` bytes of RAM below the device tree.
    pub fn check_fits(&self, ram_size: u64) -> Result<(), LoaderError> {
        let load = self.load_addr();
        let need = self.footprint();
        let room = fdt_addr(ram_size).saturating_sub(load);
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
    if starts(b"\x7fELF") {
        Some("an ELF file (vmlinux)")
    } else if starts(&[0x1f, 0x8b]) {
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
        return KernelKind::Flat;
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
    fn anything_else_is_flat() {
        for bytes in [vec![0x13u8; 4], vec![0u8; 200], b"xyzRSC\x05".to_vec()] {
            let k = kernel(bytes);
            assert_eq!(k.kind, KernelKind::Flat);
            assert_eq!(k.load_addr(), RAM_BASE);
        }
    }

    #[test]
    fn flat_binaries_must_fit_below_the_dtb() {
        let k = kernel(vec![0u8; 3 << 20]);
        assert!(k.check_fits(4 << 20).is_err());
        k.check_fits(8 << 20).unwrap();
    }

    #[test]
    fn loading_copies_the_bytes() {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(RAM_BASE), 8 << 20)]).unwrap();
        let path = temp_file("flat.bin", b"\x13\x00\x00\x00hello");
        let k = Kernel::read(&path).unwrap();
        assert_eq!(k.load(&memory).unwrap(), RAM_BASE);
        let mut got = [0u8; 9];
        memory.read_slice(&mut got, GuestAddress(RAM_BASE)).unwrap();
        assert_eq!(&got, b"\x13\x00\x00\x00hello");
    }

    #[test]
    fn compressed_and_elf_kernels_are_refused() {
        for (name, bytes) in [
            ("vmlinux", b"\x7fELF\x02\x01\x01".to_vec()),
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
