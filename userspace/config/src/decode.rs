//! Turning config.toml text into a [`Config`], reporting every problem at once.
//!
//! serde stops at the first error, so decoding is a loop over toml's span-carrying tree
//! ([`DeTable`]): decode; on an error, record it with its position and TOML path, take the
//! offending key out of the tree (or, for a missing required key, put in a placeholder
//! taken from [`PLACEHOLDER`] whose spans mark it as such), and decode again. The result is
//! a config for the cross-field checks even when keys were wrong; findings that point
//! into placeholders are dropped, since the missing key was reported already.

use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeArray, DeTable, DeValue, Deserializer};
use toml::Spanned;

use crate::diagnostic::Finding;
use crate::schema::Config;

/// The span given to placeholder values.
pub(crate) const PLACEHOLDER_SPAN: Range<usize> = usize::MAX..usize::MAX;

pub(crate) fn is_placeholder(span: &Range<usize>) -> bool {
    span.start == usize::MAX
}

/// Values for required keys, found by path (array indices taken as 0).
const PLACEHOLDER: &str = r#"
schema = 1
[device]
hostname = "placeholder"
[admin]
ssh-authorized-keys = []
[network.lan]
address = "192.0.2.1/24"
[network.lan.dhcp-range]
start = "192.0.2.100"
end = "192.0.2.200"
[[firewall.allow]]
zone = "lan"
proto = "tcp"
port = 1
[[containers]]
name = "placeholder"
image = "placeholder"
[update.hawkbit]
url = "https://placeholder"
tenant = "placeholder"
"#;

/// Each round re-decodes the whole tree, so a hostile file with thousands of errors
/// would cost rounds x size; past this many errors the rest are not looked for.
const MAX_ROUNDS: usize = 256;

/// The same bound on the work of all rounds together, in bytes of text re-decoded: a
/// config of a few KiB gets every round, one of 256 KiB (the limit) 32.
const MAX_ROUND_BYTES: usize = 8 << 20;

/// Syntax errors whose TOML path is looked for (each search walks the whole tree); the
/// rest are reported with their position only.
const MAX_LOCATED: usize = 64;

/// Texts up to this size have all their syntax errors reported, larger ones the first.
const MAX_RECOVERED_TEXT: usize = 64 << 10;

/// A TOML path segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    out.push_str(k);
                } else {
                    out.push_str(&serde_json::to_string(k).unwrap_or_default());
                }
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// What a config decoded to, and what was wrong on the way.
#[derive(Debug)]
pub struct Decoded {
    /// `None` only when the text is not TOML at all (or decoding could not recover).
    pub config: Option<Config>,
    pub findings: Vec<Finding>,
}

/// Decodes config.toml text. Syntax errors are reported alone: the tree after a syntax
/// error is a guess, and findings about a guess would mislead.
pub fn decode(text: &str) -> Decoded {
    // A large text with syntax errors gets its first one only: recovering parses on, and
    // a hostile 256 KiB of errors would be some 75 000 of them, over 20 MiB.
    if text.len() > MAX_RECOVERED_TEXT {
        if let Err(e) = DeTable::parse(text) {
            let span = e.span().unwrap_or(0..0);
            let message = format!(
                "{} (in a config over {} KiB only the first syntax error is reported)",
                e.message().trim_end(),
                MAX_RECOVERED_TEXT >> 10
            );
            return Decoded {
                config: None,
                findings: vec![Finding::error(span, "", message)],
            };
        }
    }
    let (original, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        let findings = syntax_errors
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let span = e.span().unwrap_or(0..0);
                let path = (i < MAX_LOCATED)
                    .then(|| locate(&original, &span))
                    .flatten()
                    .map(|(p, _)| path_string(&p))
                    .unwrap_or_default();
                Finding::error(span, path, e.message().trim_end().to_owned())
            })
            .collect();
        return Decoded {
            config: None,
            findings,
        };
    }
    let placeholder = {
        let parsed = DeTable::parse(PLACEHOLDER).expect("the placeholder config is valid TOML");
        respan_table(parsed.into_inner())
    };
    // The first round decodes the original itself (a valid config needs no copy to
    // edit); only an error makes the working copy.
    let mut original = Some(original);
    let mut tree: Option<Spanned<DeTable<'_>>> = None;
    let mut findings = Vec::new();
    // Paths (as text) we took out of the tree: a later "missing field" about them is
    // a consequence, not news.
    let mut removed: Vec<String> = Vec::new();
    let rounds = MAX_ROUNDS.min(MAX_ROUND_BYTES / text.len().max(1)).max(1);
    for round in 0.. {
        if round == rounds {
            findings.push(Finding::error(
                text.len()..text.len(),
                "",
                "too many errors to look for them all: correct these and check again",
            ));
            break;
        }
        let attempt = match &tree {
            Some(t) => t.clone(),
            None => original
                .take()
                .expect("the original is decoded in the first round"),
        };
        let error = match Config::deserialize(Deserializer::from(attempt)) {
            Ok(config) => {
                return Decoded {
                    config: Some(config),
                    findings,
                }
            }
            Err(e) => e,
        };
        if original.is_none() {
            // The first round consumed it: parse again (the text is valid TOML).
            let (again, _) = DeTable::parse_recoverable(text);
            tree = Some(again.clone());
            original = Some(again);
        }
        let (original, tree) = (
            original.as_ref().expect("parsed"),
            tree.as_mut().expect("copied"),
        );
        let span = error.span().unwrap_or(0..0);
        let message = error.message().trim_end().to_owned();
        if let Some(field) = missing_field(&message) {
            // The span is that of the table lacking the key.
            let table_path = locate_table(tree, &span, Some(field));
            let Some(table_path) = table_path else {
                findings.push(Finding::error(span, "", message));
                break;
            };
            // In the original the key may be present (we removed it as invalid).
            let original_path =
                locate_table(original, &span, None).unwrap_or_else(|| table_path.clone());
            let mut key_path = original_path.clone();
            key_path.push(Seg::Key(field.to_owned()));
            let shown = path_string(&key_path);
            let (dot, bracket) = (format!("{shown}."), format!("{shown}["));
            let already = removed
                .iter()
                .any(|r| r == &shown || r.starts_with(&dot) || r.starts_with(&bracket));
            if !already && !is_placeholder(&span) {
                findings.push(Finding::error(
                    span.clone(),
                    shown,
                    format!("missing required key `{field}`"),
                ));
            }
            let mut stub_path = table_path.clone();
            stub_path.push(Seg::Key(field.to_owned()));
            let Some(stub) = lookup(&placeholder, &stub_path) else {
                break;
            };
            if !insert(tree.get_mut(), &table_path, field, stub) {
                break;
            }
            continue;
        }
        let Some((path, _)) = locate(original, &span) else {
            findings.push(Finding::error(span, "", message));
            break;
        };
        let shown = path_string(&path);
        if !is_placeholder(&span) {
            findings.push(Finding::error(span.clone(), shown.clone(), message.clone()));
        }
        // The other unknown keys of the same table are reported and removed in this
        // round too: a table of many unknown keys costs one round, not one each.
        if let Some((field, expected)) = unknown_field(&message) {
            let tail = &message["unknown field ``".len() + field.len()..];
            let parent = &path[..path.len().saturating_sub(1)];
            for (key_span, key) in take_unknown_siblings(tree.get_mut(), &span, &expected) {
                let mut key_path = parent.to_vec();
                key_path.push(Seg::Key(key.clone()));
                let shown = path_string(&key_path);
                findings.push(Finding::error(
                    key_span,
                    shown.clone(),
                    format!("unknown field `{key}`{tail}"),
                ));
                removed.push(shown);
            }
        }
        removed.push(shown);
        if !remove_at(tree.get_mut(), &span) {
            break;
        }
    }
    Decoded {
        config: None,
        findings,
    }
}

/// The field and the expected fields of serde's "unknown field `x`, expected one of `a`,
/// `b`" (or "expected `a` or `b`", or "there are no fields").
fn unknown_field(message: &str) -> Option<(&str, Vec<&str>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest.split('`').skip(1).step_by(2).collect();
    Some((field, expected))
}

/// In the table that holds the key at `span`, removes every other key not `expected`;
/// returns their spans and names.
fn take_unknown_siblings(
    root: &mut DeTable<'_>,
    span: &Range<usize>,
    expected: &[&str],
) -> Vec<(Range<usize>, String)> {
    fn in_table(
        t: &mut DeTable<'_>,
        span: &Range<usize>,
        expected: &[&str],
    ) -> Option<Vec<(Range<usize>, String)>> {
        if t.keys().any(|k| k.span() == *span) {
            let mut taken = Vec::new();
            let old = std::mem::take(t);
            *t = old
                .into_iter()
                .filter(|(k, _)| {
                    let unknown = k.span() != *span
                        && !is_placeholder(&k.span())
                        && !expected.contains(&k.get_ref().as_ref());
                    if unknown {
                        taken.push((k.span(), k.get_ref().to_string()));
                    }
                    !unknown
                })
                .collect();
            return Some(taken);
        }
        t.iter_mut()
            .find_map(|(_, v)| in_value(v.get_mut(), span, expected))
    }
    fn in_value(
        v: &mut DeValue<'_>,
        span: &Range<usize>,
        expected: &[&str],
    ) -> Option<Vec<(Range<usize>, String)>> {
        match v {
            DeValue::Table(t) => in_table(t, span, expected),
            DeValue::Array(a) => a
                .iter_mut()
                .find_map(|i| in_value(i.get_mut(), span, expected)),
            _ => None,
        }
    }
    in_table(root, span, expected).unwrap_or_default()
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

fn respan_value(v: DeValue<'static>) -> DeValue<'static> {
    match v {
        DeValue::Table(t) => DeValue::Table(respan_table(t)),
        DeValue::Array(a) => DeValue::Array(
            a.into_iter()
                .map(|i| Spanned::new(PLACEHOLDER_SPAN, respan_value(i.into_inner())))
                .collect::<DeArray<'static>>(),
        ),
        other => other,
    }
}

fn respan_table(t: DeTable<'static>) -> DeTable<'static> {
    t.into_iter()
        .map(|(k, v)| {
            (
                Spanned::new(PLACEHOLDER_SPAN, k.into_inner()),
                Spanned::new(PLACEHOLDER_SPAN, respan_value(v.into_inner())),
            )
        })
        .collect()
}

/// The path of the key or value at `span`: the deepest whose key or value span equals it,
/// else the deepest value containing it.
fn locate(root: &Spanned<DeTable<'_>>, span: &Range<usize>) -> Option<(Vec<Seg>, bool)> {
    let mut best: Option<(Vec<Seg>, bool)> = None;
    let mut path = Vec::new();
    walk_table(root.get_ref(), span, &mut path, &mut best);
    best
}

fn consider(path: &[Seg], exact: bool, best: &mut Option<(Vec<Seg>, bool)>) {
    let better = match best {
        None => true,
        Some((p, e)) => (exact && !*e) || (exact == *e && path.len() >= p.len()),
    };
    if better {
        *best = Some((path.to_vec(), exact));
    }
}

fn walk_table(
    t: &DeTable<'_>,
    span: &Range<usize>,
    path: &mut Vec<Seg>,
    best: &mut Option<(Vec<Seg>, bool)>,
) {
    for (k, v) in t.iter() {
        path.push(Seg::Key(k.get_ref().to_string()));
        walk_value(k.span(), v, span, path, best);
        path.pop();
    }
}

fn walk_value(
    key_span: Range<usize>,
    v: &Spanned<DeValue<'_>>,
    span: &Range<usize>,
    path: &mut Vec<Seg>,
    best: &mut Option<(Vec<Seg>, bool)>,
) {
    let vs = v.span();
    if key_span == *span || vs == *span {
        consider(path, true, best);
    } else if vs.start <= span.start && span.end <= vs.end && !span.is_empty() {
        consider(path, false, best);
    }
    match v.get_ref() {
        DeValue::Table(t) => walk_table(t, span, path, best),
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                walk_value(item.span(), item, span, path, best);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The table at `span` (that lacks `field`, if given): the shallowest table with that
/// span, since an implicitly created parent (`network` of `[network.wan]`) shares its
/// child's span.
fn locate_table(
    root: &Spanned<DeTable<'_>>,
    span: &Range<usize>,
    field: Option<&str>,
) -> Option<Vec<Seg>> {
    fn go(
        t: &DeTable<'_>,
        span: &Range<usize>,
        field: Option<&str>,
        path: &mut Vec<Seg>,
        found: &mut Vec<Vec<Seg>>,
    ) {
        for (k, v) in t.iter() {
            path.push(Seg::Key(k.get_ref().to_string()));
            visit(v, span, field, path, found);
            path.pop();
        }
    }
    fn visit(
        v: &Spanned<DeValue<'_>>,
        span: &Range<usize>,
        field: Option<&str>,
        path: &mut Vec<Seg>,
        found: &mut Vec<Vec<Seg>>,
    ) {
        match v.get_ref() {
            DeValue::Table(t) => {
                if v.span() == *span && field.is_none_or(|f| !t.contains_key(f)) {
                    found.push(path.clone());
                }
                go(t, span, field, path, found);
            }
            DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    path.push(Seg::Index(i));
                    visit(item, span, field, path, found);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    go(root.get_ref(), span, field, &mut Vec::new(), &mut found);
    if found.is_empty() {
        // The document itself (its span is the whole text, or empty when it is).
        return field
            .is_none_or(|f| !root.get_ref().contains_key(f))
            .then(Vec::new);
    }
    found.into_iter().min_by_key(Vec::len)
}

fn lookup(t: &DeTable<'static>, path: &[Seg]) -> Option<Spanned<DeValue<'static>>> {
    let (first, rest) = path.split_first()?;
    let Seg::Key(k) = first else { return None };
    let v = t.get(k.as_str())?;
    let mut cur = v;
    let mut rest = rest;
    while let Some((seg, more)) = rest.split_first() {
        cur = match (seg, cur.get_ref()) {
            (Seg::Key(k), DeValue::Table(t)) => t.get(k.as_str())?,
            (Seg::Index(_), DeValue::Array(a)) => a.iter().next()?,
            _ => return None,
        };
        rest = more;
    }
    Some(cur.clone())
}

fn insert(
    root: &mut DeTable<'_>,
    table: &[Seg],
    field: &str,
    value: Spanned<DeValue<'static>>,
) -> bool {
    fn table_at<'a, 'i>(t: &'a mut DeTable<'i>, path: &[Seg]) -> Option<&'a mut DeTable<'i>> {
        let Some((seg, rest)) = path.split_first() else {
            return Some(t);
        };
        let Seg::Key(k) = seg else { return None };
        let (_, v) = t.iter_mut().find(|(key, _)| key.get_ref() == k)?;
        value_table(v.get_mut(), rest)
    }
    fn value_table<'a, 'i>(v: &'a mut DeValue<'i>, path: &[Seg]) -> Option<&'a mut DeTable<'i>> {
        match v {
            DeValue::Table(t) => table_at(t, path),
            DeValue::Array(a) => {
                let (Seg::Index(i), rest) = path.split_first()? else {
                    return None;
                };
                value_table(a.get_mut(*i)?.get_mut(), rest)
            }
            _ => None,
        }
    }
    match table_at(root, table) {
        Some(t) => {
            t.insert(
                Spanned::new(PLACEHOLDER_SPAN, field.to_owned().into()),
                value,
            );
            true
        }
        None => false,
    }
}

/// Removes the key or array item whose key or value span is `span`, else the deepest
/// value containing it. Standard tables' spans cover only their header, so the search
/// descends into every table rather than following containment. Returns false when
/// nothing could be removed.
fn remove_at(root: &mut DeTable<'_>, span: &Range<usize>) -> bool {
    remove_where(root, &|k, v| k == *span || v == *span)
        || remove_where(root, &|_, v| {
            v.start <= span.start && span.end <= v.end && !span.is_empty() && !is_placeholder(&v)
        })
}

type Pred<'p> = &'p dyn Fn(Range<usize>, Range<usize>) -> bool;

/// Removes the deepest entry matching `pred(key span, value span)`.
fn remove_where(t: &mut DeTable<'_>, pred: Pred<'_>) -> bool {
    for (_, v) in t.iter_mut() {
        if remove_in_value(v.get_mut(), pred) {
            return true;
        }
    }
    let before = t.len();
    let old = std::mem::take(t);
    let mut removed = false;
    *t = old
        .into_iter()
        .filter(|(k, v)| {
            let hit = !removed && pred(k.span(), v.span());
            removed |= hit;
            !hit
        })
        .collect();
    t.len() != before
}

fn remove_in_value<'i>(v: &mut DeValue<'i>, pred: Pred<'_>) -> bool {
    match v {
        DeValue::Table(t) => remove_where(t, pred),
        DeValue::Array(a) => {
            for item in a.iter_mut() {
                if remove_in_value(item.get_mut(), pred) {
                    return true;
                }
            }
            let items = std::mem::replace(a, DeArray::new());
            let before = items.len();
            let mut removed = false;
            *a = items
                .into_iter()
                .filter(|i| {
                    let hit = !removed && pred(i.span(), i.span());
                    removed |= hit;
                    !hit
                })
                .collect();
            a.len() != before
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_values_are_valid() {
        let decoded = decode(PLACEHOLDER);
        assert!(decoded.config.is_some(), "{:?}", decoded.findings);
    }
}
