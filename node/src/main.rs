//! `chat-node`: one node of the chat cluster.

use chat_node::config::Settings;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// One node of the chat cluster. Settings: built-in defaults, then `--config FILE`,
/// then `CHAT__SECTION__KEY` environment variables.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// A TOML file with settings (see config/default.toml for every key).
    #[arg(long)]
    config: Option<PathBuf>,
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
