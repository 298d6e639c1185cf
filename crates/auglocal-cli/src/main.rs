use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match auglocal_cli::execute(auglocal_cli::Cli::parse(), &mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
