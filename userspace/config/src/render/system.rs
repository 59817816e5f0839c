//! System files: systemd-networkd for eth0 (WAN) and eth1 (LAN), dnsmasq, chrony,
//! the nftables ruleset, hostname, timezone and the admin's authorized_keys.
//!
//! Multicast DNS is answered by the provisioning service itself (its `announce`
//! module: on the LAN alone once provisioned, on both ports before), not by
//! systemd-resolved, whose responder the image turns off: so the network files say
//! nothing about it, and the firewall opens UDP 5353 on the LAN alone.

use std::fmt::Write as _;

use super::{header, RenderedTree};
use crate::schema::{Config, Zone};
use crate::values::Proto;

pub const WAN_IF: &str = "eth0";
pub const LAN_IF: &str = "eth1";

pub(super) fn render_into(config: &Config, sha256: &str, tree: &mut RenderedTree) {
    let head = header(sha256);
    tree.add("networkd/10-atomix-wan.network", wan_network(config, &head));
    tree.add("networkd/20-atomix-lan.network", lan_network(config, &head));
    tree.add("dnsmasq/atomix.conf", dnsmasq(config, &head));
    tree.add("chrony/atomix.sources", chrony(config, &head));
    tree.add("nftables/atomix.nft", nftables(config, &head));
    tree.add(
        "hostname",
        format!("{}\n", config.device.hostname.get_ref()),
    );
    tree.add("timezone", format!("{}\n", config.device.timezone));
    let mut keys = head.clone();
    for k in config.admin.ssh_authorized_keys.get_ref() {
        let _ = writeln!(keys, "{k}");
    }
    tree.add("authorized_keys", keys);
}

fn wan_network(c: &Config, head: &str) -> String {
    let wan = &c.network.wan;
    let mut s = format!("{head}\n[Match]\nName={WAN_IF}\n\n[Network]\n");
    if *wan.dhcp.get_ref() {
        s.push_str("DHCP=ipv4\n");
    } else {
        if let Some(a) = &wan.address {
            let _ = writeln!(s, "Address={}", a.get_ref());
        }
        if let Some(g) = &wan.gateway {
            let _ = writeln!(s, "Gateway={}", g.get_ref());
        }
    }
    for d in &wan.dns {
        let _ = writeln!(s, "DNS={}", d.get_ref());
    }
    if *wan.dhcp.get_ref() && !wan.dns.is_empty() {
        // Configured DNS servers replace the ones DHCP offers.
        s.push_str("\n[DHCPv4]\nUseDNS=no\n");
    }
    s
}

fn lan_network(c: &Config, head: &str) -> String {
    format!(
        "{head}\n[Match]\nName={LAN_IF}\n\n[Network]\nAddress={}\nConfigureWithoutCarrier=yes\n",
        c.network.lan.address.get_ref()
    )
}

fn dnsmasq(c: &Config, head: &str) -> String {
    let lan = &c.network.lan;
    let net = *lan.address.get_ref();
    let mut s = head.to_owned();
    let _ = writeln!(s, "interface={LAN_IF}");
    s.push_str("bind-dynamic\n");
    if lan.dns {
        s.push_str("domain-needed\nbogus-priv\n");
    } else {
        s.push_str("port=0\n");
    }
    if let Some(r) = &lan.dhcp_range {
        let mask = std::net::Ipv4Addr::from(if net.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - net.prefix)
        });
        let _ = writeln!(
            s,
            "dhcp-range={},{},{},{}",
            r.start.get_ref(),
            r.end.get_ref(),
            mask,
            r.lease
        );
        let _ = writeln!(s, "dhcp-option=option:router,{}", net.addr);
        if lan.dns {
            let _ = writeln!(s, "dhcp-option=option:dns-server,{}", net.addr);
        }
        s.push_str("dhcp-authoritative\n");
    }
    s
}

fn chrony(c: &Config, head: &str) -> String {
    let mut s = head.to_owned();
    for server in &c.time.ntp_servers {
        let _ = writeln!(s, "server {server} iburst");
    }
    s
}

/// The firewall. Only `table inet atomix` is replaced, so podman's own tables stay.
/// WAN inbound: established/related, DHCP replies (when WAN uses DHCP) and the
/// `firewall.allow` WAN rules, to the device and to published container ports (which
/// arrive DNATed, so they are matched on their original port in `forward`); else drop.
/// LAN inbound: SSH, DNS, DHCP, the console on 8080, multicast DNS (UDP 5353: the LAN is
/// the one port a provisioned device announces itself on), ICMP and the LAN rules; else
/// drop.
fn nftables(c: &Config, head: &str) -> String {
    let mut s = head.to_owned();
    s.push_str("table inet atomix\ndelete table inet atomix\n\ntable inet atomix {\n");
    s.push_str("\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n");
    let _ = writeln!(s, "\t\tiifname \"{WAN_IF}\" jump wan_input");
    let _ = writeln!(s, "\t\tiifname \"{LAN_IF}\" jump lan_input");
    s.push_str("\t}\n\n");

    s.push_str("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n");
    let _ = writeln!(s, "\t\tiifname \"{WAN_IF}\" jump wan_forward");
    s.push_str("\t}\n\n");

    s.push_str(
        "\tchain wan_input {\n\t\tct state established,related accept\n\t\tct state invalid drop\n",
    );
    if *c.network.wan.dhcp.get_ref() {
        s.push_str("\t\tudp sport 67 udp dport 68 accept\n");
    }
    for r in c.firewall.allow.iter().filter(|r| r.zone == Zone::Wan) {
        let _ = writeln!(
            s,
            "\t\t{}accept",
            rule_match(r.source, r.proto, &r.port.get_ref().to_string())
        );
    }
    s.push_str("\t\tdrop\n\t}\n\n");

    s.push_str("\tchain wan_forward {\n\t\tct state established,related accept\n\t\tct state invalid drop\n");
    for r in c.firewall.allow.iter().filter(|r| r.zone == Zone::Wan) {
        let src = r
            .source
            .map(|n| format!("ip saddr {} ", n.network()))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "\t\t{src}ct status dnat meta l4proto {} ct original proto-dst {} accept",
            r.proto,
            r.port.get_ref()
        );
    }
    s.push_str("\t\tdrop\n\t}\n\n");

    s.push_str(
        "\tchain lan_input {\n\t\tct state established,related accept\n\t\tct state invalid drop\n",
    );
    s.push_str("\t\tmeta l4proto { icmp, ipv6-icmp } accept\n");
    s.push_str("\t\ttcp dport { 22, 8080 } accept\n");
    s.push_str("\t\tudp dport 5353 accept\n");
    if c.network.lan.dns {
        s.push_str("\t\tmeta l4proto { tcp, udp } th dport 53 accept\n");
    }
    if c.network.lan.dhcp_range.is_some() {
        s.push_str("\t\tudp dport 67 accept\n");
    }
    for r in c.firewall.allow.iter().filter(|r| r.zone == Zone::Lan) {
        let _ = writeln!(
            s,
            "\t\t{}accept",
            rule_match(r.source, r.proto, &r.port.get_ref().to_string())
        );
    }
    s.push_str("\t\tdrop\n\t}\n}\n");
    s
}

fn rule_match(source: Option<crate::values::Ipv4Net>, proto: Proto, port: &str) -> String {
    let src = source
        .map(|n| format!("ip saddr {} ", n.network()))
        .unwrap_or_default();
    format!("{src}{proto} dport {port} ")
}

#[cfg(test)]
mod tests {
    use crate::render::{header, render, RenderedTree};

    const BASE: &str = "schema = 1\n[device]\nhostname = \"h\"\n[admin]\nssh-authorized-keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEe4xPVymZRl70Tj2o+I5S1YxR/KVel/B+JV/0KIat6V ops@laptop\"]\n[network.lan]\naddress = \"192.168.100.1/24\"\n";

    fn rendered(extra: &str) -> RenderedTree {
        let text = format!("{BASE}{extra}");
        let checked = crate::check("config.toml", &text);
        let config = checked
            .config
            .unwrap_or_else(|| panic!("{:#?}", checked.diagnostics));
        render(&config, "SHA")
    }

    #[test]
    fn the_network_files_as_rendered() {
        let tree = rendered("");
        let head = header("SHA");
        assert_eq!(
            tree.get("networkd/10-atomix-wan.network").unwrap(),
            format!("{head}\n[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n")
        );
        assert_eq!(
            tree.get("networkd/20-atomix-lan.network").unwrap(),
            format!(
                "{head}\n[Match]\nName=eth1\n\n[Network]\nAddress=192.168.100.1/24\nConfigureWithoutCarrier=yes\n"
            )
        );
    }

    #[test]
    fn multicast_dns_is_open_on_the_lan_only() {
        let tree = rendered("");
        let rules = tree.get("nftables/atomix.nft").unwrap();
        let chain = |name: &str| {
            let start = rules.find(&format!("chain {name} {{")).unwrap();
            let end = start + rules[start..].find("\t}").unwrap();
            rules[start..end].to_owned()
        };
        assert!(
            chain("lan_input").contains("\t\tudp dport 5353 accept\n"),
            "{rules}"
        );
        assert!(!chain("wan_input").contains("5353"), "{rules}");
        assert!(!chain("wan_forward").contains("5353"), "{rules}");
    }
}
