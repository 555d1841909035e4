//! What the `holdfast` command does once its arguments are parsed: each command's steps, the
//! admin commands run on the store or through a server, passphrase prompts, and printing.
//!
//! `main` keeps only the argument definitions and the removal of secret variables from the
//! environment (which needs `unsafe`, forbidden in this library).

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::config::{Config, ConfigError, ConfigSource, LogConfig};
use crate::ops::admin::{self, Actor, Admin, AdminRequest, NewSecret, PurgeSelector, Refresher, SecretText};
use crate::secret::{SecretEnv, SecretError, StoreSecret, resolve_secret};
use crate::store::{StoreOpenError, StoreOptions};

/// The command line gathers errors from every layer and prints each with its chain of causes
/// ([`error_chain`]); a box keeps each error's own message and source as they are.
pub type CommandResult<T> = Result<T, Box<dyn std::error::Error>>;

/// How a command prints its result: the `--json` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// A table or report for people.
    Text,
    /// Pretty-printed JSON for scripts.
    Json,
}

/// What the commands need from the global options.
#[derive(Debug, Clone, Default)]
pub struct GlobalOptions {
    /// `--config`: the configuration file; absent means `./holdfast.toml` or the defaults.
    pub config: Option<PathBuf>,
    /// `--passphrase-file`: where the store passphrase is, instead of the environment.
    pub passphrase_file: Option<PathBuf>,
    /// `--server`: run admin commands through this server's admin API instead of on the store.
    pub server: Option<String>,
}

/// Variables that hold secrets. Each is read once, then removed from the environment by the
/// binary; `serve` adds the providers' `api_key_env` and `[clients] keys_env`.
pub const SECRET_VARS: &[&str] = &[
    "HOLDFAST_PASSPHRASE",
    "HOLDFAST_KEY",
    "HOLDFAST_ADMIN_TOKEN",
    // A Redis URL may carry the Redis password.
    "HOLDFAST_STORE_URL",
    "HOLDFAST_NEW_PASSPHRASE",
    "HOLDFAST_NEW_KEY",
    "HOLDFAST_BUNDLE_PASSPHRASE",
];

/// A secret variable as read at start-up; empty counts as unset, as for every variable.
pub fn secret_var(secrets: &SecretEnv, name: &str) -> Option<String> {
    secrets.get(name).filter(|v| !v.is_empty())
}

/// The configuration, with the secret overrides (`HOLDFAST_STORE_URL`) taken from `secrets`.
pub fn load_config(path: Option<&Path>, secrets: &SecretEnv) -> Result<(Config, ConfigSource), ConfigError> {
    Config::load_with(path, |name| secrets.get(name).or_else(|| std::env::var(name).ok()))
}

/// The store secret from `--passphrase-file`, `HOLDFAST_KEY` or `HOLDFAST_PASSPHRASE`.
fn store_secret(passphrase_file: Option<&Path>, secrets: &SecretEnv) -> Result<StoreSecret, SecretError> {
    resolve_secret(passphrase_file, |name| secret_var(secrets, name))
}

/// `holdfast drill`: the self-contained outage drill; exit 3 if a step failed.
pub fn drill() -> CommandResult<ExitCode> {
    // Quiet by default: the report is the output; RUST_LOG shows the proxy's logs.
    let quiet = LogConfig { level: "error".into(), ..Default::default() };
    crate::telemetry::init_logging(&quiet);
    let report = runtime()?.block_on(crate::ops::drill::run_drill())?;
    print!("{report}");
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(3) })
}

/// `holdfast serve`, once the binary has loaded `config` and taken the secrets it names out of
/// the environment: starts logging and the runtime, then serves until a shutdown signal.
pub fn serve(
    config: Config,
    source: ConfigSource,
    options: &GlobalOptions,
    secrets: SecretEnv,
) -> CommandResult<ExitCode> {
    crate::telemetry::init_logging(&config.log);
    let secret = store_secret(options.passphrase_file.as_deref(), &secrets)?;
    runtime()?.block_on(crate::ops::serve::serve(config, source, secret, secrets))?;
    Ok(ExitCode::SUCCESS)
}

/// `holdfast init`: creates the store, asking for a new passphrase on a terminal if none is given.
pub fn init(options: &GlobalOptions, secrets: &SecretEnv) -> CommandResult<ExitCode> {
    let (config, _) = load_config(options.config.as_deref(), secrets)?;
    let secret = match store_secret(options.passphrase_file.as_deref(), secrets) {
        Err(SecretError::Missing) if std::io::stdin().is_terminal() => ask_new_passphrase("store")?,
        other => other?,
    };
    let store = crate::ops::serve::create_configured(&config, &secret, StoreOptions::default())?;
    println!("created store at {}", store.location());
    Ok(ExitCode::SUCCESS)
}

/// `holdfast migrate`: upgrades the configured store's on-disk format (or says what would change).
pub fn migrate(options: &GlobalOptions, secrets: &SecretEnv, dry_run: bool) -> CommandResult<ExitCode> {
    let (config, _) = load_config(options.config.as_deref(), secrets)?;
    let report = crate::store::migrate(&config.store.path, dry_run)?;
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}

/// Runs an admin command on the server (`--server`) or on the store directly, then prints it.
/// `input` is the file a command reads (a bundle to import), `output` the one it writes.
pub fn admin_command(
    options: &GlobalOptions,
    secrets: &SecretEnv,
    request: AdminRequest,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    format: OutputFormat,
) -> CommandResult<ExitCode> {
    let progress = admin::render::ProgressLine::new(&request.describe());
    let report = |done, total| progress.update(done, total);
    let outcome = match &options.server {
        Some(server) => {
            let token = secret_var(secrets, "HOLDFAST_ADMIN_TOKEN")
                .ok_or("--server needs the admin token: set HOLDFAST_ADMIN_TOKEN to the server's token")?;
            let call =
                admin::client::execute_remote(server, &token, &request, input.as_deref(), output.as_deref(), &report);
            runtime()?.block_on(call)?
        }
        None => {
            let (config, _) = load_config(options.config.as_deref(), secrets)?;
            let secret = store_secret(options.passphrase_file.as_deref(), secrets)?;
            let store_options = StoreOptions {
                retention: config.store.retention,
                max_bytes: config.store.max_size,
                cache_bytes: config.store.cache_memory,
                durability: config.store.durability.to_store(),
                // Verify and repair exist to look at a damaged store; everything else refuses it.
                accept_damage: matches!(request, AdminRequest::CacheVerify | AdminRequest::CacheRepair),
                ..StoreOptions::default()
            };
            let store = match crate::ops::serve::open_configured(&config, &secret, store_options) {
                Ok(store) => store,
                // A database too damaged to open is a verification failure, not a usage error.
                Err(e @ StoreOpenError::Corrupt { .. }) if matches!(request, AdminRequest::CacheVerify) => {
                    progress.finish();
                    eprintln!("holdfast: verification failed: {}", error_chain(&e));
                    return Ok(ExitCode::from(3));
                }
                Err(e) => return Err(e.into()),
            };
            let store = Arc::new(store);
            let mut admin = Admin::open(store.clone())?;
            // A refresh asks the providers through a proxy of its own, on a runtime kept for the
            // command's length.
            let mut _runtime = None;
            if let AdminRequest::CacheRefresh { plan } = &request
                && !plan.dry_run
            {
                let runtime = runtime()?;
                admin = admin.with_refresher(Refresher::from_config(config, store, runtime.handle().clone())?);
                _runtime = Some(runtime);
            }
            admin.execute(&request, &Actor::local(), &report, output.as_deref(), input.as_deref())?
        }
    };
    progress.finish();
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&outcome.result)?),
        OutputFormat::Text => print!("{}", admin::render::render(&request, &outcome.result)),
    }
    Ok(if outcome.verification_failed { ExitCode::from(3) } else { ExitCode::SUCCESS })
}

/// Asks on a terminal whether to purge what `selector` names. Without a terminal, refuses: a
/// script must say --yes.
pub fn confirm_purge(selector: &PurgeSelector) -> CommandResult<bool> {
    confirm(&format!("Purge {} from the store?", describe_purge(selector)))
}

fn describe_purge(s: &PurgeSelector) -> String {
    match (&s.address, &s.model, s.older_than_ms, s.all) {
        (Some(a), ..) => format!("the entry at {a}"),
        (_, _, _, true) => "EVERY entry".into(),
        (_, Some(m), Some(ms), _) => format!("entries of model {m} older than {}s", ms / 1000),
        (_, Some(m), None, _) => format!("entries of model {m}"),
        (_, None, Some(ms), _) => format!("entries older than {}s", ms / 1000),
        _ => "nothing".into(),
    }
}

/// Asks yes/no on a terminal. Without one, refuses: a script must say --yes.
fn confirm(question: &str) -> CommandResult<bool> {
    if !std::io::stdin().is_terminal() {
        return Err("refusing to purge without --yes when not on a terminal".into());
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Reads a secret twice without echo and insists they match.
fn ask_twice(what: &str) -> CommandResult<Zeroizing<String>> {
    let first = Zeroizing::new(rpassword::prompt_password(format!("New {what} passphrase: "))?);
    let second = Zeroizing::new(rpassword::prompt_password(format!("Repeat the {what} passphrase: "))?);
    if first != second {
        return Err("the two passphrases differ; nothing was changed".into());
    }
    Ok(first)
}

fn ask_new_passphrase(what: &str) -> CommandResult<StoreSecret> {
    Ok(StoreSecret::passphrase(ask_twice(what)?.as_str())?)
}

/// The new secret for `keys passphrase`: `--new-passphrase-file`, `HOLDFAST_NEW_PASSPHRASE`,
/// `HOLDFAST_NEW_KEY`, or asked twice on a terminal.
pub fn new_secret(file: Option<PathBuf>, secrets: &SecretEnv) -> CommandResult<NewSecret> {
    let wrap = |s: String| Some(SecretText(Zeroizing::new(s)));
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        return Ok(NewSecret { passphrase: wrap(text.trim_end_matches(['\r', '\n']).to_owned()), raw_key: None });
    }
    match (secret_var(secrets, "HOLDFAST_NEW_PASSPHRASE"), secret_var(secrets, "HOLDFAST_NEW_KEY")) {
        (Some(_), Some(_)) => Err("both HOLDFAST_NEW_PASSPHRASE and HOLDFAST_NEW_KEY are set; give one".into()),
        (Some(p), None) => Ok(NewSecret { passphrase: wrap(p), raw_key: None }),
        (None, Some(k)) => Ok(NewSecret { passphrase: None, raw_key: wrap(k) }),
        (None, None) if std::io::stdin().is_terminal() => {
            Ok(NewSecret { passphrase: wrap(ask_twice("store")?.to_string()), raw_key: None })
        }
        (None, None) => {
            Err("give the new secret: --new-passphrase-file, HOLDFAST_NEW_PASSPHRASE or HOLDFAST_NEW_KEY".into())
        }
    }
}

/// The passphrase of an export bundle: a file, HOLDFAST_BUNDLE_PASSPHRASE, or a terminal prompt
/// (asked twice when creating a bundle).
pub fn bundle_passphrase(file: Option<PathBuf>, creating: bool, secrets: &SecretEnv) -> CommandResult<SecretText> {
    let text = match (file, secret_var(secrets, "HOLDFAST_BUNDLE_PASSPHRASE")) {
        (Some(path), _) => std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        (None, Some(p)) => p,
        (None, None) if std::io::stdin().is_terminal() => {
            if creating {
                ask_twice("bundle")?.to_string()
            } else {
                rpassword::prompt_password("Bundle passphrase: ")?
            }
        }
        (None, None) => {
            return Err("give the bundle passphrase: --bundle-passphrase-file or HOLDFAST_BUNDLE_PASSPHRASE".into());
        }
    };
    if text.is_empty() {
        return Err("the bundle passphrase is empty".into());
    }
    Ok(SecretText(Zeroizing::new(text)))
}

/// The runtime every command that does I/O runs on.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    // Store writes run on blocking threads. Tokio's default allows 512 of them; under a burst
    // of misses each one brought its own allocator heap (RSS 276 MiB vs 116 MiB measured).
    // A few dozen keep the disk busy.
    tokio::runtime::Builder::new_multi_thread().max_blocking_threads(32).enable_all().build()
}

/// An error and its causes on one line, so nothing that explains it is lost.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// `--version`: the build (package version, and the build id the packager set in
/// `HOLDFAST_BUILD_ID` at compile time, e.g. a git commit) and the format versions it writes
/// and reads, so an operator can tell before an upgrade whether a store, bundle or keyring from
/// another build will open.
pub fn version_text() -> String {
    let build = option_env!("HOLDFAST_BUILD_ID").filter(|id| !id.is_empty());
    format!(
        "{}{}\nstore format {} (opens only this one; `holdfast migrate` upgrades older stores)\n\
         record envelope {}, keyring format {}, export bundle format {}, cache-key normalization {}",
        env!("CARGO_PKG_VERSION"),
        build.map(|id| format!(" (build {id})")).unwrap_or_default(),
        crate::store::FORMAT_VERSION,
        crate::store::crypto::ENVELOPE_VERSION,
        crate::store::keyring::KEYRING_FORMAT,
        crate::ops::bundle::BUNDLE_FORMAT,
        crate::cache_key::normalize::NORMALIZATION_VERSION,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_question_names_what_goes() {
        let selector = |older_than_ms, model: Option<&str>, all| PurgeSelector {
            older_than_ms,
            model: model.map(str::to_owned),
            address: None,
            all,
        };
        assert_eq!(describe_purge(&selector(None, None, true)), "EVERY entry");
        assert_eq!(
            describe_purge(&selector(Some(90_000), Some("gpt-*"), false)),
            "entries of model gpt-* older than 90s"
        );
        assert_eq!(describe_purge(&selector(Some(90_000), None, false)), "entries older than 90s");
    }

    #[test]
    fn an_error_chain_shows_each_cause_once() {
        let io = std::io::Error::other("disk full");
        let config = ConfigError::Read { path: "/etc/holdfast.toml".into(), source: io };
        assert_eq!(error_chain(&config), "cannot read config file /etc/holdfast.toml: disk full");
    }
}
