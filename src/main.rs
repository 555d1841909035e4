//! The `holdfast` command: parses arguments and calls the library. No behaviour lives here.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use holdfast::config::{Config, parse_duration};
use holdfast::ops::admin::{
    self, Actor, Admin, AdminRequest, NewSecret, PurgeSelector, RefreshPlan, Refresher, SecretText,
};
use holdfast::ops::audit::AuditFilter;
use holdfast::secret::{SecretEnv, SecretError, StoreSecret, resolve_secret};
use holdfast::store::{StoreOpenError, StoreOptions};
use zeroize::Zeroizing;

/// The request path allocates for every JSON value, header and record; glibc's allocator
/// took about 30% of a stored-answer hit in profiles (docs/performance.md), mimalloc less.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps products that call LLM APIs answering when their provider fails.
///
/// Point an OpenAI SDK at http://HOST:8787/v1 or an Anthropic SDK at http://HOST:8787. Holdfast
/// forwards each request, keeps every good answer encrypted at rest, and serves the stored
/// answer when the provider fails.
///
/// The store is unlocked by HOLDFAST_PASSPHRASE, --passphrase-file, or HOLDFAST_KEY (32 random
/// bytes, base64). Admin commands open the store directly, or, while `holdfast serve` holds it,
/// go through the server with --server URL (or HOLDFAST_SERVER) and HOLDFAST_ADMIN_TOKEN.
///
/// Exit codes: 0 ok, 1 error, 2 usage, 3 verification failed.
#[derive(Parser)]
#[command(name = "holdfast", version, max_term_width = 100)]
struct Cli {
    /// Configuration file [default: ./holdfast.toml if present, else built-in defaults]
    #[arg(long, global = true, env = "HOLDFAST_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Read the store passphrase from FILE instead of HOLDFAST_PASSPHRASE
    #[arg(long, global = true, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,

    /// Run admin commands through a running server's admin API (needs HOLDFAST_ADMIN_TOKEN)
    #[arg(long, global = true, env = "HOLDFAST_SERVER", value_name = "URL")]
    server: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (creates the store on first run)
    ///
    /// Listens on `listen` (default 127.0.0.1:8787) and keeps answers in `store.path`
    /// (default ./holdfast-data). Stops gracefully on SIGTERM or Ctrl-C. With
    /// HOLDFAST_ADMIN_TOKEN set, also serves the admin API for `--server`.
    Serve,
    /// Create a store and its keyring (asks for a passphrase twice on a terminal)
    Init,
    /// Run a self-contained outage drill: no API keys, no network, no configuration
    ///
    /// Starts a simulated provider and the proxy on a temporary encrypted store, sends
    /// requests through, takes the provider down and shows the same requests answered from
    /// the store, then fails over to a second simulated provider. Prints a report with
    /// timings; exits 3 if any step fails.
    Drill,
    /// Upgrade a store to the current on-disk format (see migrations/)
    Migrate {
        /// Say what would change without changing anything
        #[arg(long)]
        dry_run: bool,
    },
    /// Data keys: list, rotate (and re-encrypt), retire, change the passphrase
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Stored prompts: list, show, search, export; the access trail
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Cache maintenance: stats, purge, verify, export and import bundles
    #[command(subcommand)]
    Cache(CacheCommand),
}

#[derive(Args, Clone, Copy)]
struct Output {
    /// Print JSON for scripts instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Key ids, when created, status (active / retired) and how many records each seals
    List(#[command(flatten)] Output),
    /// Make a new data key active for every new write; older records stay readable
    Rotate {
        /// Then re-seal every record under the new key (resumable: run it again to continue)
        #[arg(long)]
        reencrypt: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Destroy a retired key; refused while any record is still sealed under it
    Retire {
        id: u32,
        #[command(flatten)]
        out: Output,
    },
    /// Change the passphrase (or switch to/from a raw key): re-wraps the keyring only
    ///
    /// The new secret comes from --new-passphrase-file, HOLDFAST_NEW_PASSPHRASE,
    /// HOLDFAST_NEW_KEY (raw key, base64), or is asked twice on a terminal.
    Passphrase {
        /// Read the new passphrase from FILE
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// One line per entry: address, created, last served, times served, provider, model, prompt
    List {
        /// Only entries stored within this long, e.g. 7d, 12h
        #[arg(long, value_name = "AGE")]
        since: Option<String>,
        /// Only this model (glob)
        #[arg(long)]
        model: Option<String>,
        /// Only this provider
        #[arg(long)]
        provider: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// The full normalized request and the answer of one entry
    Show {
        address: String,
        #[command(flatten)]
        out: Output,
    },
    /// Entries whose prompt or answer contains TEXT (case-insensitive)
    Search {
        text: String,
        #[command(flatten)]
        out: Output,
    },
    /// Every entry, decrypted, as JSON Lines for review tools
    Export {
        /// File to write (must not exist)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        output: Output,
    },
    /// The access trail of who decrypted or changed stored data
    Trail {
        /// Check the hash chain and name the first broken link (exit 3 if broken)
        #[arg(long)]
        verify: bool,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Entries, bytes, by provider and model, times served, oldest and newest
    Stats(#[command(flatten)] Output),
    /// Delete entries (asks on a terminal unless --yes)
    Purge {
        /// Entries stored longer ago than this, e.g. 30d
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
        /// Entries of this model (glob)
        #[arg(long)]
        model: Option<String>,
        /// The entry at this address
        #[arg(long)]
        address: Option<String>,
        /// Every entry
        #[arg(long, conflicts_with_all = ["older_than", "model", "address"])]
        all: bool,
        /// Do not ask
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Open every record; name each tampered or corrupt one and count missing ones (exit 3 if any)
    ///
    /// Also checks the store's integrity record: entries that were stored but are gone (a
    /// damaged or rolled-back database) are counted as missing. Nothing is changed.
    Verify(#[command(flatten)] Output),
    /// Keep every entry that still opens, remove the rest, and serve again; says how many were lost
    ///
    /// For a store that `serve` refuses because entries were lost. Restore a backup instead if
    /// you have one: what repair removes is gone.
    Repair(#[command(flatten)] Output),
    /// Write an encrypted bundle of every entry, to pre-seed another replica
    ///
    /// The bundle passphrase comes from --bundle-passphrase-file, HOLDFAST_BUNDLE_PASSPHRASE,
    /// or is asked on a terminal.
    Export {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[arg(long, value_name = "FILE")]
        bundle_passphrase_file: Option<PathBuf>,
        #[command(flatten)]
        output: Output,
    },
    /// Import a bundle: re-sealed under this store's keys, re-addressed under its address key
    Import {
        file: PathBuf,
        #[arg(long, value_name = "FILE")]
        bundle_passphrase_file: Option<PathBuf>,
        #[command(flatten)]
        out: Output,
    },
    /// Ask the providers again for the most asked stored questions, so the answers kept for
    /// the next outage are recent (lists the plan and its token cost unless --yes)
    ///
    /// Picks shared-namespace entries stored longer ago than --older-than and asked again at
    /// least --min-served times, most asked first, and re-asks them one at a time through the
    /// configured routes (the providers' api_key_env keys). A fresh answer replaces the stored
    /// one; a failure keeps it. Tenant entries are skipped: their API keys are never kept.
    Refresh {
        /// Entries stored longer ago than this
        #[arg(long, value_name = "AGE", default_value = "7d")]
        older_than: String,
        /// Entries asked again (served, or answered afresh) at least this many times
        #[arg(long, value_name = "N", default_value_t = 1)]
        min_served: u64,
        /// At most this many entries
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
        /// Requests sent per minute, at most
        #[arg(long, value_name = "N", default_value_t = 30)]
        per_minute: u32,
        /// List what would be refreshed and the estimated tokens; send nothing
        #[arg(long, conflicts_with = "yes")]
        dry_run: bool,
        /// Send the requests (without it, the plan is listed as with --dry-run)
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        out: Output,
    },
}

fn main() -> ExitCode {
    // `--version` also names the on-disk formats this build reads, so an operator can tell
    // before an upgrade whether a store, bundle or keyring from another build will open.
    let version: &'static str = Box::leak(version_text().into_boxed_str());
    let matches = <Cli as clap::CommandFactory>::command().version(version).get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let mut secrets = SecretEnv::default();
    take_from_environment(&mut secrets, SECRET_VARS.iter().copied());
    match run(cli, secrets) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("holdfast: error: {}", chain(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Variables that hold secrets. Each is read once, then removed from the environment
/// (`take_from_environment`); `serve` adds the providers' `api_key_env` and `[clients] keys_env`.
const SECRET_VARS: &[&str] = &[
    "HOLDFAST_PASSPHRASE",
    "HOLDFAST_KEY",
    "HOLDFAST_ADMIN_TOKEN",
    // A Redis URL may carry the Redis password.
    "HOLDFAST_STORE_URL",
    "HOLDFAST_NEW_PASSPHRASE",
    "HOLDFAST_NEW_KEY",
    "HOLDFAST_BUNDLE_PASSPHRASE",
];

/// Reads `names` into `secrets` and removes them from the process environment, so they are not
/// left in /proc/<pid>/environ, in a core file or in the environment of a child process.
///
/// Call only while this is the process's one thread: before the runtime, the logger, the store
/// or anything else has started one.
fn take_from_environment<'a>(secrets: &mut SecretEnv, names: impl IntoIterator<Item = &'a str> + Clone) {
    secrets.read(names.clone(), |name| std::env::var(name).ok());
    for name in names {
        #[cfg(target_os = "linux")]
        let original = initial_entries(name);
        // SAFETY: `remove_var` is unsound only while another thread reads or writes the
        // environment. Every caller runs on `main`'s thread before any other thread exists:
        // argument parsing and loading the configuration start none, and the tokio runtime,
        // logging, OpenTelemetry and the store are all started after this returns.
        unsafe { std::env::remove_var(name) };
        #[cfg(target_os = "linux")]
        blank(original);
    }
}

/// The `NAME=value` strings of `name` in libc's `environ`.
///
/// `remove_var` only unlinks an entry from that array: the string the kernel placed on the
/// stack at exec stays where it was, and /proc/<pid>/environ shows that memory. `blank`
/// overwrites it once it is unlinked.
#[cfg(target_os = "linux")]
fn initial_entries(name: &str) -> Vec<*mut std::ffi::c_char> {
    unsafe extern "C" {
        /// libc's NULL-terminated array of `NAME=value` C strings (POSIX `environ`).
        static mut environ: *const *mut std::ffi::c_char;
    }
    let mut found = Vec::new();
    // SAFETY: only called from `take_from_environment`, on the process's one thread, so nothing
    // changes `environ` meanwhile; every entry up to its NULL terminator is a valid C string.
    unsafe {
        let mut entry = std::ptr::addr_of!(environ).read();
        while !entry.is_null() && !(*entry).is_null() {
            let text = std::ffi::CStr::from_ptr(*entry).to_bytes();
            if text.strip_prefix(name.as_bytes()).is_some_and(|rest| rest.first() == Some(&b'=')) {
                found.push(*entry);
            }
            entry = entry.add(1);
        }
    }
    found
}

/// Overwrites each C string with NUL bytes, up to its terminator.
#[cfg(target_os = "linux")]
fn blank(strings: Vec<*mut std::ffi::c_char>) {
    for string in strings {
        // SAFETY: each pointer came from `initial_entries` just before, on this one thread; the
        // string is no longer linked from `environ`, so nothing reads it. Holdfast never calls
        // `set_var`, so every entry is one the kernel laid on the exec stack: writable, and
        // never freed (libc frees only strings its own `setenv` allocated). The writes stop
        // before the terminator.
        unsafe {
            let len = std::ffi::CStr::from_ptr(string).to_bytes().len();
            for i in 0..len {
                string.add(i).write_volatile(0);
            }
        }
    }
}

/// A secret variable as read at start-up; empty counts as unset, as for every variable.
fn secret_var(secrets: &SecretEnv, name: &str) -> Option<String> {
    secrets.get(name).filter(|v| !v.is_empty())
}

/// The configuration, with the secret overrides (`HOLDFAST_STORE_URL`) taken from `secrets`.
fn load_config(
    path: Option<&std::path::Path>,
    secrets: &SecretEnv,
) -> std::result::Result<(Config, holdfast::config::ConfigSource), holdfast::config::ConfigError> {
    Config::load_with(path, |name| secrets.get(name).or_else(|| std::env::var(name).ok()))
}

/// The build (package version, and the build id the packager set in `HOLDFAST_BUILD_ID` at
/// compile time, e.g. a git commit) and the format versions it writes and reads.
fn version_text() -> String {
    let build = option_env!("HOLDFAST_BUILD_ID").filter(|id| !id.is_empty());
    format!(
        "{}{}\nstore format {} (opens only this one; `holdfast migrate` upgrades older stores)\n\
         record envelope {}, keyring format {}, export bundle format {}, cache-key normalization {}",
        env!("CARGO_PKG_VERSION"),
        build.map(|id| format!(" (build {id})")).unwrap_or_default(),
        holdfast::store::FORMAT_VERSION,
        holdfast::store::crypto::ENVELOPE_VERSION,
        holdfast::store::keyring::KEYRING_FORMAT,
        holdfast::ops::bundle::BUNDLE_FORMAT,
        holdfast::cache_key::normalize::NORMALIZATION_VERSION,
    )
}

fn run(cli: Cli, mut secrets: SecretEnv) -> Result<ExitCode> {
    let globals = cli.globals();
    match cli.command {
        Command::Drill => {
            // Quiet by default: the report is the output; RUST_LOG shows the proxy's logs.
            let quiet = holdfast::config::LogConfig { level: "error".into(), ..Default::default() };
            holdfast::telemetry::init_logging(&quiet);
            let report = runtime()?.block_on(holdfast::ops::drill::run_drill())?;
            print!("{report}");
            Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(3) })
        }
        Command::Serve => {
            let (config, source) = load_config(cli.config.as_deref(), &secrets)?;
            // Still the only thread: the logger and the runtime start below.
            let named = config.providers.iter().filter_map(|p| p.api_key_env.as_deref());
            take_from_environment(&mut secrets, named.chain(config.clients.keys_env.as_deref()));
            holdfast::telemetry::init_logging(&config.log);
            let secret = resolve_secret(cli.passphrase_file.as_deref(), |name| secret_var(&secrets, name))?;
            runtime()?.block_on(holdfast::ops::serve::serve(config, source, secret, secrets))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Init => {
            let (config, _) = load_config(cli.config.as_deref(), &secrets)?;
            let secret = match resolve_secret(cli.passphrase_file.as_deref(), |name| secret_var(&secrets, name)) {
                Err(SecretError::Missing) if std::io::stdin().is_terminal() => ask_new_passphrase("store")?,
                other => other?,
            };
            let store = holdfast::ops::serve::create_configured(&config, &secret, StoreOptions::default())?;
            println!("created store at {}", store.location());
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { dry_run } => {
            let (config, _) = load_config(cli.config.as_deref(), &secrets)?;
            let report = holdfast::store::migrate(&config.store.path, dry_run)?;
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(command) => {
            let (request, out) = match command {
                KeysCommand::List(out) => (AdminRequest::KeysList, out),
                KeysCommand::Rotate { reencrypt, out } => (AdminRequest::KeysRotate { reencrypt }, out),
                KeysCommand::Retire { id, out } => (AdminRequest::KeysRetire { id }, out),
                KeysCommand::Passphrase { new_passphrase_file, out } => {
                    (AdminRequest::KeysPassphrase { secret: new_secret(new_passphrase_file, &secrets)? }, out)
                }
            };
            admin_command(&globals, &secrets, request, None, None, out)
        }
        Command::Audit(command) => {
            let (request, out, output) = match command {
                AuditCommand::List { since, model, provider, out } => {
                    let since_ms = since
                        .map(|s| {
                            parse_duration(&s).map(|d| holdfast::store::now_ms().saturating_sub(d.as_millis() as u64))
                        })
                        .transpose()?;
                    (
                        AdminRequest::AuditList {
                            filter: AuditFilter { since_ms, model, provider, ..AuditFilter::default() },
                        },
                        out,
                        None,
                    )
                }
                AuditCommand::Show { address, out } => (AdminRequest::AuditShow { address }, out, None),
                AuditCommand::Search { text, out } => {
                    (AdminRequest::AuditSearch { text, filter: AuditFilter::default() }, out, None)
                }
                AuditCommand::Export { out, output } => (AdminRequest::AuditExport, output, Some(out)),
                AuditCommand::Trail { verify, out } => (AdminRequest::AuditTrail { verify }, out, None),
            };
            admin_command(&globals, &secrets, request, None, output, out)
        }
        Command::Cache(command) => {
            let (request, out, input, output) = match command {
                CacheCommand::Stats(out) => (AdminRequest::CacheStats, out, None, None),
                CacheCommand::Purge { older_than, model, address, all, yes, out } => {
                    let older_than_ms =
                        older_than.map(|s| parse_duration(&s).map(|d| d.as_millis() as u64)).transpose()?;
                    let selector = PurgeSelector { older_than_ms, model, address, all };
                    if !yes && !confirm(&format!("Purge {} from the store?", describe_purge(&selector)))? {
                        eprintln!("nothing purged");
                        return Ok(ExitCode::from(1));
                    }
                    (AdminRequest::CachePurge { selector }, out, None, None)
                }
                CacheCommand::Verify(out) => (AdminRequest::CacheVerify, out, None, None),
                CacheCommand::Repair(out) => (AdminRequest::CacheRepair, out, None, None),
                CacheCommand::Export { out, bundle_passphrase_file, output } => {
                    let passphrase = bundle_passphrase(bundle_passphrase_file, true, &secrets)?;
                    (AdminRequest::CacheExport { passphrase }, output, None, Some(out))
                }
                CacheCommand::Import { file, bundle_passphrase_file, out } => {
                    let passphrase = bundle_passphrase(bundle_passphrase_file, false, &secrets)?;
                    (AdminRequest::CacheImport { passphrase }, out, Some(file), None)
                }
                CacheCommand::Refresh { older_than, min_served, limit, per_minute, dry_run, yes, out } => {
                    let older_than_ms = parse_duration(&older_than)?.as_millis() as u64;
                    let plan = RefreshPlan { older_than_ms, min_served, limit, per_minute, dry_run: dry_run || !yes };
                    (AdminRequest::CacheRefresh { plan }, out, None, None)
                }
            };
            admin_command(&globals, &secrets, request, input, output, out)
        }
    }
}

/// What every admin command needs from the global options.
struct Globals {
    config: Option<PathBuf>,
    passphrase_file: Option<PathBuf>,
    server: Option<String>,
}

impl Cli {
    fn globals(&self) -> Globals {
        Globals {
            config: self.config.clone(),
            passphrase_file: self.passphrase_file.clone(),
            // An empty HOLDFAST_SERVER means "not set", as for every other variable.
            server: self.server.clone().filter(|s| !s.is_empty()),
        }
    }
}

/// Runs an admin command on the server (`--server`) or on the store directly, then prints it.
fn admin_command(
    globals: &Globals,
    secrets: &SecretEnv,
    request: AdminRequest,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    out: Output,
) -> Result<ExitCode> {
    let progress = admin::render::ProgressLine::new(&request.describe());
    let report = |done, total| progress.update(done, total);
    let outcome = match &globals.server {
        Some(server) => {
            let token = secret_var(secrets, "HOLDFAST_ADMIN_TOKEN")
                .ok_or("--server needs the admin token: set HOLDFAST_ADMIN_TOKEN to the server's token")?;
            let call =
                admin::client::execute_remote(server, &token, &request, input.as_deref(), output.as_deref(), &report);
            runtime()?.block_on(call)?
        }
        None => {
            let (config, _) = load_config(globals.config.as_deref(), secrets)?;
            let secret = resolve_secret(globals.passphrase_file.as_deref(), |name| secret_var(secrets, name))?;
            let options = StoreOptions {
                retention: config.store.retention,
                max_bytes: config.store.max_size,
                cache_bytes: config.store.cache_memory,
                durability: config.store.durability.to_store(),
                // Verify and repair exist to look at a damaged store; everything else refuses it.
                accept_damage: matches!(request, AdminRequest::CacheVerify | AdminRequest::CacheRepair),
                ..StoreOptions::default()
            };
            let store = match holdfast::ops::serve::open_configured(&config, &secret, options) {
                Ok(store) => store,
                // A database too damaged to open is a verification failure, not a usage error.
                Err(e @ StoreOpenError::Corrupt { .. }) if matches!(request, AdminRequest::CacheVerify) => {
                    progress.finish();
                    eprintln!("holdfast: verification failed: {}", chain(&e));
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
    if out.json {
        println!("{}", serde_json::to_string_pretty(&outcome.result)?);
    } else {
        print!("{}", admin::render::render(&request, &outcome.result));
    }
    Ok(if outcome.verification_failed { ExitCode::from(3) } else { ExitCode::SUCCESS })
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
fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err("refusing to purge without --yes when not on a terminal".into());
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Reads a secret twice without echo and insists they match.
fn ask_twice(what: &str) -> Result<Zeroizing<String>> {
    let first = Zeroizing::new(rpassword::prompt_password(format!("New {what} passphrase: "))?);
    let second = Zeroizing::new(rpassword::prompt_password(format!("Repeat the {what} passphrase: "))?);
    if first != second {
        return Err("the two passphrases differ; nothing was changed".into());
    }
    Ok(first)
}

fn ask_new_passphrase(what: &str) -> Result<StoreSecret> {
    Ok(StoreSecret::passphrase(ask_twice(what)?.as_str())?)
}

/// The new secret for `keys passphrase`.
fn new_secret(file: Option<PathBuf>, secrets: &SecretEnv) -> Result<NewSecret> {
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
fn bundle_passphrase(file: Option<PathBuf>, creating: bool, secrets: &SecretEnv) -> Result<SecretText> {
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

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    // Store writes run on blocking threads. Tokio's default allows 512 of them; under a burst
    // of misses each one brought its own allocator heap (RSS 276 MiB vs 116 MiB measured).
    // A few dozen keep the disk busy.
    tokio::runtime::Builder::new_multi_thread().max_blocking_threads(32).enable_all().build()
}

/// An error and its causes on one line, so nothing that explains it is lost.
fn chain(e: &dyn std::error::Error) -> String {
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
