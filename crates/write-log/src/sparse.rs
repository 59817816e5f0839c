//! Sparse files: copying one without filling its holes, finding the data in a range,
//! punching holes.
//!
//! The disk of a recorded boot is a few GiB with a few hundred MiB used; `std::fs::copy`
//! would write every zero of it. A copy is a reflink where the filesystem has them
//! (btrfs, XFS), else the data segments `SEEK_DATA`/`SEEK_HOLE` find, copied with
//! `copy_file_range` (in the kernel, no round trip through our memory).

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use rustix::fs::{FallocateFlags, SeekFrom};
use rustix::io::Errno;

use crate::error::Error;

/// Copies `src` to `dst` (created or overwritten), keeping holes. Refuses to copy a file
/// onto itself.
pub fn copy(src: &Path, dst: &Path) -> Result<(), Error> {
    let from = File::open(src).map_err(|e| Error::io(src, "open for copying", e))?;
    let src_meta = from
        .metadata()
        .map_err(|e| Error::io(src, "read the size", e))?;
    let to = open_empty_copy(src, &src_meta, dst)?;
    if rustix::fs::ioctl_ficlone(&to, &from).is_ok() {
        return Ok(());
    }
    copy_data((&from, src), 0..src_meta.len(), (&to, dst))
}

/// Copies the bytes `range` of `src` into `dst` (created or overwritten) from its
/// offset 0, keeping holes: one partition of a disk image as a file of its own.
pub fn copy_part(src: &Path, range: Range<u64>, dst: &Path) -> Result<(), Error> {
    let from = File::open(src).map_err(|e| Error::io(src, "open for copying", e))?;
    let len = from
        .metadata()
        .map_err(|e| Error::io(src, "read the size", e))?
        .len();
    if range.start > range.end || range.end > len {
        return Err(Error::io(
            src,
            format!(
                "copy bytes {}..{} of a file of {len} bytes",
                range.start, range.end
            ),
            io::Error::from(io::ErrorKind::InvalidInput),
        ));
    }
    let src_meta = from
        .metadata()
        .map_err(|e| Error::io(src, "read the metadata", e))?;
    let to = open_empty_copy(src, &src_meta, dst)?;
    copy_data((&from, src), range, (&to, dst))
}

/// Opens `dst` (created if missing) and empties it, unless it is `src` itself: opening
/// with truncation first would have emptied the source.
fn open_empty_copy(src: &Path, src_meta: &std::fs::Metadata, dst: &Path) -> Result<File, Error> {
    let to = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dst)
        .map_err(|e| Error::io(dst, "create the copy", e))?;
    let dst_meta = to
        .metadata()
        .map_err(|e| Error::io(dst, "read the metadata", e))?;
    if (src_meta.dev(), src_meta.ino()) == (dst_meta.dev(), dst_meta.ino()) {
        return Err(Error::io(
            dst,
            format!("copy {} onto itself", src.display()),
            io::Error::from(io::ErrorKind::InvalidInput),
        ));
    }
    to.set_len(0)
        .map_err(|e| Error::io(dst, "truncate the copy", e))?;
    Ok(to)
}

/// Sizes `to` to the length of `range` and copies the data segments of `range` in
/// `from` to it, each at its offset from `range.start`.
fn copy_data(
    (from, src): (&File, &Path),
    range: Range<u64>,
    (to, dst): (&File, &Path),
) -> Result<(), Error> {
    to.set_len(range.end - range.start)
        .map_err(|e| Error::io(dst, "size the copy", e))?;
    let base = range.start;
    for segment in data_segments(from, range).map_err(|e| Error::io(src, "find the data", e))? {
        copy_range_to(from, to, segment.clone(), segment.start - base).map_err(|e| {
            Error::io(
                dst,
                format!(
                    "copy bytes {}..{} of {}",
                    segment.start,
                    segment.end,
                    src.display()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// Copies `range` from `from` to `to` at `at`.
fn copy_range_to(from: &File, to: &File, range: Range<u64>, at: u64) -> io::Result<()> {
    let (mut off_in, mut off_out) = (range.start, at);
    while off_in < range.end {
        let chunk = usize::try_from(range.end - off_in)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), chunk) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(Errno::INTR) => {}
            // Not between these filesystems (or not at all): copy through memory.
            Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP) => {
                return copy_range_buffered(from, to, off_in..range.end, off_out)
            }
            Err(e) => return Err(e.into()),
        }
        debug_assert_eq!(off_in - range.start, off_out - at);
    }
    Ok(())
}

fn copy_range_buffered(from: &File, to: &File, range: Range<u64>, at: u64) -> io::Result<()> {
    let mut buf = vec![0; 1 << 20];
    let (mut off, mut out) = (range.start, at);
    while off < range.end {
        let n = ((range.end - off) as usize).min(buf.len());
        from.read_exact_at(&mut buf[..n], off)?;
        to.write_all_at(&buf[..n], out)?;
        off += n as u64;
        out += n as u64;
    }
    Ok(())
}

/// The parts of `range` that hold data (are not holes), in order. A filesystem without
/// `SEEK_DATA` reports all of it as data.
pub fn data_segments(file: &File, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
    let mut segments = Vec::new();
    let mut pos = range.start;
    while pos < range.end {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(start) => start,
            // No data after `pos` (or `pos` at or past the end of the file).
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL | Errno::OPNOTSUPP) => {
                segments.push(pos..range.end);
                break;
            }
            Err(e) => return Err(e.into()),
        };
        if start >= range.end {
            break;
        }
        let end = rustix::fs::seek(file, SeekFrom::Hole(start))?.min(range.end);
        segments.push(start..end);
        pos = end;
    }
    Ok(segments)
}

/// Makes `range` read as zeros, punching a hole where the filesystem can.
pub fn zero_range(file: &File, range: Range<u64>) -> io::Result<()> {
    if range.is_empty() {
        return Ok(());
    }
    match rustix::fs::fallocate(
        file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        range.start,
        range.end - range.start,
    ) {
        Ok(()) => Ok(()),
        Err(Errno::OPNOTSUPP | Errno::NOSYS) => {
            // Only the data needs zeros; the holes already read as zeros.
            let zeros = vec![0; 1 << 20];
            for segment in data_segments(file, range)? {
                let mut off = segment.start;
                while off < segment.end {
                    let n = ((segment.end - off) as usize).min(zeros.len());
                    file.write_all_at(&zeros[..n], off)?;
                    off += n as u64;
                }
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_keeps_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        let f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&[0xaa; 8192], 1 << 20).unwrap();
        f.write_all_at(&[0xbb; 100], (64 << 20) - 100).unwrap();
        drop(f);
        // Something to overwrite, longer than the source.
        std::fs::write(&dst, vec![0xcc; 70 << 20]).unwrap();

        copy(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        let used = std::fs::metadata(&dst).unwrap().blocks() * 512;
        assert!(
            used < 1 << 20,
            "the copy uses {used} bytes: holes were filled"
        );
    }

    #[test]
    fn copy_part_takes_one_range_from_offset_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        let f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&[0xaa; 4096], 1 << 20).unwrap();
        f.write_all_at(&[0xbb; 8192], 8 << 20).unwrap();
        f.write_all_at(&[0xcc; 4096], 40 << 20).unwrap();
        drop(f);

        copy_part(&src, (4 << 20)..(36 << 20), &dst).unwrap();
        let part = std::fs::read(&dst).unwrap();
        assert_eq!(part.len(), 32 << 20);
        let whole = std::fs::read(&src).unwrap();
        assert_eq!(part, &whole[4 << 20..36 << 20]);
        assert!(part[4 << 20..(4 << 20) + 8192].iter().all(|&b| b == 0xbb));
        let used = std::fs::metadata(&dst).unwrap().blocks() * 512;
        assert!(
            used < 1 << 20,
            "the copy uses {used} bytes: holes were filled"
        );

        let err = copy_part(&src, (60 << 20)..(65 << 20), &dst).unwrap_err();
        assert!(err.to_string().contains("of a file of"), "{err}");
        let err = copy_part(&src, 0..(1 << 20), &src).unwrap_err();
        assert!(err.to_string().contains("onto itself"), "{err}");
        assert_eq!(std::fs::read(&src).unwrap(), whole);
    }

    #[test]
    fn copy_refuses_to_overwrite_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"keep me").unwrap();
        let err = copy(&src, &src).unwrap_err();
        assert!(err.to_string().contains("onto itself"), "{err}");
        assert_eq!(std::fs::read(&src).unwrap(), b"keep me");
    }

    #[test]
    fn zero_range_and_data_segments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all_at(&[1; 64 << 10], 0).unwrap();
        zero_range(&f, 4096..(60 << 10)).unwrap();
        let data = std::fs::read(&path).unwrap();
        assert!(data[..4096].iter().all(|&b| b == 1));
        assert!(data[4096..60 << 10].iter().all(|&b| b == 0));
        assert!(data[60 << 10..].iter().all(|&b| b == 1));
        // Block-granular on ext4 and tmpfs: the hole is where the zeros are.
        assert_eq!(
            data_segments(&f, 0..64 << 10).unwrap(),
            [0..4096, 60 << 10..64 << 10]
        );
        assert_eq!(data_segments(&f, 8192..12288).unwrap(), []);
        assert_eq!(
            data_segments(&f, 100..200).unwrap(),
            std::iter::once(100..200).collect::<Vec<_>>()
        );
    }
}
