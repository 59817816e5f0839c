//! Cross-field checks: what no single value's type can know (duplicates, clashes,
//! addresses outside their subnet, values systemd cannot carry).

use crate::diagnostic::{Finding, Findings};
use crate::schema::{Config, Zone, SCHEMA_VERSION};
use crate::values::{Proto, VolumeSource};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// Host ports the device itself serves on the LAN, which containers must not take.
pub const LAN_SERVICE_PORTS: &[(u16, Proto, &str)] = &[
    (22, Proto::Tcp, "the device's SSH port"),
    (8080, Proto::Tcp, "the provisioning console's port"),
];

/// Checks a decoded config, with the names of the files that came with it in a bundle
/// (`apps/...`; none for a plain config.toml); findings pointing into placeholders (keys
/// that were missing, reported already) are dropped.
pub fn validate(config: &Config, bundle_files: &BTreeSet<&str>, out: &mut Findings) {
    check(config, out);
    check_archives(config, bundle_files, out);
}

fn check(c: &Config, out: &mut Findings) {
    if *c.schema.get_ref() != SCHEMA_VERSION {
        out.push(Finding::error(
            c.schema.span(),
            "schema",
            format!(
                "unsupported schema version {} (this build reads {SCHEMA_VERSION})",
                c.schema.get_ref()
            ),
        ));
    }
    if c.admin.ssh_authorized_keys.get_ref().is_empty() {
        out.push(Finding::error(
            c.admin.ssh_authorized_keys.span(),
            "admin.ssh-authorized-keys",
            "at least one SSH public key is required",
        ));
    }
    check_network(c, out);
    check_firewall(c, out);
    check_containers(c, out);
    check_update(c, out);
}

/// The timer installs from `url`: enabling it without one is an error at `rauc`. A
/// device has one update source: each of the timer's keys written beside
/// `[update.hawkbit]` is an error where it is written.
fn check_update(c: &Config, out: &mut Findings) {
    if c.update.timer() && c.update.url.is_none() {
        out.push(Finding::error(
            c.update.rauc.span(),
            "update.url",
            "rauc = true needs url (the RAUC bundle the update timer installs)",
        ));
    }
    if let Some(h) = &c.update.hawkbit {
        let h = h.get_ref();
        let url = h.url.to_string();
        let http = url.starts_with("http://");
        // A missing url is decode's placeholder (https://, reported already): the opt-in
        // is not refused for it.
        let insecure = h
            .insecure_http_token
            .as_ref()
            .filter(|i| *i.get_ref() && url != "https://placeholder");
        match (&h.token_file, insecure) {
            (Some(file), None) if http => out.push(Finding::error(
                file.span(),
                "update.hawkbit.token-file",
                format!(
                    "the token would travel in clear text to {}, readable and reusable by anyone on the way; use an https:// url",
                    h.url
                ),
            )),
            (_, Some(i)) if !http => out.push(Finding::error(
                i.span(),
                "update.hawkbit.insecure-http-token",
                "only for an http:// url (over https:// the token is encrypted)",
            )),
            _ => {}
        }
    }
    if c.update.hawkbit.is_some() {
        for (span, key) in c.update.timer_keys() {
            out.push(Finding::error(
                span,
                format!("update.{key}"),
                "the update timer (rauc, url, interval) and [update.hawkbit] are mutually exclusive: a device takes its updates from one source",
            ));
        }
    }
}

fn check_network(c: &Config, out: &mut Findings) {
    let wan = &c.network.wan;
    let lan = &c.network.lan;
    let lan_net = *lan.address.get_ref();
    if *wan.dhcp.get_ref() {
        if let Some(a) = &wan.address {
            out.push(Finding::error(
                a.span(),
                "network.wan.address",
                "only used with dhcp = false",
            ));
        }
        if let Some(g) = &wan.gateway {
            out.push(Finding::error(
                g.span(),
                "network.wan.gateway",
                "only used with dhcp = false",
            ));
        }
    } else {
        for (missing, key) in [
            (wan.address.is_none(), "address"),
            (wan.gateway.is_none(), "gateway"),
            (wan.dns.is_empty(), "dns"),
        ] {
            if missing {
                out.push(Finding::error(
                    wan.dhcp.span(),
                    format!("network.wan.{key}"),
                    format!("dhcp = false needs {key}"),
                ));
            }
        }
        if let Some(a) = &wan.address {
            let net = *a.get_ref();
            if net.is_network_or_broadcast(net.addr) {
                out.push(Finding::error(
                    a.span(),
                    "network.wan.address",
                    format!(
                        "{} is the network or broadcast address of {}",
                        net.addr,
                        net.network()
                    ),
                ));
            }
            if let Some(g) = &wan.gateway {
                if !net.contains(*g.get_ref()) {
                    out.push(Finding::error(
                        g.span(),
                        "network.wan.gateway",
                        format!("{} is outside {}", g.get_ref(), net.network()),
                    ));
                }
            }
            if net.overlaps(lan_net) {
                out.push(Finding::error(
                    a.span(),
                    "network.wan.address",
                    format!("{} overlaps the LAN {}", net.network(), lan_net.network()),
                ));
            }
        }
    }
    if lan_net.prefix > 30 {
        out.push(Finding::error(
            lan.address.span(),
            "network.lan.address",
            "the LAN prefix must be /30 or shorter",
        ));
    } else if lan_net.is_network_or_broadcast(lan_net.addr) {
        out.push(Finding::error(
            lan.address.span(),
            "network.lan.address",
            format!(
                "{} is the network or broadcast address of {}",
                lan_net.addr,
                lan_net.network()
            ),
        ));
    }
    if let Some(r) = &lan.dhcp_range {
        let net = lan_net.network();
        for (ip, key) in [(&r.start, "start"), (&r.end, "end")] {
            let path = format!("network.lan.dhcp-range.{key}");
            if !lan_net.contains(*ip.get_ref()) {
                out.push(Finding::error(
                    ip.span(),
                    path,
                    format!("{} is outside {net}", ip.get_ref()),
                ));
            } else if lan_net.is_network_or_broadcast(*ip.get_ref()) {
                out.push(Finding::error(
                    ip.span(),
                    path,
                    format!(
                        "{} is the network or broadcast address of {net}",
                        ip.get_ref()
                    ),
                ));
            }
        }
        let (start, end) = (u32::from(*r.start.get_ref()), u32::from(*r.end.get_ref()));
        if start > end {
            out.push(Finding::error(
                r.end.span(),
                "network.lan.dhcp-range.end",
                format!("{} is before start {}", r.end.get_ref(), r.start.get_ref()),
            ));
        } else if lan_net.contains(*r.start.get_ref())
            && lan_net.contains(*r.end.get_ref())
            && (start..=end).contains(&u32::from(lan_net.addr))
        {
            out.push(Finding::error(
                r.start.span(),
                "network.lan.dhcp-range",
                format!(
                    "the range includes the device's own address {}",
                    lan_net.addr
                ),
            ));
        }
    }
}

fn check_firewall(c: &Config, out: &mut Findings) {
    let mut seen: BTreeSet<(Zone, Proto, u16, u16, Option<String>)> = BTreeSet::new();
    for (i, rule) in c.firewall.allow.iter().enumerate() {
        let path = format!("firewall.allow[{i}].port");
        let port = *rule.port.get_ref();
        if rule.zone == Zone::Lan {
            for (p, proto, what) in LAN_SERVICE_PORTS {
                if *proto == rule.proto && port.first == *p && port.last == *p {
                    out.push(Finding::warning(
                        rule.port.span(),
                        path.clone(),
                        format!("{p}/{proto} is open on the LAN anyway ({what})"),
                    ));
                }
            }
        }
        let key = (
            rule.zone,
            rule.proto,
            port.first,
            port.last,
            rule.source.map(|s| s.network().to_string()),
        );
        if !seen.insert(key) {
            out.push(Finding::warning(
                rule.port.span(),
                path,
                "the same rule is given twice",
            ));
        }
    }
}

fn is_env_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Characters systemd unit files cannot carry in a value (a newline ends the line).
fn systemd_unsafe(s: &str) -> bool {
    s.chars().any(|c| c.is_control())
}

/// An `oci-archive:` image must come in the bundle with the config.
fn check_archives(c: &Config, bundle_files: &BTreeSet<&str>, out: &mut Findings) {
    for (i, ctr) in c.containers.iter().enumerate() {
        let Some(member) = ctr.image.get_ref().bundle_archive() else {
            continue;
        };
        if !bundle_files.contains(member.as_str()) {
            out.push(Finding::error(
                ctr.image.span(),
                format!("containers[{i}].image"),
                format!("{member} is not in the bundle: an image archive comes in a config bundle, next to config.toml"),
            ));
        }
    }
}

/// Host ports taken so far by published ports, for finding clashes in n log n: a port
/// published on every address clashes with any other use of it, one published on an
/// address with uses on that address or on every address.
#[derive(Default)]
struct HostPorts {
    /// (port, proto) -> the first use on every address and the first per address, each
    /// as (order of insertion, container index).
    taken: BTreeMap<(u16, Proto), PortUses>,
    count: usize,
}

#[derive(Default)]
struct PortUses {
    first: Option<(usize, usize)>,
    any_address: Option<(usize, usize)>,
    by_address: BTreeMap<Ipv4Addr, (usize, usize)>,
}

impl HostPorts {
    /// The container that already publishes this host port, else records it for `ctr`.
    fn take(&mut self, ip: Option<Ipv4Addr>, port: u16, proto: Proto, ctr: usize) -> Option<usize> {
        let uses = self.taken.entry((port, proto)).or_default();
        let clash = match ip {
            None => uses.first,
            Some(ip) => [uses.any_address, uses.by_address.get(&ip).copied()]
                .into_iter()
                .flatten()
                .min(),
        };
        if let Some((_, other)) = clash {
            return Some(other);
        }
        let entry = (self.count, ctr);
        self.count += 1;
        uses.first.get_or_insert(entry);
        match ip {
            None => {
                uses.any_address.get_or_insert(entry);
            }
            Some(ip) => {
                uses.by_address.entry(ip).or_insert(entry);
            }
        }
        None
    }
}

/// The ports `firewall.allow` opens on the WAN, per protocol, as a table of all 65536
/// ports filled from the rules' ranges in one pass (rules x ports would be quadratic).
struct WanOpen {
    tcp: Vec<bool>,
    udp: Vec<bool>,
}

impl WanOpen {
    fn new(c: &Config) -> Self {
        let mut delta = [vec![0i64; 65537], vec![0i64; 65537]];
        for r in c.firewall.allow.iter().filter(|r| r.zone == Zone::Wan) {
            let d = &mut delta[usize::from(r.proto == Proto::Udp)];
            let p = r.port.get_ref();
            d[usize::from(p.first)] += 1;
            d[usize::from(p.last) + 1] -= 1;
        }
        let open = |d: &[i64]| {
            let mut sum = 0;
            d[..65536]
                .iter()
                .map(|x| {
                    sum += x;
                    sum > 0
                })
                .collect()
        };
        WanOpen {
            tcp: open(&delta[0]),
            udp: open(&delta[1]),
        }
    }

    fn contains(&self, proto: Proto, port: u16) -> bool {
        match proto {
            Proto::Tcp => self.tcp[usize::from(port)],
            Proto::Udp => self.udp[usize::from(port)],
        }
    }
}

fn check_containers(c: &Config, out: &mut Findings) {
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut host_ports = HostPorts::default();
    let wan_open = WanOpen::new(c);
    let mut volume_modes: BTreeMap<&str, (bool, usize)> = BTreeMap::new();
    for (i, ctr) in c.containers.iter().enumerate() {
        let name = ctr.name.get_ref().as_str();
        if let Some(first) = names.get(name) {
            out.push(Finding::error(
                ctr.name.span(),
                format!("containers[{i}].name"),
                format!("duplicate container name {name:?} (also containers[{first}])"),
            ));
        } else {
            names.insert(name, i);
        }
        for (j, p) in ctr.publish.iter().enumerate() {
            let path = format!("containers[{i}].publish[{j}]");
            let pb = p.get_ref();
            for (port, proto, what) in LAN_SERVICE_PORTS {
                if pb.host_port == *port && pb.proto == *proto {
                    out.push(Finding::error(
                        p.span(),
                        path.clone(),
                        format!("host port {port}/{proto} is {what}"),
                    ));
                }
            }
            if pb.proto == Proto::Udp && pb.host_port == 67 && c.network.lan.dhcp_range.is_some() {
                out.push(Finding::error(
                    p.span(),
                    path.clone(),
                    "host port 67/udp is the LAN DHCP server's",
                ));
            }
            if pb.host_port == 53 && c.network.lan.dns {
                out.push(Finding::error(p.span(), path.clone(), format!("host port 53/{} is the LAN DNS server's (set network.lan.dns = false to free it)", pb.proto)));
            }
            if let Some(other) = host_ports.take(pb.host_ip, pb.host_port, pb.proto, i) {
                out.push(Finding::error(
                    p.span(),
                    path.clone(),
                    format!(
                        "host port {}/{} is already published by containers[{other}]",
                        pb.host_port, pb.proto
                    ),
                ));
            }
            if ctr.rootless && pb.host_port < 1024 {
                out.push(Finding::warning(
                    p.span(),
                    path.clone(),
                    format!(
                        "a rootless container cannot bind host port {} below 1024",
                        pb.host_port
                    ),
                ));
            }
            let on_wan = pb
                .host_ip
                .is_none_or(|ip| !ip.is_loopback() && ip != c.network.lan.address.get_ref().addr);
            let allowed = wan_open.contains(pb.proto, pb.host_port);
            if on_wan && !allowed {
                out.push(Finding::warning(
                    p.span(),
                    path,
                    format!(
                        "host port {}/{} is not opened on the WAN by any firewall.allow rule",
                        pb.host_port, pb.proto
                    ),
                ));
            }
        }
        let mut dests: BTreeMap<&str, usize> = BTreeMap::new();
        for (j, v) in ctr.volumes.iter().enumerate() {
            let path = format!("containers[{i}].volumes[{j}]");
            let vm = v.get_ref();
            if let Some(k) = dests.insert(vm.dest.as_str(), j) {
                out.push(Finding::error(
                    v.span(),
                    path.clone(),
                    format!("{} is already mounted by volumes[{k}]", vm.dest),
                ));
            }
            if let VolumeSource::Named(n) = &vm.source {
                match volume_modes.get(n.as_str()) {
                    Some((rootless, other)) if *rootless != ctr.rootless => {
                        out.push(Finding::warning(v.span(), path, format!("volume {n:?} is also used by containers[{other}], which runs {}: they get separate volumes", if *rootless { "rootless" } else { "rootful" })));
                    }
                    Some(_) => {}
                    None => {
                        volume_modes.insert(n, (ctr.rootless, i));
                    }
                }
            }
        }
        for (k, v) in &ctr.environment {
            let path = format!("containers[{i}].environment.{}", k.get_ref());
            if !is_env_name(k.get_ref()) {
                out.push(Finding::error(
                    k.span(),
                    path.clone(),
                    format!(
                        "{:?} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                        k.get_ref()
                    ),
                ));
            }
            if systemd_unsafe(v.get_ref()) {
                out.push(Finding::error(v.span(), path, "a value with a newline or other control character cannot be carried by a systemd unit"));
            }
        }
        let image = ctr.image.get_ref().to_string();
        let registry = image.split_once('/').map(|(first, _)| first);
        if !registry.is_some_and(|r| r.contains('.') || r.contains(':') || r == "localhost") {
            out.push(Finding::warning(
                ctr.image.span(),
                format!("containers[{i}].image"),
                format!("{image} is not fully qualified (e.g. docker.io/library/{image}): podman resolves short names through its registries list"),
            ));
        }
        for (j, arg) in ctr.exec.iter().enumerate() {
            // Quadlet drops an empty word and everything after it, and a lone `;`
            // would end the command line of ExecStart.
            if arg.get_ref().is_empty() || arg.get_ref() == ";" {
                out.push(Finding::error(
                    arg.span(),
                    format!("containers[{i}].exec[{j}]"),
                    "an empty or \";\" argument cannot be carried through Quadlet",
                ));
            }
            if systemd_unsafe(arg.get_ref()) {
                out.push(Finding::error(arg.span(), format!("containers[{i}].exec[{j}]"), "an argument with a newline or other control character cannot be carried by a systemd unit"));
            }
        }
    }
}
