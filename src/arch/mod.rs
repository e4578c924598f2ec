//! The guest machine rvvmm builds. Pure data and functions: no KVM calls here.
pub mod riscv64;
