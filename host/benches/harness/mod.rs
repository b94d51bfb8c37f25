//! What every bench shares: it stays idle outside `cargo bench`, reads its
//! size from the environment, builds the runtime, and prints a table.

/// `None` when the bench was not run by `cargo bench` (`cargo test
/// --all-targets` runs benches without `--bench`: nothing to measure there);
/// otherwise how many messages to measure (`count_var`, else 20,000) and a
/// multi-threaded runtime.
pub fn start(bench: &str, count_var: &str) -> Option<(u64, tokio::runtime::Runtime)> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("{bench} bench: skipped (run it with `cargo bench`)");
        return None;
    }
    let count = std::env::var(count_var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    Some((count, runtime))
}

/// Prints the bench's results as a Markdown table under `title`, which is
/// followed by the number of CPUs the figures were measured on.
pub fn print_table(title: &str, columns: &[&str], rows: &[Vec<String>]) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!("{title}, {cpus} CPUs");
    println!();
    println!("| {} |", columns.join(" | "));
    println!("|{}", "---|".repeat(columns.len()));
    for row in rows {
        println!("| {} |", row.join(" | "));
    }
}
