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
}

/// Exit codes: 0 ok, 1 error, 2 usage (clap), 3 verification failed.
fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holdfast: error: {}", chain(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let (config, source) = Config::load(cli.config.as_deref())?;
    holdfast::telemetry::init_logging(&config.log);
    let secret = resolve_secret(cli.passphrase_file.as_deref(), |name| std::env::var(name).ok())?;
    match cli.command {
        Command::Serve => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(holdfast::proxy::serve(config, source, secret))?;
        }
        Command::Init => {
            let store = Store::create(&config.store.path, &secret, StoreOptions::default())?;
            println!("created store at {}", store.path().display());
        }
    }
    Ok(())
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
