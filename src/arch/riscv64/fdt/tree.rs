//! A device tree as an editable tree: parsed from a blob, written back with vm-fdt.
//!
//! vm-fdt only writes device trees and rust-vmm has no parser, so this reads the flattened
//! format (devicetree specification v0.4, chapter 5) by hand. Every offset and length in the
//! blob is checked: a hostile or truncated file gives an error, never a panic or a huge
//! allocation. Memory is linear in the blob: a property name is stored once however many
//! properties use it (a blob of 88 KiB with one long name used by every property once took
//! 130 MiB), and nothing builds a path string per node.

use std::collections::HashMap;
use std::sync::Arc;

use vm_fdt::FdtWriter;

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
/// Deeper nesting than any real tree has: refused rather than recursed into.
const MAX_DEPTH: usize = 64;
/// Largest dtb rvvmm reads.
pub const MAX_BLOB: usize = 2 << 20;

/// Errors reading a device tree blob.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TreeError {
    /// Not a device tree, or a corrupt one.
    #[error("not a valid flattened device tree: {0}")]
    Invalid(&'static str),
}

fn invalid(what: &'static str) -> TreeError {
    TreeError::Invalid(what)
}

/// One node: its name (with unit address), properties in order, children in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// `name@unit-address`; "" for the root.
    pub name: String,
    /// (name, raw value); a name is shared by every property that has it.
    pub props: Vec<(Arc<str>, Vec<u8>)>,
    /// Child nodes.
    pub children: Vec<Node>,
}

impl Node {
    /// A node with no properties or children.
    pub fn new(name: &str) -> Self {
        Node {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// The raw value of property `name`.
    pub fn prop(&self, name: &str) -> Option<&[u8]> {
        self.props
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Property `name` as a string (without its NUL).
    pub fn prop_str(&self, name: &str) -> Option<&str> {
        let v = self.prop(name)?;
        std::str::from_utf8(v.strip_suffix(&[0]).unwrap_or(v)).ok()
    }

    /// Property `name` as a list of strings.
    pub fn prop_strs(&self, name: &str) -> Vec<&str> {
        self.prop(name)
            .map(|v| {
                v.split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .filter_map(|s| std::str::from_utf8(s).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Property `name` as big-endian 32-bit cells.
    pub fn prop_u32s(&self, name: &str) -> Vec<u32> {
        self.prop(name)
            .map(|v| {
                v.chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Property `name` as one 32-bit cell.
    pub fn prop_u32(&self, name: &str) -> Option<u32> {
        let v = self.prop_u32s(name);
        (v.len() == 1).then(|| v[0])
    }

    /// Sets (or adds) property `name`.
    pub fn set_prop(&mut self, name: &str, value: Vec<u8>) {
        match self.props.iter_mut().find(|(n, _)| &**n == name) {
            Some((_, v)) => *v = value,
            None => self.props.push((name.into(), value)),
        }
    }

    /// Sets a string property.
    pub fn set_str(&mut self, name: &str, value: &str) {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        self.set_prop(name, v);
    }

    /// Sets a string-list property.
    pub fn set_strs<S: AsRef<str>>(&mut self, name: &str, values: &[S]) {
        let mut v = Vec::new();
        for s in values {
            v.extend_from_slice(s.as_ref().as_bytes());
            v.push(0);
        }
        self.set_prop(name, v);
    }

    /// Sets a one-cell property.
    pub fn set_u32(&mut self, name: &str, value: u32) {
        self.set_prop(name, value.to_be_bytes().to_vec());
    }

    /// Sets a property of 64-bit values (two cells each).
    pub fn set_u64s(&mut self, name: &str, values: &[u64]) {
        self.set_prop(name, values.iter().flat_map(|v| v.to_be_bytes()).collect());
    }

    /// Removes property `name`.
    pub fn remove_prop(&mut self, name: &str) {
        self.props.retain(|(n, _)| &**n != name);
    }

    /// The child named `name` (exactly, or by the part before '@').
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children
            .iter()
            .find(|c| c.name == name || c.base_name() == name)
    }

    /// Mutable [`Node::child`].
    pub fn child_mut(&mut self, name: &str) -> Option<&mut Node> {
        self.children
            .iter_mut()
            .find(|c| c.name == name || c.base_name() == name)
    }

    /// The child named `name`, created at the end when missing.
    pub fn child_or_insert(&mut self, name: &str) -> &mut Node {
        if self.child(name).is_none() {
            self.children.push(Node::new(name));
        }
        self.child_mut(name).expect("just inserted")
    }

    /// The name without its unit address.
    pub fn base_name(&self) -> &str {
        self.name.split('@').next().unwrap_or("")
    }

    /// Whether `compatible` lists `what`.
    pub fn is_compatible(&self, what: &str) -> bool {
        self.prop_strs("compatible").contains(&what)
    }

    /// Whether this node or one below it satisfies `pred` (depth first).
    pub fn any(&self, pred: &impl Fn(&Node) -> bool) -> bool {
        pred(self) || self.children.iter().any(|c| c.any(pred))
    }

    /// Calls `f` on this node and every node below it (depth first).
    pub fn for_each_mut(&mut self, f: &mut impl FnMut(&mut Node)) {
        f(self);
        for c in &mut self.children {
            c.for_each_mut(f);
        }
    }

    /// The largest phandle in the subtree (0 if none).
    pub fn max_phandle(&self) -> u32 {
        let own = self.prop_u32("phandle").unwrap_or(0);
        self.children
            .iter()
            .map(Node::max_phandle)
            .fold(own, u32::max)
    }
}

/// A whole device tree.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tree {
    /// Memory reservation entries (address, size).
    pub reserved: Vec<(u64, u64)>,
    /// `boot_cpuid_phys`.
    pub boot_cpuid: u32,
    /// The root node.
    pub root: Node,
}

struct Reader<'a> {
    blob: &'a [u8],
}

impl Reader<'_> {
    fn u32_at(&self, off: usize) -> Result<u32, TreeError> {
        let b = self
            .blob
            .get(off..off.checked_add(4).ok_or(invalid("offset overflow"))?)
            .ok_or(invalid("truncated"))?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64_at(&self, off: usize) -> Result<u64, TreeError> {
        Ok((u64::from(self.u32_at(off)?) << 32) | u64::from(self.u32_at(off + 4)?))
    }

    fn cstr_at(&self, off: usize, end: usize) -> Result<&str, TreeError> {
        let region = self
            .blob
            .get(off..end)
            .ok_or(invalid("string out of bounds"))?;
        let len = region
            .iter()
            .position(|b| *b == 0)
            .ok_or(invalid("unterminated string"))?;
        std::str::from_utf8(&region[..len]).map_err(|_| invalid("name is not UTF-8"))
    }
}

fn align4(v: usize) -> usize {
    (v + 3) & !3
}

impl Tree {
    /// Parses a flattened device tree blob.
    pub fn parse(blob: &[u8]) -> Result<Tree, TreeError> {
        let r = Reader { blob };
        if blob.len() < 40 || r.u32_at(0)? != FDT_MAGIC {
            return Err(invalid("bad magic"));
        }
        let total = r.u32_at(4)? as usize;
        if total > blob.len() || total > MAX_BLOB {
            return Err(invalid("totalsize is larger than the file"));
        }
        let r = Reader {
            blob: &blob[..total],
        };
        let off_struct = r.u32_at(8)? as usize;
        let off_strings = r.u32_at(12)? as usize;
        let off_rsv = r.u32_at(16)? as usize;
        let version = r.u32_at(20)?;
        let boot_cpuid = r.u32_at(28)?;
        let size_strings = r.u32_at(32)? as usize;
        let size_struct = r.u32_at(36)? as usize;
        if version < 16 {
            return Err(invalid("version older than 16"));
        }
        let strings_end = off_strings
            .checked_add(size_strings)
            .ok_or(invalid("strings overflow"))?;
        let struct_end = off_struct
            .checked_add(size_struct)
            .ok_or(invalid("struct overflow"))?;
        if strings_end > total || struct_end > total {
            return Err(invalid("block outside the blob"));
        }

        let mut reserved = Vec::new();
        let mut off = off_rsv;
        loop {
            let (addr, size) = (r.u64_at(off)?, r.u64_at(off + 8)?);
            if addr == 0 && size == 0 {
                break;
            }
            if reserved.len() >= 64 {
                return Err(invalid("too many memory reservations"));
            }
            reserved.push((addr, size));
            off += 16;
        }

        let mut stack: Vec<Node> = Vec::new();
        let mut root = None;
        // Property names by string-block offset: each is made once and shared.
        let mut names: HashMap<usize, Arc<str>> = HashMap::new();
        let mut off = off_struct;
        loop {
            if off >= struct_end {
                return Err(invalid("structure block ends early"));
            }
            let token = r.u32_at(off)?;
            off += 4;
            match token {
                FDT_BEGIN_NODE => {
                    if stack.len() >= MAX_DEPTH || root.is_some() {
                        return Err(invalid("nodes nested too deep or after the root"));
                    }
                    let name = r.cstr_at(off, struct_end)?;
                    off = align4(off + name.len() + 1);
                    stack.push(Node::new(name));
                }
                FDT_END_NODE => {
                    let node = stack.pop().ok_or(invalid("unbalanced END_NODE"))?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(node),
                        None => root = Some(node),
                    }
                }
                FDT_PROP => {
                    let len = r.u32_at(off)? as usize;
                    let name_off = r.u32_at(off + 4)? as usize;
                    off += 8;
                    let value = r
                        .blob
                        .get(off..off.checked_add(len).ok_or(invalid("property overflow"))?)
                        .filter(|_| off + len <= struct_end)
                        .ok_or(invalid("property value out of bounds"))?;
                    let at = off_strings
                        .checked_add(name_off)
                        .ok_or(invalid("name overflow"))?;
                    let name = match names.get(&at) {
                        Some(name) => name.clone(),
                        None => {
                            let name: Arc<str> = r.cstr_at(at, strings_end)?.into();
                            names.insert(at, name.clone());
                            name
                        }
                    };
                    let node = stack.last_mut().ok_or(invalid("property outside a node"))?;
                    node.props.push((name, value.to_vec()));
                    off = align4(off + len);
                }
                FDT_NOP => {}
                FDT_END => break,
                _ => return Err(invalid("unknown token")),
            }
        }
        if !stack.is_empty() {
            return Err(invalid("unclosed node"));
        }
        let root = root.ok_or(invalid("no root node"))?;
        if !root.name.is_empty() {
            return Err(invalid("root node has a name"));
        }
        Ok(Tree {
            reserved,
            boot_cpuid,
            root,
        })
    }

    /// Writes the tree as a blob.
    pub fn to_blob(&self) -> Result<Vec<u8>, vm_fdt::Error> {
        let rsv: Vec<vm_fdt::FdtReserveEntry> = self
            .reserved
            .iter()
            .map(|(a, s)| vm_fdt::FdtReserveEntry::new(*a, *s))
            .collect::<Result<_, _>>()?;
        let mut w = FdtWriter::new_with_mem_reserv(&rsv)?;
        w.set_boot_cpuid_phys(self.boot_cpuid);
        write_node(&mut w, &self.root)?;
        w.finish()
    }

    /// The node at `path` ("/cpus/cpu@0").
    pub fn node(&self, path: &str) -> Option<&Node> {
        path.split('/')
            .filter(|s| !s.is_empty())
            .try_fold(&self.root, |n, part| n.child(part))
    }

    /// Mutable [`Tree::node`].
    pub fn node_mut(&mut self, path: &str) -> Option<&mut Node> {
        path.split('/')
            .filter(|s| !s.is_empty())
            .try_fold(&mut self.root, |n, part| n.child_mut(part))
    }
}

fn write_node(w: &mut FdtWriter, node: &Node) -> Result<(), vm_fdt::Error> {
    let handle = w.begin_node(&node.name)?;
    for (name, value) in &node.props {
        w.property(name, value)?;
    }
    for child in &node.children {
        write_node(w, child)?;
    }
    w.end_node(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob whose root has `props` empty properties, all named by one `name_len`-byte name.
    fn one_name_many_props(name_len: usize, props: usize) -> Vec<u8> {
        let be = |v: u32| v.to_be_bytes();
        let mut st = Vec::new();
        st.extend(be(FDT_BEGIN_NODE));
        st.extend(be(0)); // "" and padding
        for _ in 0..props {
            st.extend(be(FDT_PROP));
            st.extend(be(0)); // no value
            st.extend(be(0)); // the name at string offset 0
        }
        st.extend(be(FDT_END_NODE));
        st.extend(be(FDT_END));
        let mut strings = vec![b'n'; name_len];
        strings.push(0);
        let off_rsv = 40;
        let off_struct = off_rsv + 16;
        let off_strings = off_struct + st.len();
        let total = off_strings + strings.len();
        let mut blob = Vec::new();
        for v in [
            FDT_MAGIC,
            total as u32,
            off_struct as u32,
            off_strings as u32,
            off_rsv as u32,
            17,
            16,
            0,
            strings.len() as u32,
            st.len() as u32,
        ] {
            blob.extend(be(v));
        }
        blob.extend([0u8; 16]);
        blob.extend(st);
        blob.extend(strings);
        blob
    }

    #[test]
    fn a_name_used_by_many_properties_is_stored_once() {
        // 88 KiB: a 60,000-byte name and 2,400 properties naming it (each 12 bytes).
        let blob = one_name_many_props(60_000, 2_400);
        assert!(blob.len() < 90 * 1024);
        let tree = Tree::parse(&blob).unwrap();
        let props = &tree.root.props;
        assert_eq!(props.len(), 2_400);
        assert!(props.iter().all(|(n, _)| Arc::ptr_eq(n, &props[0].0)));
        assert_eq!(props[0].0.len(), 60_000);
    }

    fn sample() -> Vec<u8> {
        let mut w =
            FdtWriter::new_with_mem_reserv(&[
                vm_fdt::FdtReserveEntry::new(0x8000_0000, 0x1000).unwrap()
            ])
            .unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_string("compatible", "riscv-virtio").unwrap();
        let cpus = w.begin_node("cpus").unwrap();
        let cpu = w.begin_node("cpu@0").unwrap();
        w.property_string_list("compatible", vec!["a".into(), "riscv".into()])
            .unwrap();
        w.property_phandle(7).unwrap();
        w.end_node(cpu).unwrap();
        w.end_node(cpus).unwrap();
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_through_vm_fdt() {
        let blob = sample();
        let tree = Tree::parse(&blob).unwrap();
        assert_eq!(tree.reserved, vec![(0x8000_0000, 0x1000)]);
        let cpu = tree.node("/cpus/cpu@0").unwrap();
        assert!(cpu.is_compatible("riscv"));
        assert_eq!(cpu.prop_u32("phandle"), Some(7));
        assert_eq!(tree.root.max_phandle(), 7);
        assert_eq!(tree.node("/cpus/cpu").unwrap().name, "cpu@0");
        let again = Tree::parse(&tree.to_blob().unwrap()).unwrap();
        assert_eq!(again, tree);
    }

    #[test]
    fn edits_survive_serialisation() {
        let mut tree = Tree::parse(&sample()).unwrap();
        let chosen = tree.root.child_or_insert("chosen");
        chosen.set_str("bootargs", "console=ttyS0");
        chosen.set_u64s("linux,initrd-start", &[0x8800_0000]);
        tree.node_mut("/cpus/cpu@0")
            .unwrap()
            .set_strs("riscv,isa-extensions", &["i", "m"]);
        let again = Tree::parse(&tree.to_blob().unwrap()).unwrap();
        assert_eq!(
            again.node("/chosen").unwrap().prop_str("bootargs"),
            Some("console=ttyS0")
        );
        assert_eq!(
            again
                .node("/cpus/cpu@0")
                .unwrap()
                .prop_strs("riscv,isa-extensions"),
            ["i", "m"]
        );
    }

    #[test]
    fn corrupt_blobs_are_errors_not_panics() {
        let good = sample();
        assert!(Tree::parse(&[]).is_err());
        assert!(Tree::parse(b"not a device tree at all, not at all, no").is_err());
        // Every truncation and every single-byte corruption of the header and structure.
        for len in 0..good.len() {
            let _ = Tree::parse(&good[..len]);
        }
        for i in 0..good.len() {
            for v in [0x00, 0xff, 0x7f, 0x01] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = Tree::parse(&bad);
            }
        }
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Tree::parse(&huge).is_err());
    }
}
