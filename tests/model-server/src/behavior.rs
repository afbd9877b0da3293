//! How a model behaves, written in the model file itself. A file that begins with the
//! line `modelgate-example-model` carries `key=value` lines up to the first empty line;
//! everything after is weights. Any other file is a well-behaved model.
//!
//! ```text
//! modelgate-example-model
//! errors=0.05        every 20th prediction answers 500
//! latency_ms=300     each prediction takes this much longer
//! load_ms=20000      loading takes this long before the server is Ready
//! ready=false        never Ready
//! exit=1             exits with this code half a second after loading (a crash loop)
//! memory_mib=512     holds this much memory once loaded (an OOM kill under a limit)
//! ```

use std::time::Duration;

use anyhow::{Context as _, bail};

pub const MAGIC: &str = "modelgate-example-model";
/// The header is read from the first bytes of the file; more is weights.
pub const HEADER_MAX: usize = 4096;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Behavior {
    /// One prediction in `errors_every` fails (0: none).
    pub errors_every: u64,
    pub latency: Duration,
    pub load: Duration,
    pub never_ready: bool,
    pub exit: Option<i32>,
    pub memory_mib: u64,
}

impl Behavior {
    /// Parses the header at the start of `head` (the file's first bytes).
    pub fn parse(head: &[u8]) -> anyhow::Result<Self> {
        let mut behavior = Behavior::default();
        let text = String::from_utf8_lossy(head);
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(MAGIC) {
            return Ok(behavior);
        }
        for line in lines {
            let line = line.trim();
            if line.is_empty() {
                break;
            }
            let (key, value) =
                line.split_once('=').with_context(|| format!("model header line {line:?}: use key=value"))?;
            let value = value.split_whitespace().next().unwrap_or_default();
            match key.trim() {
                "errors" => {
                    let rate: f64 = value.parse().context("errors must be a fraction such as 0.05")?;
                    if !(0.0..=1.0).contains(&rate) {
                        bail!("errors must be between 0 and 1");
                    }
                    behavior.errors_every = if rate > 0.0 { (1.0 / rate).round().max(1.0) as u64 } else { 0 };
                }
                "latency_ms" => behavior.latency = millis(value)?,
                "load_ms" => behavior.load = millis(value)?,
                "ready" => behavior.never_ready = value == "false",
                "exit" => behavior.exit = Some(value.parse().context("exit must be an exit code")?),
                "memory_mib" => {
                    behavior.memory_mib = value.parse().context("memory_mib must be a number")?;
                    if behavior.memory_mib > 64 * 1024 {
                        bail!("memory_mib above 64 GiB");
                    }
                }
                other => bail!("unknown model header key {other:?}"),
            }
        }
        Ok(behavior)
    }
}

fn millis(value: &str) -> anyhow::Result<Duration> {
    let ms: u64 = value.parse().context("a time in milliseconds")?;
    Ok(Duration::from_millis(ms.min(3_600_000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_weights_behave_well() {
        assert_eq!(Behavior::parse(b"weights of fraud 1.0\n").unwrap(), Behavior::default());
    }

    #[test]
    fn header_sets_behaviour_until_the_first_empty_line() {
        let b = Behavior::parse(b"modelgate-example-model\nerrors=0.05\nlatency_ms=300\n\nexit=1\n").unwrap();
        assert_eq!(b.errors_every, 20);
        assert_eq!(b.latency, Duration::from_millis(300));
        assert_eq!(b.exit, None);
    }

    #[test]
    fn bad_headers_are_refused() {
        assert!(Behavior::parse(b"modelgate-example-model\nerrors=2\n").is_err());
        assert!(Behavior::parse(b"modelgate-example-model\nspeed=fast\n").is_err());
    }
}
