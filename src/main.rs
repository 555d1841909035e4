//! The `holdfast` command: parses arguments and calls the library. No behaviour lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use holdfast::config::Config;
use holdfast::secret::resolve_secret;
use holdfast::store::{Store, StoreOptions};

/// Keeps products that call LLM APIs answering when their provider fails.
///
/// Point an OpenAI SDK at http://HOST:8787/v1 or an Anthropic SDK at http://HOST:8787. Holdfast
/// forwards each request, keeps every good answer encrypted at rest, and serves the stored
/// answer when the provider fails.
///
/// The store is unlocked by HOLDFAST_PASSPHRASE, --passphrase-file, or HOLDFAST_KEY (32 random
/// bytes, base64).
#[derive(Parser)]
#[command(name = "holdfast", version, max_term_width = 100)]
struct Cli {
    /// Configuration file [default: ./holdfast.toml if present, else built-in defaults]
    #[arg(long, global = true, env = "HOLDFAST_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Read the store passphrase from FILE instead of HOLDFAST_PASSPHRASE
    #[arg(long, global = true, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (creates the store on first run)
    ///
    /// Listens on `listen` (default 127.0.0.1:8787) and keeps answers in `store.path`
    /// (default ./holdfast-data). Stops gracefully on SIGTERM or Ctrl-C.
    Serve,
    /// Create a store and its keyring, then exit
    Init,
    /// Run a self-contained outage drill: no API keys, no network, no configuration
    ///
    /// Starts a simulated provider and the proxy on a temporary encrypted store, sends
    /// requests through, takes the provider down and shows the same requests answered from
    /// the store, then fails over to a second simulated provider. Prints a report with
    /// timings; exits 3 if any step fails.
    Drill,
}

/// Exit codes: 0 ok, 1 error, 2 usage (clap), 3 verification failed.
fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("holdfast: error: {}", chain(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match cli.command {
        Command::Drill => {
            // Quiet by default: the report is the output; RUST_LOG shows the proxy's logs.
            let quiet = holdfast::config::LogConfig { level: "error".into(), ..Default::default() };
            holdfast::telemetry::init_logging(&quiet);
            let report = runtime()?.block_on(holdfast::drill::run_drill())?;
            print!("{report}");
            Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(3) })
        }
        Command::Serve => {
            let (config, source) = Config::load(cli.config.as_deref())?;
            holdfast::telemetry::init_logging(&config.log);
            let secret = resolve_secret(cli.passphrase_file.as_deref(), |name| std::env::var(name).ok())?;
            runtime()?.block_on(holdfast::proxy::serve(config, source, secret))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Init => {
            let (config, _) = Config::load(cli.config.as_deref())?;
            holdfast::telemetry::init_logging(&config.log);
            let secret = resolve_secret(cli.passphrase_file.as_deref(), |name| std::env::var(name).ok())?;
            let store = Store::create(&config.store.path, &secret, StoreOptions::default())?;
            println!("created store at {}", store.path().display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
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
