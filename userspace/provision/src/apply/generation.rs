//! Generations read back from the store: checked and rendered again by this build,
//! with their bundle files, as the [`Desired`] state a re-apply or rollback syncs to.

use std::collections::BTreeMap;
use std::path::Path;

use atomix_config::generations::Store;

use super::Desired;
use crate::input::Accepted;

/// A generation read back from the store, checked and rendered by this build.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub n: u64,
    pub desired: Desired,
    pub lan_address: std::net::Ipv4Addr,
}

/// Reads generation `n`: its config.toml is checked and rendered again (so a new image's
/// renderer applies), its bundle files read from `apps/`.
pub fn load_generation(store: &Store, n: u64) -> Result<Loaded, String> {
    let dir = store.path(n);
    let text = std::fs::read_to_string(dir.join("config.toml"))
        .map_err(|e| format!("cannot read generation {n}: {e}"))?;
    let accepted = crate::input::check_text(text, read_apps(&dir.join("apps"))?).map_err(|r| {
        format!(
            "generation {n} is not valid for this build: {}",
            r.lines().join("; ")
        )
    })?;
    Ok(Loaded {
        n,
        lan_address: accepted.config.network.lan.address.get_ref().addr,
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

fn read_apps(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| format!("cannot read {}: {e}", d.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("under dir");
                let bytes =
                    std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                out.insert(format!("apps/{}", rel.display()), bytes);
            }
        }
    }
    Ok(out)
}
