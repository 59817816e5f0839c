//! `atomix-initrd`: the AtomixOS early-boot provisioner.
fn main() {}
