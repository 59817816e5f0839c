//! The build output a test boots: the flashable image of `scripts/build-image.sh`, its
//! `build.json` and the development keys beside it; and where `boot-a` lies in it.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub const SECTOR: u64 = 512;
/// Offset of `boot-a` in the image (first usable LBA 32768).
pub const BOOT_A_OFFSET: u64 = 32768 * SECTOR;

/// The build output the tests boot.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub manifest: Value,
}

impl Image {
    /// The image of `ATOMIX_IMAGE_DIR` (default `build/`); fails loudly when there is none.
    pub fn built() -> Image {
        let dir = std::env::var_os("ATOMIX_IMAGE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../build"));
        Image::in_dir(dir)
    }

    /// The build output in `dir` (an image, its `build.json`, U-Boot and dev keys).
    pub fn in_dir(dir: PathBuf) -> Image {
        let manifest_path = dir.join("build.json");
        let text = fs::read_to_string(&manifest_path).unwrap_or_else(|e| {
            panic!(
                "no built image in {} ({e}): run scripts/build-image.sh first",
                dir.display()
            )
        });
        Image {
            manifest: serde_json::from_str(&text).expect("build.json"),
            dir,
        }
    }

    pub fn disk(&self) -> PathBuf {
        self.dir.join("atomixos-rock64.img")
    }

    pub fn build_id(&self) -> &str {
        self.manifest["build_id"].as_str().expect("build_id")
    }

    /// The development provisioning key the image trusts (made by the build).
    pub fn provisioning_key(&self) -> PathBuf {
        self.dir.join("dev-provisioning-key")
    }
}
