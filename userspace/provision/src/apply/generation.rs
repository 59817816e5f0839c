//! Generations read back from the store: checked and rendered again by this build,
//! with their bundle files, as the [`Desired`] state a re-apply or rollback syncs to;
//! and the LAN address of one, checked but not rendered, for the listeners.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _, Result};
use atomix_config::generations::Store;

use super::Desired;
use crate::input::Accepted;

/// A generation read back from the store, checked and rendered by this build.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub n: u64,
    pub desired: Desired,
}

/// Reads generation `n`: its config.toml is checked and rendered again (so a new image's
/// renderer applies), its bundle files read from `apps/`.
pub fn load_generation(store: &Store, n: u64) -> Result<Loaded> {
    let dir = store.path(n);
    let text = std::fs::read_to_string(dir.join("config.toml"))
        .with_context(|| format!("cannot read generation {n}"))?;
    let accepted = crate::input::check_text(text, read_apps(&dir.join("apps"))?).map_err(|r| {
        anyhow!(
            "generation {n} is not valid for this build: {}",
            r.lines().join("; ")
        )
    })?;
    Ok(Loaded {
        n,
        desired: desired_of(&accepted, &atomix_config::config_sha256(&accepted.text)),
    })
}

/// What the live system should hold for an accepted config whose text hashes to
/// `config_sha256` (named in the rendered files' headers).
pub(crate) fn desired_of(a: &Accepted, config_sha256: &str) -> Desired {
    Desired {
        tree: atomix_config::render::render(&a.config, config_sha256),
        apps: a.apps.clone(),
    }
}

/// The LAN address of generation `n`, from its config.toml as this build checks it
/// (with the names of its bundle files, which the config may refer to). None where its
/// config.toml cannot be read or is not valid for this build. Nothing is rendered and
/// no bundle file is read, only listed: a generation whose bundle file cannot be read
/// (an I/O error, a FIFO) still has its address here, so the listener narrows to the LAN,
/// while [`load_generation`] of it fails and its restore and re-apply say so.
pub fn lan_address(store: &Store, n: u64) -> Option<Ipv4Addr> {
    let config = config_of(store, n)?;
    Some(config.network.lan.address.get_ref().addr)
}

/// The config of generation `n` as this build checks it, its bundle files listed but
/// not read; None where it cannot be read or is not valid for this build.
pub fn config_of(store: &Store, n: u64) -> Option<atomix_config::schema::Config> {
    let dir = store.path(n);
    let text = std::fs::read_to_string(dir.join("config.toml")).ok()?;
    let files = app_files(&dir.join("apps")).ok()?;
    let names = files.keys().map(String::as_str).collect();
    atomix_config::check_bundle("config.toml", &text, &names).config
}

fn read_apps(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for (name, p) in app_files(dir)? {
        let bytes = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
        out.insert(name, bytes);
    }
    Ok(out)
}

/// A generation's bundle files: `apps/<container>/...` to where they are stored.
fn app_files(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("under dir");
                out.insert(format!("apps/{}", rel.display()), p);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::fixture::{Device, EXAMPLE};
    use crate::input::check_text;

    #[test]
    fn the_lan_address_is_read_only_from_a_generation_this_build_accepts() {
        let dev = Device::provisioned();
        let store = dev.store();
        assert_eq!(
            lan_address(&store, 1),
            Some(Ipv4Addr::new(192, 168, 100, 1))
        );
        assert_eq!(lan_address(&store, 2), None, "no such generation");
        let config = store.path(1).join("config.toml");
        std::fs::write(&config, "schema = 99\n").unwrap();
        assert_eq!(lan_address(&store, 1), None);
        assert!(load_generation(&store, 1).is_err());
    }

    /// The config may name its bundle files (an image archive): they count as there.
    #[test]
    fn a_generation_with_an_image_archive_has_its_lan_address() {
        let dev = Device::new();
        let text = format!(
            "{EXAMPLE}\n[[containers]]\nname = \"hello\"\nimage = \"oci-archive:/data/apps/hello/hello.tar\"\n"
        );
        let apps = BTreeMap::from([("apps/hello/hello.tar".to_owned(), b"archive".to_vec())]);
        let accepted = check_text(text, apps).expect("valid config");
        let (outcome, _) = dev.import_accepted(&dev.applier, accepted, None);
        assert!(outcome.succeeded(), "{outcome:?}");
        assert_eq!(
            lan_address(&dev.store(), 1),
            Some(Ipv4Addr::new(192, 168, 100, 1))
        );
    }
}
