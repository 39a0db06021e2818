use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = satgate::cmd::Cli::parse();
    std::process::ExitCode::from(satgate::cmd::run(cli) as u8)
}
