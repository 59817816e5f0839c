//! Quadlet units (`.container`, `.volume`) through typed structs: one fixed section and
//! key order, values quoted the systemd way, so re-rendering is byte-identical.

use std::collections::BTreeSet;

use super::{header, RenderedTree};
use crate::schema::{Config, Container};
use crate::values::VolumeSource;

/// A unit file: sections in order, keys in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    pub sections: Vec<(&'static str, Vec<(&'static str, String)>)>,
}

impl UnitFile {
    pub fn to_text(&self, header: &str) -> String {
        let mut out = String::from(header);
        for (name, entries) in &self.sections {
            if entries.is_empty() {
                continue;
            }
            out.push('\n');
            out.push_str(&format!("[{name}]\n"));
            for (key, value) in entries {
                out.push_str(&format!("{key}={value}\n"));
            }
        }
        out
    }
}

/// Escapes `%` (systemd specifiers) in a value that is not split into words.
pub fn escape_specifiers(s: &str) -> String {
    s.replace('%', "%%")
}

/// Quotes one word for a key that systemd (or Quadlet) splits into words: plain words
/// stay as they are, anything else is double-quoted with `\` and `"` escaped; `%` is
/// always doubled. Values never contain control characters (validation refuses them).
pub fn quote_word(s: &str, in_exec: bool) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:=,+@".contains(&b));
    let s = escape_specifiers(s);
    if plain {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            // systemd expands $VAR in command lines; $$ is a literal $.
            '$' if in_exec => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Quadlet `.container` unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUnit {
    pub name: String,
    pub image: String,
    pub environment: Vec<(String, String)>,
    pub publish: Vec<String>,
    /// `SOURCE:DEST[:OPTIONS]`, named volumes as `NAME.volume`.
    pub volumes: Vec<String>,
    pub exec: Vec<String>,
    pub restart: &'static str,
    pub wanted_by: &'static str,
}

impl ContainerUnit {
    pub fn from_config(c: &Container) -> Self {
        let name = c.name.get_ref().to_string();
        ContainerUnit {
            image: c.image.get_ref().to_string(),
            environment: c
                .environment
                .iter()
                .map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone()))
                .collect(),
            publish: c.publish.iter().map(|p| p.get_ref().to_string()).collect(),
            volumes: c
                .volumes
                .iter()
                .map(|v| {
                    let v = v.get_ref();
                    let source = match &v.source {
                        VolumeSource::Named(n) => format!("{n}.volume"),
                        VolumeSource::HostPath(p) => p.clone(),
                    };
                    let mut s = format!("{source}:{}", v.dest);
                    if !v.options.is_empty() {
                        s.push(':');
                        s.push_str(&v.options.join(","));
                    }
                    s
                })
                .collect(),
            exec: c.exec.iter().map(|a| a.get_ref().clone()).collect(),
            restart: c.restart.as_systemd(),
            wanted_by: if c.rootless {
                "default.target"
            } else {
                "multi-user.target"
            },
            name,
        }
    }

    pub fn unit(&self) -> UnitFile {
        let mut container = vec![
            ("ContainerName", self.name.clone()),
            ("Image", escape_specifiers(&self.image)),
        ];
        for (k, v) in &self.environment {
            container.push((
                "Environment", // Quadlet copies Environment= into ExecStart (`--env K=V`), where systemd
                // expands `$`: escape it as in Exec=.
                quote_word(&format!("{k}={v}"), true),
            ));
        }
        for p in &self.publish {
            container.push(("PublishPort", p.clone()));
        }
        for v in &self.volumes {
            // Quadlet copies Volume= into ExecStart as it is, where systemd expands `$`.
            container.push(("Volume", escape_specifiers(v).replace('$', "$$")));
        }
        if !self.exec.is_empty() {
            let words: Vec<String> = self.exec.iter().map(|a| quote_word(a, true)).collect();
            container.push(("Exec", words.join(" ")));
        }
        UnitFile {
            sections: vec![
                (
                    "Unit",
                    vec![("Description", format!("AtomixOS container {}", self.name))],
                ),
                ("Container", container),
                (
                    "Service",
                    vec![
                        ("Restart", self.restart.to_owned()),
                        // Pulling an image on a slow uplink takes longer than the default 90s.
                        ("TimeoutStartSec", "900".to_owned()),
                    ],
                ),
                ("Install", vec![("WantedBy", self.wanted_by.to_owned())]),
            ],
        }
    }
}

/// A Quadlet `.volume` unit; the podman volume keeps the configured name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeUnit {
    pub name: String,
}

impl VolumeUnit {
    pub fn unit(&self) -> UnitFile {
        UnitFile {
            sections: vec![
                (
                    "Unit",
                    vec![("Description", format!("AtomixOS volume {}", self.name))],
                ),
                ("Volume", vec![("VolumeName", self.name.clone())]),
            ],
        }
    }
}

pub(super) fn render_into(config: &Config, sha256: &str, tree: &mut RenderedTree) {
    let head = header(sha256);
    for rootless in [false, true] {
        let set = if rootless {
            "quadlet/rootless"
        } else {
            "quadlet/rootful"
        };
        let mut volumes = BTreeSet::new();
        for c in config.containers.iter().filter(|c| c.rootless == rootless) {
            let unit = ContainerUnit::from_config(c);
            tree.add(
                format!("{set}/{}.container", unit.name),
                unit.unit().to_text(&head),
            );
            for v in &c.volumes {
                if let VolumeSource::Named(n) = &v.get_ref().source {
                    volumes.insert(n.clone());
                }
            }
        }
        for name in volumes {
            let unit = VolumeUnit { name: name.clone() }.unit();
            tree.add(format!("{set}/{name}.volume"), unit.to_text(&head));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        let cases = [
            ("--port", "--port"),
            ("8443", "8443"),
            ("a b", "\"a b\""),
            ("", "\"\""),
            ("100%", "\"100%%\""),
            ("say \"hi\"", "\"say \\\"hi\\\"\""),
            ("C:\\x", "\"C:\\\\x\""),
            ("$HOME", "\"$$HOME\""),
            ("K=v", "K=v"),
        ];
        for (input, want) in cases {
            assert_eq!(quote_word(input, true), want, "{input}");
        }
        assert_eq!(quote_word("$HOME", false), "\"$HOME\"");
        {}
    }
}
