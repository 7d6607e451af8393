//! `chat-node`: one node of the chat cluster.

use chat_node::config::Settings;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// One node of the chat cluster. Settings: built-in defaults, then `--config FILE`,
/// then `CHAT__SECTION__KEY` environment variables.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// A TOML file with settings (see config/default.toml for every key).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Prints a token of user ID signed with the settings' `auth.jwt_secret` (and
    /// `iss`/`aud` when set), for trying the API by hand. A company's backend mints
    /// its own the same way (see the README).
    MintToken {
        /// The user id (`sub`).
        #[arg(long)]
        user: i64,
        /// Lifetime, e.g. "1h" (default: `auth.token_ttl`).
        #[arg(long)]
        ttl: Option<String>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match Settings::load(args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chat-node: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::MintToken { user, ttl }) = args.command {
        return mint(&settings, user, ttl.as_deref());
    }
    chat_node::init_tracing(&settings);
    let result = actix_web::rt::System::new().block_on(chat_node::run(settings));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "chat node failed");
            eprintln!("chat-node: {e}");
            ExitCode::FAILURE
        }
    }
}

fn mint(settings: &Settings, user: i64, ttl: Option<&str>) -> ExitCode {
    if user <= 0 {
        eprintln!("chat-node: --user must be a positive user id");
        return ExitCode::from(2);
    }
    let ttl = match ttl.map(chat_node::config::parse_duration) {
        None => settings.auth.token_ttl,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            eprintln!("chat-node: --ttl: {e}");
            return ExitCode::from(2);
        }
    };
    match chat_node::auth::Tokens::new(settings).issue_for(chat_wire::UserId(user), ttl) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chat-node: {e}");
            ExitCode::FAILURE
        }
    }
}
