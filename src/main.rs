//! The `holdfast` command: parses arguments and calls the library. No behaviour lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use holdfast::config::parse_duration;
use holdfast::ops::admin::{AdminRequest, PurgeSelector, RefreshPlan};
use holdfast::ops::audit::AuditFilter;
use holdfast::ops::cli::{self, GlobalOptions, OutputFormat, SECRET_VARS};
use holdfast::secret::SecretEnv;

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

    // The command to run. A `///` here would become clap help text, so this stays `//`.
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

/// The `--json` flag of every command that prints a result.
#[derive(Args, Clone, Copy)]
struct JsonFlag {
    /// Print JSON for scripts instead of a table
    #[arg(long)]
    json: bool,
}

impl JsonFlag {
    fn format(self) -> OutputFormat {
        if self.json { OutputFormat::Json } else { OutputFormat::Text }
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Key ids, when created, status (active / retired) and how many records each seals
    List(#[command(flatten)] JsonFlag),
    /// Make a new data key active for every new write; older records stay readable
    Rotate {
        /// Then re-seal every record under the new key (resumable: run it again to continue)
        #[arg(long)]
        reencrypt: bool,
        #[command(flatten)]
        format: JsonFlag,
    },
    /// Destroy a retired key; refused while any record is still sealed under it
    Retire {
        id: u32,
        #[command(flatten)]
        format: JsonFlag,
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
        format: JsonFlag,
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
        format: JsonFlag,
    },
    /// The full normalized request and the answer of one entry
    Show {
        address: String,
        #[command(flatten)]
        format: JsonFlag,
    },
    /// Entries whose prompt or answer contains TEXT (case-insensitive)
    Search {
        text: String,
        #[command(flatten)]
        format: JsonFlag,
    },
    /// Every entry, decrypted, as JSON Lines for review tools
    Export {
        /// File to write (must not exist)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        format: JsonFlag,
    },
    /// The access trail of who decrypted or changed stored data
    Trail {
        /// Check the hash chain and name the first broken link (exit 3 if broken)
        #[arg(long)]
        verify: bool,
        #[command(flatten)]
        format: JsonFlag,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Entries, bytes, by provider and model, times served, oldest and newest
    Stats(#[command(flatten)] JsonFlag),
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
        format: JsonFlag,
    },
    /// Open every record; name each tampered or corrupt one and count missing ones (exit 3 if any)
    ///
    /// Also checks the store's integrity record: entries that were stored but are gone (a
    /// damaged or rolled-back database) are counted as missing. Nothing is changed.
    Verify(#[command(flatten)] JsonFlag),
    /// Keep every entry that still opens, remove the rest, and serve again; says how many were lost
    ///
    /// For a store that `serve` refuses because entries were lost. Restore a backup instead if
    /// you have one: what repair removes is gone.
    Repair(#[command(flatten)] JsonFlag),
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
        format: JsonFlag,
    },
    /// Import a bundle: re-sealed under this store's keys, re-addressed under its address key
    Import {
        file: PathBuf,
        #[arg(long, value_name = "FILE")]
        bundle_passphrase_file: Option<PathBuf>,
        #[command(flatten)]
        format: JsonFlag,
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
        format: JsonFlag,
    },
}

fn main() -> ExitCode {
    // `--version` also names the on-disk formats this build reads, so an operator can tell
    // before an upgrade whether a store, bundle or keyring from another build will open.
    let version: &'static str = Box::leak(cli::version_text().into_boxed_str());
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
            eprintln!("holdfast: error: {}", cli::error_chain(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli, mut secrets: SecretEnv) -> cli::CommandResult<ExitCode> {
    let globals = cli.globals();
    match cli.command {
        Command::Drill => cli::drill(),
        Command::Serve => {
            let (config, source) = cli::load_config(globals.config.as_deref(), &secrets)?;
            // Still the only thread: the logger and the runtime start in `cli::serve`.
            let named = config.providers.iter().filter_map(|p| p.api_key_env.as_deref());
            take_from_environment(&mut secrets, named.chain(config.clients.keys_env.as_deref()));
            cli::serve(config, source, &globals, secrets)
        }
        Command::Init => cli::init(&globals, &secrets),
        Command::Migrate { dry_run } => cli::migrate(&globals, &secrets, dry_run),
        Command::Keys(command) => {
            let (request, format) = match command {
                KeysCommand::List(format) => (AdminRequest::KeysList, format),
                KeysCommand::Rotate { reencrypt, format } => (AdminRequest::KeysRotate { reencrypt }, format),
                KeysCommand::Retire { id, format } => (AdminRequest::KeysRetire { id }, format),
                KeysCommand::Passphrase { new_passphrase_file, format } => {
                    (AdminRequest::KeysPassphrase { secret: cli::new_secret(new_passphrase_file, &secrets)? }, format)
                }
            };
            cli::admin_command(&globals, &secrets, request, None, None, format.format())
        }
        Command::Audit(command) => {
            let (request, format, output) = match command {
                AuditCommand::List { since, model, provider, format } => {
                    let since_ms = since
                        .map(|s| {
                            parse_duration(&s).map(|d| holdfast::store::now_ms().saturating_sub(d.as_millis() as u64))
                        })
                        .transpose()?;
                    (
                        AdminRequest::AuditList {
                            filter: AuditFilter { since_ms, model, provider, ..AuditFilter::default() },
                        },
                        format,
                        None,
                    )
                }
                AuditCommand::Show { address, format } => (AdminRequest::AuditShow { address }, format, None),
                AuditCommand::Search { text, format } => {
                    (AdminRequest::AuditSearch { text, filter: AuditFilter::default() }, format, None)
                }
                AuditCommand::Export { out, format } => (AdminRequest::AuditExport, format, Some(out)),
                AuditCommand::Trail { verify, format } => (AdminRequest::AuditTrail { verify }, format, None),
            };
            cli::admin_command(&globals, &secrets, request, None, output, format.format())
        }
        Command::Cache(command) => {
            let (request, format, input, output) = match command {
                CacheCommand::Stats(format) => (AdminRequest::CacheStats, format, None, None),
                CacheCommand::Purge { older_than, model, address, all, yes, format } => {
                    let older_than_ms =
                        older_than.map(|s| parse_duration(&s).map(|d| d.as_millis() as u64)).transpose()?;
                    let selector = PurgeSelector { older_than_ms, model, address, all };
                    if !yes && !cli::confirm_purge(&selector)? {
                        eprintln!("nothing purged");
                        return Ok(ExitCode::from(1));
                    }
                    (AdminRequest::CachePurge { selector }, format, None, None)
                }
                CacheCommand::Verify(format) => (AdminRequest::CacheVerify, format, None, None),
                CacheCommand::Repair(format) => (AdminRequest::CacheRepair, format, None, None),
                CacheCommand::Export { out, bundle_passphrase_file, format } => {
                    let passphrase = cli::bundle_passphrase(bundle_passphrase_file, true, &secrets)?;
                    (AdminRequest::CacheExport { passphrase }, format, None, Some(out))
                }
                CacheCommand::Import { file, bundle_passphrase_file, format } => {
                    let passphrase = cli::bundle_passphrase(bundle_passphrase_file, false, &secrets)?;
                    (AdminRequest::CacheImport { passphrase }, format, Some(file), None)
                }
                CacheCommand::Refresh { older_than, min_served, limit, per_minute, dry_run, yes, format } => {
                    let older_than_ms = parse_duration(&older_than)?.as_millis() as u64;
                    let plan = RefreshPlan { older_than_ms, min_served, limit, per_minute, dry_run: dry_run || !yes };
                    (AdminRequest::CacheRefresh { plan }, format, None, None)
                }
            };
            cli::admin_command(&globals, &secrets, request, input, output, format.format())
        }
    }
}

impl Cli {
    fn globals(&self) -> GlobalOptions {
        GlobalOptions {
            config: self.config.clone(),
            passphrase_file: self.passphrase_file.clone(),
            // An empty HOLDFAST_SERVER means "not set", as for every other variable.
            server: self.server.clone().filter(|s| !s.is_empty()),
        }
    }
}

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
