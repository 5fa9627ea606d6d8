//! The `dalle` binary: parse the command line, set up logging, run.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("DALLE_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match cli::run(cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<cli::ExitStatus>() {
            Some(status) => std::process::ExitCode::from(status.0.clamp(1, 255) as u8),
            None if cli::was_stopped(&e) => {
                // A stop request cut a wait short before anything needed saving:
                // the same status as a stop during training, so it is run again.
                eprintln!("stopped: {e:#}. Run the same command to start again.");
                std::process::ExitCode::from(dalle_xla::checkpoint::EXIT_PREEMPTED as u8)
            }
            None => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}
