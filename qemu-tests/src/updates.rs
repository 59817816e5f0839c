//! Update bundles for the A/B tests: further builds of this tree, signed with the key of
//! the image under test, and a small HTTP server the guest streams them from (RAUC reads
//! a remote bundle with HTTP range requests, through NBD).

use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{host, Device, Image};

/// The guest's address of the host on the WAN user network.
pub const HOST_FROM_GUEST: &str = "10.0.2.2";

/// The build id of an update of the build `v1`: a semantic version,
/// `<major>.0.0-<v1>[.<label>]`, as an update server such as goosebit files bundles by
/// their manifest's version and takes only semantic ones. One id per update, so each
/// bundle is built once per image and shared by every test installing it.
pub fn update_build_id(v1: &str, major: u32, label: Option<&str>) -> String {
    match label {
        Some(label) => format!("{major}.0.0-{v1}.{label}"),
        None => format!("{major}.0.0-{v1}"),
    }
}

/// `atomix-provision slot status`, first line: the order and tries left.
pub fn slot_state(device: &Device, admin: &Path) -> String {
    let status = device.ssh(admin, "sudo atomix-provision slot status");
    status.lines().next().unwrap_or_default().to_owned()
}

impl Image {
    /// A bundle of this tree built as `build_id` with extra kernel arguments, signed with
    /// this image's development signing pair; built once per image (kept beside it under
    /// `updates/<build_id>/`).
    pub fn update_bundle(&self, build_id: &str, kernel_args: &[&str]) -> PathBuf {
        let out = self.dir.join("updates").join(build_id);
        let bundle = out.join("atomixos-rock64.raucb");
        let stamp = out.join("built-for");
        if fs::read_to_string(&stamp).ok().as_deref() == Some(self.build_id()) && bundle.exists() {
            return bundle;
        }
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        // Where cargo put the binaries the image build used.
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join("target"));
        let mut cmd = Command::new(target.join("release/atomix-image"));
        cmd.arg("bundle")
            .arg("--repo")
            .arg(&repo)
            .arg("--out")
            .arg(&out)
            .args(["--build-id", build_id])
            .arg("--initrd-binary")
            .arg(target.join("aarch64-unknown-linux-gnu/initrd/atomix-initrd"))
            .arg("--provision-binary")
            .arg(target.join("aarch64-unknown-linux-gnu/release/atomix-provision"))
            .arg("--provisioning-key")
            .arg(self.dir.join("dev-provisioning-key.pub"))
            .arg("--signing-key")
            .arg(self.dir.join("dev-rauc-key.pem"))
            .arg("--signing-cert")
            .arg(self.dir.join("dev-rauc-cert.pem"));
        for arg in kernel_args {
            cmd.args(["--kernel-arg", arg]);
        }
        eprintln!("building update bundle {build_id} in {}", out.display());
        host(&mut cmd);
        fs::write(&stamp, self.build_id()).unwrap();
        // Only the bundle is needed: drop the image and the stages of that build.
        let _ = fs::remove_file(out.join("atomixos-rock64.img"));
        let _ = fs::remove_dir_all(out.join("work"));
        bundle
    }
}

/// Serves one file over HTTP/1.1 (GET and HEAD, single byte ranges) on 127.0.0.1, in a
/// background thread per connection, for as long as the test runs.
#[derive(Debug)]
pub struct FileServer {
    pub port: u16,
}

impl FileServer {
    pub fn serve(file: &Path) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let file = file.to_owned();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let file = file.clone();
                std::thread::spawn(move || {
                    let _ = handle(stream, &file);
                });
            }
        });
        FileServer { port }
    }

    /// The URL the guest uses.
    pub fn url(&self, name: &str) -> String {
        format!("http://{HOST_FROM_GUEST}:{}/{name}", self.port)
    }
}

fn handle(stream: TcpStream, file: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut range = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("range") {
                    range = parse_range(value.trim());
                }
            }
        }
        let head = request.starts_with("HEAD ");
        let mut f = fs::File::open(file)?;
        let len = f.metadata()?.len();
        let (status, start, end) = match range {
            Some((s, e)) if s < len => {
                ("206 Partial Content", s, e.unwrap_or(len - 1).min(len - 1))
            }
            Some(_) => {
                write!(
                    out,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n\r\n"
                )?;
                continue;
            }
            None => ("200 OK", 0, len.saturating_sub(1)),
        };
        let count = if len == 0 { 0 } else { end - start + 1 };
        let mut header = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {count}\r\nAccept-Ranges: bytes\r\nContent-Type: application/octet-stream\r\n"
        );
        if status.starts_with("206") {
            header.push_str(&format!("Content-Range: bytes {start}-{end}/{len}\r\n"));
        }
        header.push_str("\r\n");
        out.write_all(header.as_bytes())?;
        if !head {
            f.seek(SeekFrom::Start(start))?;
            std::io::copy(&mut (&mut f).take(count), &mut out)?;
        }
        out.flush()?;
    }
}

/// `bytes=START-[END]`.
fn parse_range(value: &str) -> Option<(u64, Option<u64>)> {
    let spec = value.strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start = start.parse().ok()?;
    let end = if end.is_empty() {
        None
    } else {
        Some(end.parse().ok()?)
    };
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_whole_files_and_ranges() {
        let dir = std::env::temp_dir().join(format!("atomix-fileserver-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        fs::write(&file, b"0123456789").unwrap();
        let server = FileServer::serve(&file);
        let get = |range: Option<&str>| {
            let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            let extra = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
            write!(
                s,
                "GET /f HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
            )
            .unwrap();
            let mut buf = Vec::new();
            let mut header = String::new();
            let mut r = BufReader::new(s);
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                header.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let len: usize = header
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            buf.resize(len, 0);
            r.read_exact(&mut buf).unwrap();
            (header, String::from_utf8(buf).unwrap())
        };
        let (h, body) = get(None);
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
        assert_eq!(body, "0123456789");
        let (h, body) = get(Some("bytes=2-4"));
        assert!(h.contains("Content-Range: bytes 2-4/10"), "{h}");
        assert_eq!(body, "234");
        let (_, body) = get(Some("bytes=7-"));
        assert_eq!(body, "789");
        fs::remove_dir_all(&dir).unwrap();
    }
}
