//! Timing of validate + render for a config with 200 containers:
//! `cargo run --release -p atomix-config --example bench_200`.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::time::Instant;

fn config(containers: usize) -> String {
    let mut s = String::from(
        "schema = 1\n[device]\nhostname = \"bench\"\n[admin]\nssh-authorized-keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEe4xPVymZRl70Tj2o+I5S1YxR/KVel/B+JV/0KIat6V ops@laptop\"]\n[network.lan]\naddress = \"192.168.100.1/24\"\ndhcp-range = { start = \"192.168.100.50\", end = \"192.168.100.150\" }\n[[firewall.allow]]\nzone = \"wan\"\nproto = \"tcp\"\nport = \"10000-10999\"\n",
    );
    for i in 0..containers {
        let _ = write!(
            s,
            "[[containers]]\nname = \"app-{i}\"\nimage = \"ghcr.io/acme/app-{i}:1.0.{i}\"\nrootless = {}\npublish = [\"{}:8080/tcp\"]\nvolumes = [\"data-{i}:/var/lib/app\", \"/data/apps/app-{i}:/srv:ro\"]\nenvironment = {{ LOG_LEVEL = \"info\", ID = \"{i}\" }}\nexec = [\"--port\", \"8080\", \"--name\", \"app {i}\"]\n",
            i % 2 == 0,
            10000 + i
        );
    }
    s
}

fn main() {
    let text = config(200);
    let rounds = 50;
    let start = Instant::now();
    let mut files = 0;
    for _ in 0..rounds {
        let checked = atomix_config::check("config.toml", &text);
        let config = checked.config.expect("the bench config is valid");
        let tree = atomix_config::render::render(&config, &atomix_config::config_sha256(&text));
        files = tree.files.len();
    }
    let per = start.elapsed() / rounds;
    println!("validate + render, 200 containers ({} bytes, {files} files): {per:?} per run (mean of {rounds})", text.len());
}
