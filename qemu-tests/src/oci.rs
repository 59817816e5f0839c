//! A container image no registry serves, built offline: an OCI image archive
//! (`oci-archive:` layout in a tar) of Debian's static arm64 busybox, which runs
//! `busybox httpd` in the foreground on port 8081, serving `/srv`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::host;

/// The port the image's httpd listens on, inside the container.
pub const HELLO_PORT: u16 = 8081;

/// Where the busybox package is downloaded once (outside the clone, like the image caches).
fn cache_dir() -> PathBuf {
    let base = std::env::var_os("ATOMIX_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/atomix"), PathBuf::from);
    base.join("test-debs")
}

/// Debian's static arm64 busybox, from the package archive (downloaded when missing).
fn busybox_arm64(work: &Path) -> Vec<u8> {
    let cache = cache_dir();
    fs::create_dir_all(&cache).unwrap();
    let find = || {
        fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with("busybox-static_") && name.ends_with("_arm64.deb")
            })
    };
    let deb = match find() {
        Some(deb) => deb,
        None => {
            host(
                Command::new("apt-get")
                    .args(["download", "busybox-static:arm64"])
                    .current_dir(&cache),
            );
            find().expect("apt-get download busybox-static:arm64 left no .deb")
        }
    };
    let root = work.join("busybox-static");
    host(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let binary = fs::read(root.join("bin/busybox")).unwrap();
    // An aarch64 ELF: e_machine 183 (EM_AARCH64) at offset 18.
    assert_eq!(
        &binary[..4],
        b"\x7fELF",
        "{} is not an ELF file",
        deb.display()
    );
    assert_eq!(
        u16::from_le_bytes([binary[18], binary[19]]),
        183,
        "not aarch64"
    );
    binary
}

fn digest(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, bytes: &[u8]) {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, path, bytes).unwrap();
}

/// The archive's bytes: an OCI layout (`oci-layout`, `index.json`, `blobs/sha256/...`)
/// with one uncompressed layer holding `/bin/busybox` and an empty `/srv`.
pub fn hello_image_archive(work: &Path) -> Vec<u8> {
    let busybox = busybox_arm64(work);
    let mut layer = tar::Builder::new(Vec::new());
    append(&mut layer, "bin/busybox", 0o755, &busybox);
    let mut srv = tar::Header::new_ustar();
    srv.set_entry_type(tar::EntryType::Directory);
    srv.set_size(0);
    srv.set_mode(0o755);
    srv.set_mtime(0);
    srv.set_cksum();
    layer
        .append_data(&mut srv, "srv/", std::io::empty())
        .unwrap();
    let layer = layer.into_inner().unwrap();

    let config = serde_json::to_vec(&json!({
        "architecture": "arm64",
        "os": "linux",
        "config": {
            "Entrypoint": ["/bin/busybox"],
            "Cmd": ["httpd", "-f", "-v", "-p", HELLO_PORT.to_string(), "-h", "/srv"],
            "ExposedPorts": { format!("{HELLO_PORT}/tcp"): {} },
        },
        "rootfs": { "type": "layers", "diff_ids": [digest(&layer)] },
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest(&layer),
            "size": layer.len(),
        }],
    }))
    .unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&manifest),
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": "localhost/atomix-hello:1" },
        }],
    }))
    .unwrap();

    let mut archive = tar::Builder::new(Vec::new());
    append(
        &mut archive,
        "oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    append(&mut archive, "index.json", 0o644, &index);
    for blob in [&layer, &config, &manifest] {
        let name = digest(blob).replace("sha256:", "blobs/sha256/");
        append(&mut archive, &name, 0o644, blob);
    }
    archive.into_inner().unwrap()
}

/// A gzip config bundle: `config.toml` and `files` (paths under `apps/`).
pub fn bundle(config: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let header = |len: usize| {
        let mut h = tar::Header::new_ustar();
        h.set_size(len as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        h
    };
    tar.append_data(&mut header(config.len()), "config.toml", config.as_bytes())
        .unwrap();
    for (path, bytes) in files {
        tar.append_data(&mut header(bytes.len()), path, *bytes)
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}
