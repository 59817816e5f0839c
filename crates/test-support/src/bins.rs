//! Binaries of other packages of the workspace. Cargo builds a package's binaries only
//! for that package's own tests, so a test that runs another's builds it (a no-op when
//! fresh) into the target directory the test itself was built in.

use std::path::PathBuf;
use std::process::Command;

/// `cargo build -p package --bin bin`, then the path of the binary beside the running
/// test's own directory (`target/debug/deps/TEST-HASH` → `target/debug/BIN`).
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build -p {package} --bin {bin}");
    let exe = std::env::current_exe().expect("the test's own path");
    let built = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps")
        .join(bin);
    assert!(built.is_file(), "{} was not built", built.display());
    built
}

#[cfg(test)]
mod tests {
    #[test]
    fn builds_another_packages_binary_beside_the_test() {
        let bin = super::workspace_bin("atomix-initrd", "atomix-initrd");
        let out = std::process::Command::new(&bin)
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", bin.display());
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("atomix-initrd "));
    }
}
