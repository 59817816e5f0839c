//! `atomixctl`: the AtomixOS operator CLI, run on the operator's laptop.
//!
//! * `validate FILE` — offline, the device's own checks and messages (`atomix_config::report`).
//! * `bundle CONFIG [--apps DIR] -o OUT` — a config bundle under the device's rules
//!   (`atomix_config::bundle::BundleWriter`), deterministic, written atomically.
//! * `provision --device URL [--identity KEY] FILE` — nonce, `ssh-keygen -Y sign`, upload,
//!   follow the job live; exit 0 only if it succeeded.
//! * `update --device URL [--reboot] [--identity KEY] BUNDLE` — the same for a RAUC
//!   bundle, hashed then streamed from its file, with progress ([`progress`]).
//! * `factory-reset --device URL [--yes] [--identity KEY]` — signed; erases `/data` (the
//!   device unprovisions, reboots and erases early in the next boot).
//! * `status --device URL`, `job --device URL ID`, `jobs --device URL` (signed: the recent
//!   jobs with their events).
//! * `discover [--timeout SECS]` — the devices announcing `_atomix._tcp` over multicast
//!   DNS on the local network; `--device NAME` takes one of their names.
//! * `schema`, `completions SHELL`, `man` — the config's JSON Schema, shell completions and
//!   the man page, all generated (from the config types and from the clap definitions).
//!
//! `--device` defaults to `$ATOMIX_DEVICE`.
//! Exit status: 0 success; 1 invalid config or failed job; 2 usage or local error;
//! 3 device unreachable; 4 signature refused (401); 5 device busy (409).

mod bundle;
mod device;
mod discover;
mod progress;
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
use progress::{Display, Progress, Tracked};

/// Shown after `--help` (and in the man page).
const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  the config or bundle is invalid, or the job failed
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
  atomixctl bundle config.toml --apps apps -o atomix-config.tar.gz
  atomixctl provision --device http://192.168.100.1:8080 -i ~/.ssh/ops.pub config.toml
  export ATOMIX_DEVICE=http://192.168.100.1:8080
  atomixctl status --json
  atomixctl update --reboot atomixos-rock64.raucb
  atomixctl jobs
  atomixctl factory-reset
  atomixctl schema > config.schema.json
  atomixctl completions bash > ~/.local/share/bash-completion/completions/atomixctl";

/// Shown after `bundle --help`.
const BUNDLE_HELP: &str = "\
The bundle holds config.toml first, then the files under apps/ in byte order of their
names, with fixed modes, owners and times and a gzip header without a time or name: the
same inputs give the same bytes. The config is checked as `atomixctl validate` checks it
(with the bundle's files), and the bundle is read back as the device reads it before it
is written. On a boot partition or USB stick, name it atomix-config.tar.gz.

Examples:
  atomixctl bundle config.toml -o atomix-config.tar.gz
  atomixctl bundle site-17.toml --apps site-17/apps -o atomix-config.tar.gz
  atomixctl provision --device http://192.168.100.1:8080 atomix-config.tar.gz";

#[derive(Debug, Parser)]
#[command(
    name = "atomixctl",
    version,
    about = "AtomixOS operator CLI",
    long_about = "AtomixOS operator CLI: check a config.toml offline exactly as the device does, \
                  build config bundles, provision or update a device over its HTTP API with an SSH key, show its \
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
    /// Build a config bundle (config.toml and files for containers) under the device's rules.
    ///
    /// Refuses what the device would refuse, in its words, and writes the same bytes for
    /// the same inputs.
    #[command(after_help = BUNDLE_HELP)]
    Bundle {
        /// The config.toml; it becomes the bundle's config.toml.
        config: PathBuf,
        /// A directory of files for containers: DIR/<container>/... becomes
        /// apps/<container>/... in the bundle. Symbolic links, devices and FIFOs in it are
        /// refused, not followed.
        #[arg(long, value_name = "DIR")]
        apps: Option<PathBuf>,
        /// Where to write the bundle: gzip-compressed, or a plain tar when the name ends
        /// in .tar. Written whole or not at all; an existing file is replaced.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: PathBuf,
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
    /// Erase a device's /data (config, containers' data, job history) and reboot it
    /// unprovisioned; signed. Asks to type "erase" first unless --yes.
    FactoryReset {
        #[command(flatten)]
        device: DeviceArg,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// The SSH key to sign with (as for provision).
        #[arg(long, short = 'i')]
        identity: Option<PathBuf>,
        /// Give up following the job after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Show the device's recent jobs with their events, newest first; signed (events name
    /// what a config does).
    Jobs {
        #[command(flatten)]
        device: DeviceArg,
        /// The SSH key to sign with (as for provision).
        #[arg(long, short = 'i')]
        identity: Option<PathBuf>,
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

/// From this size on, `provision` shows how hashing and uploading a bundle go.
const PROGRESS_FROM: usize = 1 << 20;
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Validate { file } => validate(file, cli.json),
        Command::Bundle {
            config,
            apps,
            output,
        } => make_bundle(config, apps.as_deref(), output, cli.json),
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
        Command::FactoryReset {
            device,
            yes,
            identity,
            timeout,
        } => device.device().and_then(|d| {
            factory_reset(
                &d,
                identity.as_deref(),
                *yes,
                Duration::from_secs(*timeout),
                cli.json,
            )
        }),
        Command::Jobs { device, identity } => device
            .device()
            .and_then(|d| jobs(&d, identity.as_deref(), cli.json)),
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

/// The exit status for an error: the device's refusals have their own; a bundle the
/// device would refuse is invalid, as `validate` says.
fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<atomix_config::bundle::BundleError>()
        .is_some()
    {
        return EXIT_FAILED;
    }
    match e.downcast_ref::<DeviceError>() {
        Some(
            DeviceError::Unreachable { .. }
            | DeviceError::NotDiscovered { .. }
            | DeviceError::NoUsableAddress { .. }
            | DeviceError::AmbiguousName { .. },
        ) => 3,
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

/// `bundle --json`: what was written.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
struct BundleReport<'a> {
    output: String,
    bytes: usize,
    sha256: String,
    /// The members, in the order of the bundle.
    members: Vec<&'a str>,
    warnings: Vec<&'a atomix_config::Diagnostic>,
}

fn make_bundle(
    config: &Path,
    apps: Option<&Path>,
    out: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let writer = bundle::collect(config, apps)?;
    // The config as `validate` checks it, with the bundle's files, named as the operator
    // knows it.
    let shown = config.display().to_string();
    let text = writer.config().unwrap_or_default().to_owned();
    let names = writer.files().collect();
    let checked = atomix_config::check_bundle(&shown, &text, &names);
    if !checked.is_valid() {
        let loaded = atomix_config::report::Loaded::Checked {
            text,
            checked: Box::new(checked),
        };
        if json {
            print_json(&loaded.report())?;
        } else {
            eprintln!("atomixctl: {shown} is not valid; nothing was written:");
            for l in loaded.lines(&shown) {
                eprintln!("{l}");
            }
        }
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    let members: Vec<String> = std::iter::once("config.toml")
        .chain(writer.files())
        .map(str::to_owned)
        .collect();
    let tar = writer.finish().context("cannot write the bundle")?;
    let bytes = if bundle::is_plain_tar(out) {
        tar
    } else {
        atomix_config::bundle::gzip(&tar)
    };
    // What the device reads: a seed file or a POST /api/config body at most this size,
    // then the bundle and its config checked as they will be there.
    let limit = atomix_api::limits::CONFIG_BUNDLE_BYTES;
    if bytes.len() as u64 > limit {
        anyhow::bail!(
            "the bundle is {} bytes, more than the {} the device reads; nothing was written",
            bytes.len(),
            atomix_api::limits::describe(limit)
        );
    }
    let out_shown = out.display().to_string();
    let back = atomix_config::report::check_input(&out_shown, &bytes);
    if !back.is_valid() {
        anyhow::bail!(
            "the bundle written does not read back as valid; nothing was written:\n{}",
            back.lines(&out_shown).join("\n")
        );
    }
    bundle::write_atomically(out, &bytes)?;
    let sha256 = atomix_api::sha256_hex(&bytes);
    if json {
        print_json(&BundleReport {
            output: out_shown,
            bytes: bytes.len(),
            sha256,
            members: members.iter().map(String::as_str).collect(),
            warnings: checked.warnings().collect(),
        })?;
    } else {
        for w in checked.warnings() {
            eprintln!("{w}");
        }
        print_lines(&[format!(
            "wrote {out_shown}: config.toml and {} file(s) under apps/, {} bytes, sha256 {sha256}",
            members.len() - 1,
            bytes.len()
        )])?;
    }
    Ok(ExitCode::SUCCESS)
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

/// Signs `body` for the device with the chosen key: the nonce, the body's SHA-256 and
/// the signature header.
fn sign_for(
    device: &Device,
    identity: Option<&Path>,
    body: &[u8],
    json: bool,
) -> anyhow::Result<(String, String, String)> {
    let identity = sign::choose(identity, &sign::Sources::from_env())?;
    if !json {
        eprintln!("signing with {}", identity.description);
    }
    let nonce = device.nonce()?;
    let sha256 = atomix_api::sha256_hex(body);
    let signature = sign::sign(
        &identity,
        &atomix_api::signed_message_for_digest(&nonce, &sha256),
    )?;
    Ok((nonce, sha256, signature))
}

fn jobs(device: &Device, identity: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let (nonce, sha256, signature) = sign_for(device, identity, b"", json)?;
    let list = device.jobs(&nonce, &sha256, &signature)?;
    if json {
        print_answer(&list)?;
    } else if list.jobs.is_empty() {
        print_lines(&["no jobs recorded".to_owned()])?;
    } else {
        for (i, j) in list.jobs.iter().enumerate() {
            if i > 0 {
                print_lines(&[String::new()])?;
            }
            print_lines(&show::job(j))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn factory_reset(
    device: &Device,
    identity: Option<&Path>,
    yes: bool,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let health = device.health()?;
    if let Some(job) = health.job {
        return Err(DeviceError::Busy {
            id: job.rsplit('/').next().unwrap_or(&job).to_owned(),
            job,
        }
        .into());
    }
    if !yes {
        let what = match health.generation {
            Some(n) => format!("its config (generation {n})"),
            None => "everything".to_owned(),
        };
        eprint!(
            "This erases {what}, its containers' data and its job history on {}, which then reboots unprovisioned.\nType \"{}\" to continue: ",
            device.url(),
            atomix_api::FactoryReset::CONFIRM
        );
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .context("cannot read the confirmation")?;
        if answer.trim() != atomix_api::FactoryReset::CONFIRM {
            eprintln!("aborted: nothing was sent");
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    }
    let (nonce, sha256, signature) =
        sign_for(device, identity, atomix_api::FactoryReset::BODY, json)?;
    let job_path = device.post_factory_reset(&nonce, &sha256, &signature)?;
    if !json {
        eprintln!(
            "factory reset accepted by {}; following job {job_path}",
            device.url()
        );
    }
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
    // A large bundle shows how its hashing and upload go; a config.toml is done at once.
    let display = if bytes.len() >= PROGRESS_FROM {
        Display::for_stderr(json)
    } else {
        Display::Off
    };
    let size = bytes.len() as u64;
    let mut hashing = Progress::new(display, &format!("hashing {shown}"), "hashed", size);
    let sha256 = sign::sha256_of(Tracked::new(&bytes[..], &mut hashing))
        .with_context(|| format!("cannot hash {shown}"))?;
    hashing.finish();
    progress(&format!("signing with {}", identity.description));
    let nonce = device.nonce()?;
    let signature = sign::sign(
        &identity,
        &atomix_api::signed_message_for_digest(&nonce, &sha256),
    )?;
    let upload = Upload {
        content_type: device::content_type(&bytes),
        body: &bytes,
    };
    let mut uploading = Progress::new(display, &format!("uploading {shown}"), "uploaded", size);
    let job_path = device.post_config(&upload, &nonce, &sha256, &signature, &mut |sent| {
        uploading.set(sent)
    })?;
    uploading.finish();
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
    let display = Display::for_stderr(json);
    progress(&format!("hashing {shown} ({} MiB)", progress::mib(size)));
    let mut hashing = Progress::new(display, &format!("hashing {shown}"), "hashed", size);
    let sha256 = sign::sha256_of(Tracked::new(std::io::BufReader::new(open()?), &mut hashing))
        .with_context(|| format!("cannot read {shown}"))?;
    hashing.finish();
    progress(&format!("signing with {}", identity.description));
    let nonce = device.nonce()?;
    let signature = sign::sign(
        &identity,
        &atomix_api::signed_message_for_digest(&nonce, &sha256),
    )?;
    let mut uploading = Progress::new(display, &format!("uploading {shown}"), "uploaded", size);
    let upload = BundleUpload {
        file: open()?,
        size,
        progress: &mut |sent| uploading.set(sent),
    };
    let job_path = device.post_update(upload, reboot, &nonce, &sha256, &signature)?;
    uploading.finish();
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
