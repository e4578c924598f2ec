//! A writer of "newc" cpio archives, the format of a Linux initramfs.
//!
//! Written here rather than with the `cpio` tool so the archive can hold `/dev/console` (a
//! device node, which only root could create on disk) and is byte-for-byte reproducible.

/// One archive member.
pub enum Entry<'a> {
    /// A directory.
    Dir(&'a str),
    /// A regular file with its permission bits.
    File(&'a str, u32, &'a [u8]),
    /// A symbolic link: path, target.
    Symlink(&'a str, &'a str),
    /// A character device: path, major, minor.
    CharDev(&'a str, u32, u32),
}

/// Builds the archive, ending with the TRAILER!!! member.
pub fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ino, entry) in entries.iter().enumerate() {
        let (name, mode, data, rdev): (&str, u32, &[u8], (u32, u32)) = match entry {
            Entry::Dir(p) => (p, 0o040_755, &[], (0, 0)),
            Entry::File(p, perm, d) => (p, 0o100_000 | perm, d, (0, 0)),
            Entry::Symlink(p, target) => (p, 0o120_777, target.as_bytes(), (0, 0)),
            Entry::CharDev(p, major, minor) => (p, 0o020_600, &[], (*major, *minor)),
        };
        member(&mut out, ino as u32 + 1, name, mode, data, rdev);
    }
    member(&mut out, 0, "TRAILER!!!", 0, &[], (0, 0));
    out
}

fn member(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
    let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // dev major
        0, // dev minor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let a = archive(&[
            Entry::Dir("dev"),
            Entry::CharDev("dev/console", 5, 1),
            Entry::File("init", 0o755, b"#!/bin/sh\n"),
        ]);
        assert!(a.starts_with(b"070701"));
        // Header is 110 bytes; every member starts 4-aligned.
        let positions: Vec<usize> = a
            .windows(6)
            .enumerate()
            .filter(|(_, w)| w == b"070701")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(positions.len(), 4);
        assert!(positions.iter().all(|p| p % 4 == 0));
        // The console node carries rdev 5:1.
        let console = positions[1];
        let rdev_major = &a[console + 6 + 9 * 8..console + 6 + 10 * 8];
        assert_eq!(rdev_major, b"00000005");
        assert!(a.windows(10).any(|w| w == b"TRAILER!!!"));
        assert_eq!(a.len() % 4, 0);
    }
}
