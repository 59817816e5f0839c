//! The responder's packets, built and read with `simple-dns` (its name compression
//! included): which of the publication's records a query asks for, and the responses
//! that carry them (answers, announcements, goodbyes).
//!
//! Only questions are read. A packet with the response bit set is dropped unread, and of
//! a query the answer, authority and additional sections (known answers, probes'
//! proposals) are never parsed: nothing a packet carries is kept.

use std::net::Ipv4Addr;

use atomix_api::discovery::SERVICE_TYPE;
use simple_dns::rdata::{RData, A, PTR, SRV, TXT};
use simple_dns::{Name, Packet, PacketFlag, ResourceRecord, CLASS, QCLASS, QTYPE, TYPE};

use super::Publication;

/// The largest datagram read; a longer one is dropped (RFC 6762 section 17: a
/// multicast DNS packet fits one Ethernet jumbo frame).
pub const MAX_QUERY: usize = 9000;

/// The largest response sent: one standard Ethernet frame's UDP payload (1500 less the
/// IPv4 and UDP headers), so a response is never fragmented.
pub const MAX_RESPONSE: usize = 1472;

/// Questions read of one query at most; a query with more has its first ones read.
const MAX_QUESTIONS: u16 = 16;

/// The TTL of the records naming the host (SRV, A) and of the others (PTR, TXT), as
/// RFC 6762 section 10 recommends.
const HOST_TTL: u32 = 120;
const OTHER_TTL: u32 = 4500;

/// What a question can ask of the publication; each is answered at most once a second
/// per interface (RFC 6762 section 6), in a slot of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// PTR `_services._dns-sd._udp.local`: the service types (RFC 6763 section 9).
    Services,
    /// PTR `_atomix._tcp.local`: the instance.
    Instance,
    /// SRV of the instance.
    Srv,
    /// TXT of the instance.
    Txt,
    /// A of the host.
    Address,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Services,
        Kind::Instance,
        Kind::Srv,
        Kind::Txt,
        Kind::Address,
    ];

    /// Its slot in a [`Kinds`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A set of [`Kind`]s.
pub type Kinds = [bool; Kind::ALL.len()];

/// Why a packet gets no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Shorter than a header or longer than [`MAX_QUERY`].
    Size,
    /// A response (or an opcode other than a standard query, or a response code).
    NotAQuery,
    /// No questions.
    Questions,
    /// Its questions do not parse.
    Malformed,
}

/// The names and data of a publication's records.
#[derive(Debug, Clone)]
pub struct Records {
    services: Name<'static>,
    service: Name<'static>,
    instance: Name<'static>,
    host: Name<'static>,
    port: u16,
    txt: Vec<String>,
}

fn name(labels: &[&str]) -> Result<Name<'static>, simple_dns::SimpleDnsError> {
    let labels = labels
        .iter()
        .map(|l| simple_dns::Label::new(l.as_bytes().to_vec()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Name::new_with_labels(&labels))
}

impl Records {
    /// The records of `p`; an error when a name or a TXT string does not fit DNS (a
    /// label over 63 bytes, a string over 255).
    pub fn new(p: &Publication) -> Result<Records, simple_dns::SimpleDnsError> {
        let (service, proto) = SERVICE_TYPE
            .split_once('.')
            .expect("the service type is _name._proto");
        let records = Records {
            services: name(&["_services", "_dns-sd", "_udp", "local"])?,
            service: name(&[service, proto, "local"])?,
            instance: name(&[&p.announcement.name, service, proto, "local"])?,
            host: name(&[&p.host, "local"])?,
            port: p.port,
            txt: p
                .announcement
                .txt()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        };
        records.txt_rdata()?;
        Ok(records)
    }

    fn txt_rdata(&self) -> Result<TXT<'_>, simple_dns::SimpleDnsError> {
        let mut txt = TXT::new();
        for s in &self.txt {
            txt.add_string(s)?;
        }
        Ok(txt)
    }

    /// The kinds of record the query in `packet` asks for (none: not for us). The
    /// packet's section counts are overwritten: only its questions are read.
    pub fn asked(&self, packet: &mut [u8]) -> Result<Kinds, Dropped> {
        if packet.len() < 12 || packet.len() > MAX_QUERY {
            return Err(Dropped::Size);
        }
        // QR (response), any opcode but 0 (a standard query), or a non-zero response
        // code (RFC 6762 section 18.11: silently ignored).
        if packet[2] & 0xf8 != 0 || packet[3] & 0x0f != 0 {
            return Err(Dropped::NotAQuery);
        }
        // The Z bit is ignored on receipt (section 18.8); the parser would refuse it.
        packet[3] &= !0x40;
        let questions = u16::from_be_bytes([packet[4], packet[5]]);
        if questions == 0 {
            return Err(Dropped::Questions);
        }
        // A query bundling many questions (as Bonjour's do) has its first ones read.
        let read = questions.min(MAX_QUESTIONS);
        packet[4..6].copy_from_slice(&read.to_be_bytes());
        packet[6..12].fill(0);
        neutralise_unknown_types(packet, read)?;
        let query = Packet::parse(packet).map_err(|_| Dropped::Malformed)?;
        let mut kinds = Kinds::default();
        for q in &query.questions {
            if !matches!(q.qclass, QCLASS::ANY | QCLASS::CLASS(CLASS::IN)) {
                continue;
            }
            let is = |t: TYPE| q.qtype == QTYPE::ANY || q.qtype == QTYPE::TYPE(t);
            if q.qname == self.services && is(TYPE::PTR) {
                kinds[Kind::Services.index()] = true;
            }
            if q.qname == self.service && is(TYPE::PTR) {
                kinds[Kind::Instance.index()] = true;
            }
            if q.qname == self.instance {
                kinds[Kind::Srv.index()] |= is(TYPE::SRV);
                kinds[Kind::Txt.index()] |= is(TYPE::TXT);
            }
            if q.qname == self.host && is(TYPE::A) {
                kinds[Kind::Address.index()] = true;
            }
        }
        Ok(kinds)
    }

    fn record(
        &self,
        kind: Kind,
        ttl: Option<u32>,
        addresses: &[Ipv4Addr],
    ) -> Vec<ResourceRecord<'_>> {
        let rr = |name: &Name<'static>, default_ttl, unique, rdata| {
            ResourceRecord::new(name.clone(), CLASS::IN, ttl.unwrap_or(default_ttl), rdata)
                .with_cache_flush(unique)
        };
        match kind {
            Kind::Services => vec![rr(
                &self.services,
                OTHER_TTL,
                false,
                RData::PTR(PTR(self.service.clone())),
            )],
            Kind::Instance => vec![rr(
                &self.service,
                OTHER_TTL,
                false,
                RData::PTR(PTR(self.instance.clone())),
            )],
            Kind::Srv => vec![rr(
                &self.instance,
                HOST_TTL,
                true,
                RData::SRV(SRV {
                    priority: 0,
                    weight: 0,
                    port: self.port,
                    target: self.host.clone(),
                }),
            )],
            Kind::Txt => vec![rr(
                &self.instance,
                OTHER_TTL,
                true,
                RData::TXT(self.txt_rdata().expect("checked in Records::new")),
            )],
            Kind::Address => addresses
                .iter()
                .map(|a| {
                    rr(
                        &self.host,
                        HOST_TTL,
                        true,
                        RData::A(A {
                            address: u32::from(*a),
                        }),
                    )
                })
                .collect(),
        }
    }

    /// The response carrying `kinds` as answers and, as additional records, what a
    /// browser asks next (RFC 6763 section 12): for the instance its SRV, TXT and
    /// address, for the SRV the address. `addresses` are the arrival interface's own.
    /// `None` when nothing is asked, or when it does not fit [`MAX_RESPONSE`] even
    /// without the additional records.
    pub fn answer(&self, kinds: &Kinds, addresses: &[Ipv4Addr]) -> Option<Vec<u8>> {
        let mut additional = Kinds::default();
        if kinds[Kind::Instance.index()] {
            additional[Kind::Srv.index()] = true;
            additional[Kind::Txt.index()] = true;
            additional[Kind::Address.index()] = true;
        }
        if kinds[Kind::Srv.index()] {
            additional[Kind::Address.index()] = true;
        }
        for (extra, asked) in additional.iter_mut().zip(kinds) {
            *extra &= !asked;
        }
        self.build(kinds, &additional, None, addresses)
            .or_else(|| self.build(kinds, &Kinds::default(), None, addresses))
    }

    /// An announcement (RFC 6762 section 8.3) of the instance, its SRV and TXT and the
    /// host's `addresses`; with `goodbye` the same records with TTL 0 (section 10.1).
    pub fn unsolicited(&self, addresses: &[Ipv4Addr], goodbye: bool) -> Option<Vec<u8>> {
        let all = [false, true, true, true, true];
        let ttl = goodbye.then_some(0);
        self.build(&all, &Kinds::default(), ttl, addresses)
    }

    fn build(
        &self,
        answers: &Kinds,
        additional: &Kinds,
        ttl: Option<u32>,
        addresses: &[Ipv4Addr],
    ) -> Option<Vec<u8>> {
        let mut packet = Packet::new_reply(0);
        packet.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
        for kind in Kind::ALL {
            if answers[kind.index()] {
                packet.answers.extend(self.record(kind, ttl, addresses));
            }
            if additional[kind.index()] {
                packet
                    .additional_records
                    .extend(self.record(kind, ttl, addresses));
            }
        }
        if packet.answers.is_empty() {
            return None;
        }
        let bytes = packet.build_bytes_vec_compressed().ok()?;
        (bytes.len() <= MAX_RESPONSE).then_some(bytes)
    }
}

/// A type and a class no question of ours asks for, and that the parser knows: what a
/// question's unknown type or class becomes.
const NEUTRAL_TYPE: u16 = 10; // NULL
const NEUTRAL_CLASS: u16 = 3; // CH

/// Rewrites, in place, the type and class of each of the first `count` questions of
/// `packet` that the parser does not know (it refuses the whole packet for one such
/// question, and a browser may bundle a type it knows and we do not) into ones that are
/// never answered. The unicast-response bit of the class is kept. A name is walked to
/// its end without following compression pointers: a pointer ends a name.
fn neutralise_unknown_types(packet: &mut [u8], count: u16) -> Result<(), Dropped> {
    let mut at = 12;
    for _ in 0..count {
        loop {
            let len = *packet.get(at).ok_or(Dropped::Malformed)?;
            match len & 0xc0 {
                0x00 if len == 0 => {
                    at += 1;
                    break;
                }
                0x00 => at += 1 + usize::from(len),
                0xc0 => {
                    at += 2;
                    break;
                }
                _ => return Err(Dropped::Malformed),
            }
        }
        let fields = packet.get_mut(at..at + 4).ok_or(Dropped::Malformed)?;
        let qtype = u16::from_be_bytes([fields[0], fields[1]]);
        if QTYPE::try_from(qtype).is_err() {
            fields[0..2].copy_from_slice(&NEUTRAL_TYPE.to_be_bytes());
        }
        let qclass = u16::from_be_bytes([fields[2], fields[3]]);
        if QCLASS::try_from(qclass & 0x7fff).is_err() {
            let neutral = NEUTRAL_CLASS | (qclass & 0x8000);
            fields[2..4].copy_from_slice(&neutral.to_be_bytes());
        }
        at += 4;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::plan;
    use crate::announce::plan::tests::unprovisioned;
    use atomix_api::discovery::Announcement;

    fn records() -> Records {
        let p = plan(unprovisioned(), "atomixos".into(), 8080);
        Records::new(&p).unwrap()
    }

    fn query(questions: &[(&str, TYPE)]) -> Vec<u8> {
        let mut q = Packet::new_query(0);
        for (n, t) in questions {
            q.questions.push(simple_dns::Question::new(
                Name::new_unchecked(n),
                QTYPE::TYPE(*t),
                QCLASS::CLASS(CLASS::IN),
                false,
            ));
        }
        q.build_bytes_vec_compressed().unwrap()
    }

    fn asked(r: &Records, questions: &[(&str, TYPE)]) -> Vec<Kind> {
        let kinds = r.asked(&mut query(questions)).unwrap();
        Kind::ALL.into_iter().filter(|k| kinds[k.index()]).collect()
    }

    /// The records of a response, as `(name, type, ttl, data)` strings.
    fn read(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
        let p = Packet::parse(bytes).unwrap();
        assert!(p.has_flags(PacketFlag::RESPONSE | PacketFlag::AUTHORITATIVE_ANSWER));
        assert!(p.questions.is_empty());
        let show = |rrs: &[ResourceRecord]| {
            rrs.iter()
                .map(|rr| {
                    let data = match &rr.rdata {
                        RData::PTR(p) => p.0.to_string(),
                        RData::SRV(s) => format!("{} {}", s.target, s.port),
                        RData::TXT(t) => {
                            let mut a: Vec<_> = t
                                .attributes()
                                .into_iter()
                                .map(|(k, v)| format!("{k}={}", v.unwrap_or_default()))
                                .collect();
                            a.sort();
                            a.join(",")
                        }
                        RData::A(a) => Ipv4Addr::from(a.address).to_string(),
                        other => format!("{other:?}"),
                    };
                    format!("{} {:?} {} {data}", rr.name, rr.rdata.type_code(), rr.ttl)
                })
                .collect()
        };
        (show(&p.answers), show(&p.additional_records))
    }

    const LAN: [Ipv4Addr; 1] = [Ipv4Addr::new(192, 168, 100, 1)];

    #[test]
    fn a_browse_gets_the_instance_and_what_resolves_it() {
        let r = records();
        let kinds = r
            .asked(&mut query(&[("_atomix._tcp.local", TYPE::PTR)]))
            .unwrap();
        let (answers, additional) = read(&r.answer(&kinds, &LAN).unwrap());
        assert_eq!(
            answers,
            ["_atomix._tcp.local PTR 4500 atomixos-0001._atomix._tcp.local"]
        );
        assert_eq!(
            additional,
            [
                "atomixos-0001._atomix._tcp.local SRV 120 atomixos.local 8080",
                "atomixos-0001._atomix._tcp.local TXT 4500 build_id=2026.11.1,name=atomixos-0001,provisioned=false,slot=a",
                "atomixos.local A 120 192.168.100.1",
            ]
        );
    }

    #[test]
    fn each_question_gets_its_record() {
        let r = records();
        assert_eq!(
            asked(&r, &[("_services._dns-sd._udp.local", TYPE::PTR)]),
            [Kind::Services]
        );
        let services = r.answer(&[true, false, false, false, false], &LAN).unwrap();
        assert_eq!(
            read(&services).0,
            ["_services._dns-sd._udp.local PTR 4500 _atomix._tcp.local"]
        );
        assert_eq!(
            asked(
                &r,
                &[
                    ("AtomixOS-0001._atomix._tcp.local", TYPE::SRV),
                    ("atomixos-0001._atomix._tcp.local", TYPE::TXT),
                    ("ATOMIXOS.local", TYPE::A),
                ]
            ),
            [Kind::Srv, Kind::Txt, Kind::Address],
            "names match whatever their case"
        );
        let srv = r.answer(&[false, false, true, false, false], &LAN).unwrap();
        assert_eq!(
            read(&srv),
            (
                vec!["atomixos-0001._atomix._tcp.local SRV 120 atomixos.local 8080".into()],
                vec!["atomixos.local A 120 192.168.100.1".into()]
            )
        );
        let two = [Ipv4Addr::new(192, 168, 1, 10), Ipv4Addr::new(10, 0, 0, 2)];
        let a = r.answer(&[false, false, false, false, true], &two).unwrap();
        assert_eq!(
            read(&a).0,
            [
                "atomixos.local A 120 192.168.1.10",
                "atomixos.local A 120 10.0.0.2"
            ]
        );
        assert_eq!(
            r.answer(&[false, false, false, false, true], &[]),
            None,
            "no address on the interface: nothing to say"
        );
    }

    #[test]
    fn other_names_and_types_get_nothing() {
        let r = records();
        for q in [
            ("_http._tcp.local", TYPE::PTR),
            ("other._atomix._tcp.local", TYPE::SRV),
            ("other.local", TYPE::A),
            ("atomixos.local", TYPE::AAAA),
            ("atomixos-0001._atomix._tcp.local", TYPE::A),
            ("_atomix._tcp.local", TYPE::SRV),
        ] {
            let kinds = r.asked(&mut query(&[q])).unwrap();
            assert_eq!(kinds, Kinds::default(), "{q:?}");
            assert_eq!(r.answer(&kinds, &LAN), None);
        }
    }

    #[test]
    fn responses_and_junk_are_dropped_unread() {
        let r = records();
        // Another responder's answer, for our own names even: never read.
        let mut response = r.unsolicited(&LAN, false).unwrap();
        assert_eq!(r.asked(&mut response), Err(Dropped::NotAQuery));
        // A response that also carries a question.
        let mut q = query(&[("_atomix._tcp.local", TYPE::PTR)]);
        q[2] |= 0x80;
        assert_eq!(r.asked(&mut q), Err(Dropped::NotAQuery));
        let mut big = query(&[("_atomix._tcp.local", TYPE::PTR)]);
        big.resize(MAX_QUERY + 1, 0);
        assert_eq!(r.asked(&mut big), Err(Dropped::Size));
        assert_eq!(r.asked(&mut [0; 11]), Err(Dropped::Size));
        let mut none = query(&[]);
        assert_eq!(r.asked(&mut none), Err(Dropped::Questions));
        // A count of 1000 with one question: 16 are read, the second is not there.
        let mut many = query(&[("_atomix._tcp.local", TYPE::PTR)]);
        many[4..6].copy_from_slice(&1000u16.to_be_bytes());
        assert_eq!(r.asked(&mut many), Err(Dropped::Malformed));
        // A response code in a query (RFC 6762 section 18.11).
        let mut coded = query(&[("_atomix._tcp.local", TYPE::PTR)]);
        coded[3] |= 0x03;
        assert_eq!(r.asked(&mut coded), Err(Dropped::NotAQuery));
        let mut cut = query(&[("_atomix._tcp.local", TYPE::PTR)]);
        cut.truncate(20);
        assert_eq!(r.asked(&mut cut), Err(Dropped::Malformed));
        // A loop of compression pointers in the question's name.
        let mut looped = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 12, 0, 1];
        assert_eq!(r.asked(&mut looped), Err(Dropped::Malformed));
    }

    #[test]
    fn bundled_questions_and_the_z_bit_are_read_as_queries() {
        let r = records();
        // 20 questions, ours the second: the first 16 are read.
        let mut names: Vec<(String, TYPE)> = (0..20)
            .map(|n| (format!("other-{n}._http._tcp.local"), TYPE::SRV))
            .collect();
        names[1] = ("_atomix._tcp.local".into(), TYPE::PTR);
        let asked_of = |q: &[(String, TYPE)]| {
            let q: Vec<(&str, TYPE)> = q.iter().map(|(n, t)| (n.as_str(), *t)).collect();
            let kinds = r.asked(&mut query(&q)).unwrap();
            Kind::ALL
                .into_iter()
                .filter(|k| kinds[k.index()])
                .collect::<Vec<_>>()
        };
        assert_eq!(asked_of(&names), [Kind::Instance]);
        // Ours the 17th: not read.
        names.swap(1, 16);
        assert_eq!(asked_of(&names), Vec::<Kind>::new());
        // A question of a type or class the parser does not know, bundled before ours,
        // is passed over.
        let mut odd = query(&[
            ("other._http._tcp.local", TYPE::PTR),
            ("_atomix._tcp.local", TYPE::PTR),
        ]);
        let first_type = 12 + "other._http._tcp.local".len() + 2;
        odd[first_type..first_type + 2].copy_from_slice(&65_000u16.to_be_bytes());
        let first_class = first_type + 2;
        odd[first_class..first_class + 2].copy_from_slice(&0x8123u16.to_be_bytes());
        assert!(r.asked(&mut odd).unwrap()[Kind::Instance.index()]);
        // A name running off the end, or a label of the reserved kinds (0x40, 0x80).
        let mut cut = query(&[("_atomix._tcp.local", TYPE::PTR)]);
        cut.truncate(14);
        assert_eq!(r.asked(&mut cut), Err(Dropped::Malformed));
        let mut reserved = query(&[("_atomix._tcp.local", TYPE::PTR)]);
        reserved[12] = 0x45;
        assert_eq!(r.asked(&mut reserved), Err(Dropped::Malformed));
        // The Z bit is ignored (RFC 6762 section 18.8).
        let mut z = query(&[("_atomix._tcp.local", TYPE::PTR)]);
        z[3] |= 0x40;
        assert!(r.asked(&mut z).unwrap()[Kind::Instance.index()]);
    }

    #[test]
    fn known_answers_are_not_read() {
        let r = records();
        let mut q = Packet::new_query(0);
        q.questions.push(simple_dns::Question::new(
            Name::new_unchecked("_atomix._tcp.local"),
            QTYPE::TYPE(TYPE::PTR),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        // A known answer with garbage after it: only the question counts.
        let mut bytes = q.build_bytes_vec_compressed().unwrap();
        bytes[7] = 200;
        bytes.extend_from_slice(&[0xff; 64]);
        let kinds = r.asked(&mut bytes).unwrap();
        assert!(kinds[Kind::Instance.index()]);
    }

    #[test]
    fn announcements_and_goodbyes() {
        let r = records();
        let (answers, _) = read(&r.unsolicited(&LAN, false).unwrap());
        assert_eq!(
            answers,
            [
                "_atomix._tcp.local PTR 4500 atomixos-0001._atomix._tcp.local",
                "atomixos-0001._atomix._tcp.local SRV 120 atomixos.local 8080",
                "atomixos-0001._atomix._tcp.local TXT 4500 build_id=2026.11.1,name=atomixos-0001,provisioned=false,slot=a",
                "atomixos.local A 120 192.168.100.1",
            ]
        );
        let (bye, _) = read(&r.unsolicited(&LAN, true).unwrap());
        assert_eq!(bye.len(), 4);
        assert!(
            bye.iter().all(|rr| rr.split(' ').nth(2) == Some("0")),
            "{bye:?}"
        );
    }

    #[test]
    fn a_name_dns_cannot_carry_is_refused() {
        let mut p = plan(
            Announcement {
                name: "x".repeat(64),
                build_id: None,
                slot: None,
                provisioned: false,
            },
            "atomixos".into(),
            8080,
        );
        assert!(Records::new(&p).is_err());
        p.announcement.name = "ok".into();
        p.host = "h".repeat(64);
        assert!(Records::new(&p).is_err());
    }
}
