//! The block map `bmaptool create` writes beside the image (format 2.0): the image's size,
//! its block size, and the ranges of blocks that hold data, each with its SHA-256. The
//! ranges are what `flash` writes and what it verifies; the holes between them are never
//! written, so a device keeps whatever it held there before.

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

/// A parsed bmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    pub image_size: u64,
    pub block_size: u64,
    pub ranges: Vec<Range>,
}

/// Blocks `first..=last` of the image and the hex SHA-256 of their bytes (the last block
/// of the image counts only up to the image's size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub first: u64,
    pub last: u64,
    pub sha256: String,
}

/// Parses bmap text and checks its own checksum (`BmapFileChecksum`, the SHA-256 of the
/// file with that field's value replaced by zeros), so a damaged or edited bmap is refused
/// before anything is written.
pub fn parse(text: &str) -> Result<Bmap> {
    let doc = roxmltree::Document::parse(text).context("not XML")?;
    let root = doc.root_element();
    ensure!(root.has_tag_name("bmap"), "the root element is not <bmap>");
    let version = root.attribute("version").unwrap_or("");
    ensure!(
        version.split('.').next() == Some("2"),
        "bmap format {version:?}: only 2.x (sha256 checksums) is supported"
    );
    let field = |name: &str| -> Result<&str> {
        root.children()
            .find(|n| n.has_tag_name(name))
            .and_then(|n| n.text())
            .map(str::trim)
            .with_context(|| format!("no <{name}>"))
    };
    let number = |name: &str| -> Result<u64> {
        let text = field(name)?;
        text.parse()
            .with_context(|| format!("<{name}> {text:?} is not a number"))
    };
    let image_size = number("ImageSize")?;
    let block_size = number("BlockSize")?;
    let blocks = number("BlocksCount")?;
    ensure!(block_size > 0, "<BlockSize> is 0");
    ensure!(
        blocks == image_size.div_ceil(block_size),
        "<BlocksCount> {blocks} does not cover <ImageSize> {image_size} in blocks of {block_size}"
    );
    let checksum_type = field("ChecksumType")?;
    ensure!(
        checksum_type == "sha256",
        "<ChecksumType> {checksum_type}: only sha256 is supported"
    );

    let file_sum = field("BmapFileChecksum")?;
    ensure!(is_sha256(file_sum), "<BmapFileChecksum> is not a SHA-256");
    let zeroed = text.replacen(file_sum, &"0".repeat(file_sum.len()), 1);
    let actual = hex(&Sha256::digest(zeroed.as_bytes()));
    ensure!(
        actual == file_sum,
        "its checksum does not match its contents (damaged or edited?)"
    );

    let map = root
        .children()
        .find(|n| n.has_tag_name("BlockMap"))
        .context("no <BlockMap>")?;
    let mut ranges: Vec<Range> = Vec::new();
    for node in map.children().filter(|n| n.has_tag_name("Range")) {
        let spec = node.text().unwrap_or("").trim();
        let at = format!(
            "<Range> {spec:?} (line {})",
            doc.text_pos_at(node.range().start).row
        );
        let (first, last) = match spec.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u64>(), b.trim().parse::<u64>()),
            None => (spec.parse(), spec.parse()),
        };
        let (Ok(first), Ok(last)) = (first, last) else {
            bail!("{at}: not a block number or FIRST-LAST");
        };
        ensure!(first <= last, "{at}: the range ends before it starts");
        ensure!(last < blocks, "{at}: past the image's {blocks} blocks");
        if let Some(prev) = ranges.last() {
            ensure!(
                first > prev.last,
                "{at}: overlaps or precedes the range before it"
            );
        }
        let sha256 = node
            .attribute("chksum")
            .with_context(|| format!("{at}: no chksum"))?;
        ensure!(is_sha256(sha256), "{at}: chksum is not a SHA-256");
        ranges.push(Range {
            first,
            last,
            sha256: sha256.to_ascii_lowercase(),
        });
    }
    Ok(Bmap {
        image_size,
        block_size,
        ranges,
    })
}

impl Bmap {
    /// The byte span `[start, end)` of a range in the image.
    pub fn bytes(&self, range: &Range) -> (u64, u64) {
        let start = range.first * self.block_size;
        let end = ((range.last + 1) * self.block_size).min(self.image_size);
        (start, end)
    }

    /// Bytes the ranges cover.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| {
                let (s, e) = self.bytes(r);
                e - s
            })
            .sum()
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bmap as bmaptool writes it, with its file checksum filled in.
    fn bmap(ranges: &str, size: u64) -> String {
        let zeros = "0".repeat(64);
        let text = format!(
            "<?xml version=\"1.0\" ?>\n<!-- comment -->\n<bmap version=\"2.0\">\n\
             <ImageSize> {size} </ImageSize>\n<BlockSize> 4096 </BlockSize>\n\
             <BlocksCount> {} </BlocksCount>\n<MappedBlocksCount> 4 </MappedBlocksCount>\n\
             <ChecksumType> sha256 </ChecksumType>\n\
             <BmapFileChecksum> {zeros} </BmapFileChecksum>\n\
             <BlockMap>\n{ranges}</BlockMap>\n</bmap>\n",
            size.div_ceil(4096)
        );
        let sum = hex(&Sha256::digest(text.as_bytes()));
        text.replacen(&zeros, &sum, 1)
    }

    const A: &str = "4c917c5d138524314768e5009b26c7160903d1eb7a617b932a4fe77369716975";
    const B: &str = "98BF726238A77F418CC94201CFF762E7382C8BB2AB8E731512CE77D767C00D97";

    #[test]
    fn reads_ranges_and_their_byte_spans() {
        let text = bmap(
            &format!("<Range chksum=\"{A}\"> 5-7 </Range>\n<Range chksum=\"{B}\"> 2197 </Range>\n"),
            2197 * 4096 + 100,
        );
        let map = parse(&text).unwrap();
        assert_eq!(map.block_size, 4096);
        assert_eq!(map.ranges.len(), 2);
        assert_eq!(map.bytes(&map.ranges[0]), (5 * 4096, 8 * 4096));
        // The image's last block is partial.
        assert_eq!(map.bytes(&map.ranges[1]), (2197 * 4096, 2197 * 4096 + 100));
        assert_eq!(map.ranges[1].sha256, B.to_ascii_lowercase());
        assert_eq!(map.mapped_bytes(), 3 * 4096 + 100);
    }

    #[test]
    fn refuses_damaged_or_unsupported_maps() {
        let good = format!("<Range chksum=\"{A}\"> 5-7 </Range>\n");
        let cases = [
            (
                bmap(&good, 1 << 20).replace("5-7", "5-8"),
                "does not match its contents",
            ),
            (
                bmap(&format!("<Range chksum=\"{A}\"> 7-5 </Range>\n"), 1 << 20),
                "ends before it starts",
            ),
            (
                bmap(&format!("<Range chksum=\"{A}\"> 256 </Range>\n"), 1 << 20),
                "past the image's 256 blocks",
            ),
            (
                bmap(
                    &format!(
                        "<Range chksum=\"{A}\"> 5-7 </Range>\n<Range chksum=\"{A}\"> 6 </Range>\n"
                    ),
                    1 << 20,
                ),
                "overlaps",
            ),
            (
                bmap("<Range chksum=\"abc\"> 1 </Range>\n", 1 << 20),
                "not a SHA-256",
            ),
            (bmap("<Range> 1 </Range>\n", 1 << 20), "no chksum"),
            (
                bmap("<Range chksum=\"x\"> a-b </Range>\n", 1 << 20),
                "(line 11): not a block number",
            ),
            (
                bmap(&good, 1 << 20).replace("version=\"2.0\"", "version=\"1.4\""),
                "only 2.x",
            ),
            ("plain text".to_owned(), "not XML"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }
}
