//! Diagnostics: what is wrong (or dubious) in a config, and where.
//!
//! Positions are byte spans while checking; they become 1-based line and column
//! (counted in characters) only when a [`Diagnostic`] is made, via [`LineIndex`].

use std::fmt;
use std::ops::Range;

use serde::Serialize;

/// Whether a finding makes the config invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding, printed as `FILE:LINE:COL: toml.path: message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The TOML path of the offending key, e.g. `containers[1].publish[0]`; empty for the
    /// document itself.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let warning = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        write!(
            f,
            "{}:{}:{}: {}{}: ",
            self.file, self.line, self.column, warning, path
        )?;
        f.write_str(&self.message)
    }
}

/// A finding before it is given a file name and a line/column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub span: Range<usize>,
    pub path: String,
    pub message: String,
}

impl Finding {
    pub fn error(span: Range<usize>, path: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Error,
            span,
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn warning(
        span: Range<usize>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(span, path, message)
        }
    }
}

/// How many findings of each severity a check keeps. A hostile 256 KiB config can hold
/// about 25 000 findings (one per item of a long array); keeping them all costs several
/// MiB and an answer nobody reads, so past this many the rest are only counted.
pub const MAX_FINDINGS: usize = 1000;

/// Findings as the checks make them: at most [`MAX_FINDINGS`] of each severity are kept,
/// the rest counted and summed up in one last finding.
#[derive(Debug, Default)]
pub struct Findings {
    items: Vec<Finding>,
    /// Not kept, by severity (errors, warnings).
    dropped: [usize; 2],
    kept: [usize; 2],
}

impl Findings {
    pub fn new() -> Self {
        Findings::default()
    }

    /// Keeps (or counts) a finding; one pointing into a placeholder (a missing key,
    /// reported already) is dropped.
    pub fn push(&mut self, f: Finding) {
        if crate::decode::is_placeholder(&f.span) {
            return;
        }
        let i = f.severity as usize;
        if self.kept[i] < MAX_FINDINGS {
            self.kept[i] += 1;
            self.items.push(f);
        } else {
            self.dropped[i] += 1;
        }
    }

    pub fn extend(&mut self, findings: impl IntoIterator<Item = Finding>) {
        for f in findings {
            self.push(f);
        }
    }

    /// The kept findings, then one per severity saying how many were not kept, placed
    /// at `end` (the end of the text).
    pub fn into_vec(mut self, end: usize) -> Vec<Finding> {
        for (i, severity) in [(0, Severity::Error), (1, Severity::Warning)] {
            let n = self.dropped[i];
            if n > 0 {
                let what = match severity {
                    Severity::Error => "errors",
                    Severity::Warning => "warnings",
                };
                self.items.push(Finding {
                    severity,
                    span: end..end,
                    path: String::new(),
                    message: format!(
                        "{n} more {what} not shown (only the first {MAX_FINDINGS} {what} found are)"
                    ),
                });
            }
        }
        self.items
    }
}

/// Maps byte offsets of one text to 1-based lines and character columns.
#[derive(Debug)]
pub struct LineIndex<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, line_starts }
    }

    /// 1-based (line, column) of a byte offset; offsets past the end clamp to the end.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let column = self.text[self.line_starts[line]..offset].chars().count() + 1;
        (line + 1, column)
    }

    /// Positions of many offsets in one pass over the text: counting each column from
    /// its line's start would be quadratic on a long line (a 256 KiB inline array with a
    /// finding per item).
    pub fn positions(&self, offsets: &[usize]) -> Vec<(usize, usize)> {
        let mut order: Vec<usize> = (0..offsets.len()).collect();
        order.sort_by_key(|&i| offsets[i]);
        let mut out = vec![(0, 0); offsets.len()];
        // (offset, line index, column) of the previous position.
        let mut last: Option<(usize, usize, usize)> = None;
        for i in order {
            let mut offset = offsets[i].min(self.text.len());
            while !self.text.is_char_boundary(offset) {
                offset -= 1;
            }
            let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
            let column = match last {
                Some((o, l, c)) if l == line => c + self.text[o..offset].chars().count(),
                _ => self.text[self.line_starts[line]..offset].chars().count() + 1,
            };
            last = Some((offset, line, column));
            out[i] = (line + 1, column);
        }
        out
    }

    /// Turns findings into diagnostics for `file`, errors first, each group in
    /// document order, so the output is stable.
    pub fn diagnostics(&self, file: &str, mut findings: Vec<Finding>) -> Vec<Diagnostic> {
        findings.sort_by(|a, b| {
            (a.severity, a.span.start, &a.path, &a.message).cmp(&(
                b.severity,
                b.span.start,
                &b.path,
                &b.message,
            ))
        });
        findings.dedup();
        let offsets: Vec<usize> = findings.iter().map(|f| f.span.start).collect();
        let positions = self.positions(&offsets);
        findings
            .into_iter()
            .zip(positions)
            .map(|(f, (line, column))| Diagnostic {
                severity: f.severity,
                file: file.to_owned(),
                line,
                column,
                path: f.path,
                message: f.message,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nb = \"é\"x\n\nc";
        let index = LineIndex::new(text);
        let cases = [
            (0, (1, 1)),
            (4, (1, 5)),
            (6, (2, 1)),
            (12, (2, 6)),
            (15, (2, 9)),
            (16, (3, 1)),
            (17, (4, 1)),
            (99, (4, 2)),
        ];
        for (offset, expected) in cases {
            assert_eq!(index.position(offset), expected, "offset {offset}");
        }
        let offsets: Vec<usize> = cases.iter().rev().map(|(o, _)| *o).collect();
        let expected: Vec<(usize, usize)> = cases.iter().rev().map(|(_, p)| *p).collect();
        assert_eq!(index.positions(&offsets), expected);
    }

    #[test]
    fn display_matches_the_contract() {
        let d = Diagnostic {
            severity: Severity::Error,
            file: "config.toml".into(),
            line: 14,
            column: 16,
            path: "network.lan.dhcp-range.start".into(),
            message: "192.168.1.5 is outside 192.168.100.0/24".into(),
        };
        assert_eq!(
            d.to_string(),
            "config.toml:14:16: network.lan.dhcp-range.start: 192.168.1.5 is outside 192.168.100.0/24"
        );
    }
}
