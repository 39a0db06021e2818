use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = satgate::cmd::Cli::parse();
    if !cli.command.serves() {
        satgate::cmd::end_quietly_on_a_closed_pipe();
    }
    std::process::ExitCode::from(satgate::cmd::run(cli) as u8)
}
