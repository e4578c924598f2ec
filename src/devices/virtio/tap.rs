//! A Linux tap device: the host end of virtio-net.
//!
//! Written by hand (as Firecracker's `tap.rs`): no rust-vmm crate opens taps. The tap is opened
//! with `IFF_VNET_HDR` and a 12-byte header, the size of `virtio_net_hdr_v1`, so what the guest
//! puts in a transmit buffer (header + frame) is exactly one `write`, and one `read` gives what
//! goes into a receive buffer.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::net::{NetBackend, HDR_LEN};

// From <linux/if_tun.h>; the same numbers on every architecture Linux's generic ioctl
// encoding covers (x86_64 and riscv64 both).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// Longest interface name, without the NUL (IFNAMSIZ - 1).
pub const MAX_NAME: usize = 15;

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags member of the union.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Errors opening a tap.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name cannot be an interface name.
    #[error("tap name '{0}' is not an interface name (1 to 15 bytes, no '/', no blanks)")]
    BadName(String),
    /// /dev/net/tun is missing or closed to us.
    #[error("cannot open /dev/net/tun ({0}); is the tun module loaded?")]
    OpenTun(#[source] std::io::Error),
    /// TUNSETIFF refused.
    #[error("cannot attach to tap {name} ({source}); create it with `ip tuntap add {name} mode tap` or run as root")]
    Attach {
        /// The tap's name.
        name: String,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// Another tap ioctl refused.
    #[error("cannot set up tap {name}: {what} failed ({source})")]
    Setup {
        /// The tap's name.
        name: String,
        /// Which ioctl.
        what: &'static str,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
}

/// An open tap, non-blocking.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

/// Checks an interface name the way the kernel's `dev_valid_name` does.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
}

impl Tap {
    /// Attaches to tap `name` (creating it when it does not exist and we may, as a
    /// non-persistent tap that goes away with rvvmm).
    pub fn open(name: &str) -> Result<Self, TapError> {
        if !valid_name(name) {
            return Err(TapError::BadName(name.to_owned()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is laid out as
        // (40 bytes); the fd is the tun device we just opened.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
            return Err(TapError::Attach {
                name: name.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        let tap = Tap {
            file,
            name: name.to_owned(),
        };
        let hdr_len = HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid.
        let rc = unsafe { libc::ioctl(tap.file.as_raw_fd(), TUNSETVNETHDRSZ, &hdr_len) };
        tap.check(rc, "TUNSETVNETHDRSZ")?;
        // No offloaded frames (GSO, partial checksums) until a driver accepts them
        // (virtio-net's activate tells the tap which).
        let mut tap = tap;
        tap.set_offload(0).map_err(|source| TapError::Setup {
            name: tap.name.clone(),
            what: "TUNSETOFFLOAD",
            source,
        })?;
        Ok(tap)
    }

    fn check(&self, rc: libc::c_int, what: &'static str) -> Result<(), TapError> {
        if rc < 0 {
            return Err(TapError::Setup {
                name: self.name.clone(),
                what,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Another handle on the same tap (a new fd for the same queue).
    pub fn try_clone(&self) -> std::io::Result<Tap> {
        Ok(Tap {
            file: self.file.try_clone()?,
            name: self.name.clone(),
        })
    }
}

impl NetBackend for Tap {
    fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }

    fn send(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        self.file.write(frame)
    }

    fn set_offload(&mut self, flags: u32) -> std::io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its flags by value on the tap's own fd.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(valid_name("tap0"));
        assert!(valid_name("a-very-long-nam"));
        assert!(!valid_name("a-very-long-name"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a b"));
        assert!(!valid_name(".."));
        assert!(matches!(Tap::open("bad name"), Err(TapError::BadName(_))));
    }

    #[test]
    fn ifreq_is_the_kernels_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }
}
