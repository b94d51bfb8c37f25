//! `danube-host`: runs Danube connectors compiled to WebAssembly components.
//! The command line is [`danube_host::cli`]; everything it runs is the
//! `danube_host` library.

fn main() -> std::process::ExitCode {
    danube_host::cli::main()
}
