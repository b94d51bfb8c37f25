//! The tables the bench prints and writes, in Markdown.

pub struct Table {
    title: String,
    note: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, note: String, header: &[&str]) -> Table {
        Table {
            title: title.to_string(),
            note,
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    /// A row saying that a broker's part of the scenario failed: `broker`,
    /// then `what` in the second column, the rest empty.
    pub fn failed(&mut self, broker: &str, what: &str) {
        let mut cells = vec![broker.to_string(), what.to_string()];
        cells.resize(self.header.len().max(2), "—".into());
        self.rows.push(cells);
    }

    pub fn markdown(&self) -> String {
        let line = |cells: &[String]| {
            let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = format!("### {}\n\n{}\n\n", self.title, self.note);
        out += &line(&self.header);
        out += &line(&vec!["---".to_string(); self.header.len()]);
        for row in &self.rows {
            out += &line(row);
        }
        out
    }
}

pub fn mb_per_s(records_per_s: f64, payload: usize) -> String {
    format!("{:.2}", records_per_s * payload as f64 / 1e6)
}

/// `ours / theirs`, as the tables print it.
pub fn ratio(ours: f64, theirs: f64) -> String {
    format!("{:.2}", ours / theirs)
}

/// The machine, for the heading: CPU model, cores, load at the start.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{cpu}, {cores} cores, load average {} at the start",
        load_average()
    )
}

/// The 1-minute load average.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

/// Today's date (UTC), `YYYY-MM-DD`.
pub fn date() -> String {
    let mut stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    stamp.truncate("YYYY-MM-DD".len());
    stamp
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_date_has_its_shape() {
        let date = super::date();
        assert_eq!(date.len(), 10, "{date}");
        assert!(date.starts_with("20"), "{date}");
    }
}
