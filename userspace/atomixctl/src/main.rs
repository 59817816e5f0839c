//! `atomixctl`: the AtomixOS operator CLI, run on the operator's laptop.
//!
//! * `validate FILE` — offline, the device's own checks and messages (`atomix_config::report`).
//! * `provision --device URL [--identity KEY] FILE` — nonce, `ssh-keygen -Y sign`, upload,
//!   follow the job live; exit 0 only if it succeeded.
//! * `update --device URL [--reboot] [--identity KEY] BUNDLE` — the same for a RAUC
//!   bundle, hashed then streamed from its file.
//! * `status --device URL`, `job --device URL ID`.
//! * `discover [--timeout SECS]` — the devices announcing `_atomix._tcp` over multicast
//!   DNS on the local network; `--device NAME` takes one of their names.
//! * `schema`, `completions SHELL`, `man` — the config's JSON Schema, shell completions and
//!   the man page, all generated (from the config types and from the clap definitions).
//!
//! `--device` defaults to `$ATOMIX_DEVICE`.
//! Exit status: 0 success; 1 invalid config or failed job; 2 usage or local error;
//! 3 device unreachable; 4 signature refused (401); 5 device busy (409).

mod device;
mod discover;
mod show;
mod sign;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use atomix_api::limits::UPDATE_BUNDLE_BYTES;
use atomix_api::{Job, JobState};
use clap::{CommandFactory as _, Parser, Subcommand};

use device::{BundleUpload, Device, DeviceError, DeviceUrl, Upload};

/// Shown after `--help` (and in the man page).
const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  the config is invalid, or the job failed
  2  usage or local error (a file that cannot be read, no SSH key...)
  3  the device is unreachable
  4  the device refused the signature (HTTP 401)
  5  the device is busy with another job (HTTP 409)

Environment:
  ATOMIX_DEVICE  the device for --device, e.g. http://192.168.100.1:8080 or atomixos-3f2a

Examples:
  atomixctl discover
  atomixctl status --device atomixos-3f2a
  atomixctl validate config.toml
  atomixctl provision --device http://192.168.100.1:8080 -i ~/.ssh/ops.pub config.toml
  export ATOMIX_DEVICE=http://192.168.100.1:8080
  atomixctl status --json
  atomixctl update --reboot atomixos-rock64.raucb
  atomixctl schema > config.schema.json
  atomixctl completions bash > ~/.local/share/bash-completion/completions/atomixctl";

#[derive(Debug, Parser)]
#[command(
    name = "atomixctl",
    version,
    about = "AtomixOS operator CLI",
    long_about = "AtomixOS operator CLI: check a config.toml offline exactly as the device does, \
                  provision or update a device over its HTTP API with an SSH key, show its \
                  status and jobs.",
    after_help = AFTER_HELP
)]
struct Cli {
    /// Machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a config.toml or bundle offline, exactly as the device would.
    Validate {
        /// A config.toml, or a bundle (tar or tar.gz) holding one.
        file: PathBuf,
    },
    /// Provision a device: sign and upload FILE, then follow the apply job to its end.
    Provision {
        #[command(flatten)]
        device: DeviceArg,
        /// The SSH key to sign with: a private key, or a .pub whose private half is in
        /// ssh-agent. Default: ssh-agent's first key, else ~/.ssh/id_ed25519, id_ecdsa, id_rsa.
        #[arg(long, short = 'i')]
        identity: Option<PathBuf>,
        /// Give up following the job after this many seconds.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        /// A config.toml, or a bundle (tar or tar.gz) holding one.
        file: PathBuf,
    },
    /// Update a device: sign and upload a RAUC bundle, then follow the install job.
    Update {
        #[command(flatten)]
        device: DeviceArg,
        /// Reboot the device into the new slot once the bundle is installed.
        #[arg(long)]
        reboot: bool,
        /// The SSH key to sign with (as for provision).
        #[arg(long, short = 'i')]
        identity: Option<PathBuf>,
        /// Give up following the job after this many seconds.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
        /// The RAUC bundle (.raucb).
        bundle: PathBuf,
    },
    /// List the devices on the local network (multicast DNS, the _atomix._tcp service):
    /// name, API address, build, slot, provisioned.
    Discover {
        /// Listen for answers this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Show a device's status.
    Status {
        #[command(flatten)]
        device: DeviceArg,
    },
    /// Show an apply job: its steps, result and rollback state.
    Job {
        #[command(flatten)]
        device: DeviceArg,
        /// The job id (or its /api/jobs/ID path).
        id: String,
    },
    /// Print the JSON Schema of config.toml, for editors (taplo, Even Better TOML).
    Schema,
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `atomixctl man > atomixctl.1`.
    Man,
}

/// The device to talk to.
#[derive(Debug, clap::Args)]
struct DeviceArg {
    /// The device's API, http://HOST[:PORT] (the port 8080 by default), or the name it
    /// announces on the local network (`atomixctl discover`: atomixos-XXXX while
    /// unprovisioned, then its host name), found by a multicast DNS browse of up to 10 s.
    #[arg(
        long = "device",
        env = "ATOMIX_DEVICE",
        value_name = "URL|NAME",
        value_parser = DeviceTarget::parse
    )]
    target: DeviceTarget,
}

/// What `--device` names: an address, or a discovered device's name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DeviceTarget {
    Url(DeviceUrl),
    Name(String),
}

impl DeviceTarget {
    /// A single DNS label (letters, digits, `-`, `_`; no dot, colon or scheme) is a
    /// name to discover; anything else is an address for [`DeviceUrl::parse`]. A host
    /// name that DNS resolves is given as `http://NAME`.
    fn parse(s: &str) -> Result<DeviceTarget, String> {
        let t = s.trim();
        let label = !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !t.bytes().all(|b| b.is_ascii_digit());
        if label {
            Ok(DeviceTarget::Name(t.to_owned()))
        } else {
            DeviceUrl::parse(t).map(DeviceTarget::Url)
        }
    }
}

impl DeviceArg {
    fn device(&self) -> anyhow::Result<Device> {
        let url = match &self.target {
            DeviceTarget::Url(url) => url.clone(),
            DeviceTarget::Name(name) => discover::resolve(name)?,
        };
        Ok(Device::new(url))
    }
}

const EXIT_FAILED: u8 = 1;
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Validate { file } => validate(file, cli.json),
        Command::Provision {
            device,
            identity,
            timeout,
            file,
        } => device.device().and_then(|device| {
            provision(
                &device,
                identity.as_deref(),
                Duration::from_secs(*timeout),
                file,
                cli.json,
            )
        }),
        Command::Update {
            device,
            reboot,
            identity,
            timeout,
            bundle,
        } => device.device().and_then(|device| {
            update(
                &device,
                identity.as_deref(),
                Duration::from_secs(*timeout),
                bundle,
                *reboot,
                cli.json,
            )
        }),
        Command::Discover { timeout } => discover(Duration::from_secs(*timeout), cli.json),
        Command::Status { device } => device.device().and_then(|d| status(&d, cli.json)),
        Command::Job { device, id } => device.device().and_then(|d| job(&d, id, cli.json)),
        Command::Schema => print_text(&atomix_config::json_schema::json_schema_text()),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "atomixctl", &mut out);
            write_stdout(&out)
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .context("cannot render the man page")
                .and_then(|()| write_stdout(&out))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("atomixctl: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The exit status for an error: the device's refusals have their own.
fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<DeviceError>() {
        Some(DeviceError::Unreachable { .. } | DeviceError::NotDiscovered { .. }) => 3,
        Some(DeviceError::Refused(_)) => 4,
        Some(DeviceError::Busy { .. } | DeviceError::UploadInProgress) => 5,
        Some(DeviceError::Invalid(_)) => EXIT_FAILED,
        _ => EXIT_ERROR,
    }
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v).context("cannot write to stdout")?;
    writeln!(out).context("cannot write to stdout")
}

/// A device's answer as JSON, with its keys sorted as atomixctl has always printed them.
fn print_answer(v: &impl serde::Serialize) -> anyhow::Result<()> {
    print_json(&serde_json::to_value(v).context("cannot write the answer as JSON")?)
}

fn print_text(text: &str) -> anyhow::Result<ExitCode> {
    write_stdout(text.as_bytes())
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).context("cannot write to stdout")?;
    out.flush().context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn print_lines(lines: &[String]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for l in lines {
        writeln!(out, "{l}").context("cannot write to stdout")?;
    }
    out.flush().context("cannot write to stdout")
}

fn read(file: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

fn validate(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let shown = file.display().to_string();
    let loaded = atomix_config::report::check_input(&shown, &read(file)?);
    if json {
        print_json(&loaded.report())?;
    } else {
        print_lines(&loaded.lines(&shown))?;
    }
    Ok(if loaded.is_valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

fn discover(timeout: Duration, json: bool) -> anyhow::Result<ExitCode> {
    let devices = discover::browse(timeout, None)?;
    if json {
        print_json(&devices)?;
    } else if devices.is_empty() {
        eprintln!(
            "atomixctl: no device answered within {} s (multicast DNS on this computer's networks; try a longer --timeout)",
            timeout.as_secs()
        );
    } else {
        print_lines(&discover::lines(&devices))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn status(device: &Device, json: bool) -> anyhow::Result<ExitCode> {
    let h = device.health()?;
    if json {
        print_answer(&h)?;
    } else {
        print_lines(&[format!("device:       {}", device.url())])?;
        print_lines(&show::health(&h))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn job(device: &Device, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let j = device.job(id)?;
    if json {
        print_answer(&j)?;
    } else {
        print_lines(&show::job(&j))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The console's address once `text` is applied: `http://<network.lan.address>:PORT`.
fn lan_console(text: &str) -> Option<String> {
    // Decoded only: the address is known even where a bundle's files would be needed
    // for the whole check.
    let config = atomix_config::decode::decode(text).config?;
    Some(format!(
        "http://{}:{}",
        config.network.lan.address.get_ref().addr,
        atomix_api::routes::PORT
    ))
}

fn provision(
    device: &Device,
    identity: Option<&Path>,
    timeout: Duration,
    file: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let bytes = read(file)?;
    let shown = file.display().to_string();

    // Offline first: an invalid config is reported exactly as `validate` would, without
    // spending a nonce or touching the device.
    let loaded = atomix_config::report::check_input(&shown, &bytes);
    if !loaded.is_valid() {
        if json {
            print_json(&loaded.report())?;
        } else {
            eprintln!("atomixctl: {shown} is not valid; nothing was sent:");
            for l in loaded.lines(&shown) {
                eprintln!("{l}");
            }
        }
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    let lan = match &loaded {
        atomix_config::report::Loaded::Checked { text, .. } => lan_console(text),
        atomix_config::report::Loaded::Refused(_) => None,
    };

    let identity = sign::choose(identity, &sign::Sources::from_env())?;
    let progress = |line: &str| {
        if !json {
            eprintln!("{line}");
        }
    };
    progress(&format!("signing with {}", identity.description));
    let nonce = device.nonce()?;
    let sha256 = atomix_api::sha256_hex(&bytes);
    let signature = sign::sign(
        &identity,
        &atomix_api::signed_message_for_digest(&nonce, &sha256),
    )?;
    let upload = Upload {
        content_type: device::content_type(&bytes),
        body: &bytes,
    };
    let job_path = device.post_config(&upload, &nonce, &sha256, &signature)?;
    let id = job_path.rsplit('/').next().unwrap_or(&job_path).to_owned();
    progress(&format!(
        "uploaded {shown} to {}; following job {id}",
        device.url()
    ));

    let finished = follow(device, &job_path, timeout, json, lan.as_deref())?;
    if json {
        print_answer(&finished)?;
    } else {
        print_lines(&show::outcome(&finished))?;
    }
    if finished.state == JobState::Succeeded {
        if let Some(lan) = lan.filter(|l| *l != device.url().as_str()) {
            progress(&format!(
                "the device now serves its console and API on the LAN only: {lan}"
            ));
        }
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(EXIT_FAILED))
    }
}

fn update(
    device: &Device,
    identity: Option<&Path>,
    timeout: Duration,
    bundle: &Path,
    reboot: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let shown = bundle.display().to_string();
    let open = || std::fs::File::open(bundle).with_context(|| format!("cannot read {shown}"));
    let size = open()?
        .metadata()
        .with_context(|| format!("cannot read {shown}"))?
        .len();
    if size > UPDATE_BUNDLE_BYTES {
        anyhow::bail!(
            "{shown} is {size} bytes, more than the {UPDATE_BUNDLE_BYTES} the device takes; nothing was sent"
        );
    }
    let progress = |line: &str| {
        if !json {
            eprintln!("{line}");
        }
    };
    // A busy device is told before reading and sending hundreds of MiB for a 409.
    if let Some(job) = device.health()?.job {
        return Err(DeviceError::Busy {
            id: job.rsplit('/').next().unwrap_or(&job).to_owned(),
            job,
        }
        .into());
    }
    let identity = sign::choose(identity, &sign::Sources::from_env())?;
    let mib = |bytes: u64| format!("{:.1}", bytes as f64 / f64::from(1 << 20));
    progress(&format!("hashing {shown} ({} MiB)", mib(size)));
    let sha256 = sign::sha256_of(std::io::BufReader::new(open()?))
        .with_context(|| format!("cannot read {shown}"))?;
    progress(&format!("signing with {}", identity.description));
    let nonce = device.nonce()?;
    let signature = sign::sign(
        &identity,
        &atomix_api::signed_message_for_digest(&nonce, &sha256),
    )?;
    let mut shown_tenth = 0;
    let mut report = |sent: u64| {
        let tenth = sent.saturating_mul(10).checked_div(size).unwrap_or(10);
        if tenth > shown_tenth {
            shown_tenth = tenth;
            progress(&format!(
                "uploaded {}% ({} of {} MiB)",
                tenth * 10,
                mib(sent),
                mib(size)
            ));
        }
    };
    let upload = BundleUpload {
        file: open()?,
        size,
        progress: &mut report,
    };
    let job_path = device.post_update(upload, reboot, &nonce, &sha256, &signature)?;
    let id = job_path.rsplit('/').next().unwrap_or(&job_path).to_owned();
    progress(&format!(
        "uploaded {shown} (sha256 {sha256}) to {}; following job {id}",
        device.url()
    ));
    let finished = follow(device, &job_path, timeout, json, None)?;
    if json {
        print_answer(&finished)?;
    } else {
        print_lines(&show::outcome(&finished))?;
    }
    Ok(if finished.state == JobState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

/// How long the device may stay unreachable while a job is followed: after a
/// successful apply it moves its listener to the LAN address.
const LOST_GRACE: Duration = Duration::from_secs(20);

/// Polls the job, printing each new event as it appears, until it has finished.
fn follow(
    device: &Device,
    job_path: &str,
    timeout: Duration,
    json: bool,
    lan: Option<&str>,
) -> anyhow::Result<Job> {
    let deadline = Instant::now() + timeout;
    let mut shown = 0;
    let mut lost_since: Option<Instant> = None;
    loop {
        match device.job(job_path) {
            Ok(j) => {
                lost_since = None;
                if !json {
                    for e in j.events.iter().skip(shown) {
                        eprintln!("{}", show::event(e));
                    }
                }
                shown = shown.max(j.events.len());
                if j.state.is_finished() {
                    return Ok(j);
                }
            }
            Err(e @ DeviceError::Unreachable { .. }) => {
                let since = *lost_since.get_or_insert_with(Instant::now);
                if since.elapsed() > LOST_GRACE {
                    let hint = lan.map_or(String::new(), |lan| {
                        format!(
                            "; after a successful apply the device listens on {lan} only: check with `atomixctl job --device {lan} {job_path}`"
                        )
                    });
                    return Err(anyhow::Error::new(e)
                        .context(format!("lost the device while following {job_path}{hint}")));
                }
            }
            Err(e) => return Err(e.into()),
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the job {job_path} did not finish within {} s; it is still running on the device (atomixctl job)",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option and argument says what it is (completions and the man page show it).
    #[test]
    fn every_argument_has_help() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        let mut missing = Vec::new();
        for cmd in std::iter::once(&cli).chain(cli.get_subcommands()) {
            assert!(cmd.get_about().is_some(), "{} has no about", cmd.get_name());
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if arg.get_help().is_none() && !builtin {
                    missing.push(format!("{} {}", cmd.get_name(), arg.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }

    #[test]
    fn device_accepts_urls_and_discovered_names() {
        let url = |s: &str| DeviceTarget::Url(DeviceUrl::parse(s).unwrap());
        let name = |s: &str| DeviceTarget::Name(s.to_owned());
        let cases = [
            (
                "http://192.168.100.1:8080",
                url("http://192.168.100.1:8080"),
            ),
            ("192.168.100.1", url("http://192.168.100.1:8080")),
            ("device.example.net", url("http://device.example.net:8080")),
            ("edge-7:9000", url("http://edge-7:9000")),
            ("http://edge-7", url("http://edge-7:8080")),
            ("[fe80::1]:8080", url("http://[fe80::1]:8080")),
            ("atomixos-3f2a", name("atomixos-3f2a")),
            ("edge-7", name("edge-7")),
            (" Edge_7 ", name("Edge_7")),
        ];
        for (input, want) in cases {
            assert_eq!(DeviceTarget::parse(input).unwrap(), want, "{input}");
        }
        // Digits alone are not a name (nor an address worth guessing at).
        assert!(!matches!(
            DeviceTarget::parse("8080"),
            Ok(DeviceTarget::Name(_))
        ));
        assert!(DeviceTarget::parse("https://edge-7").is_err());
    }
}
