//! `acs-stream generate`: realistic synthetic traffic as JSON lines (one record value per
//! line), the input `process` reads. Deterministic for a seed.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use crate::synth::{Generator, SynthOptions};

/// What to generate and where.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Output file, or `-` for standard output.
    pub out: PathBuf,
    /// Number of records.
    pub events: u64,
    pub synth: SynthOptions,
}

/// Writes the records; returns how many were malformed on purpose.
pub fn run(options: &GenerateOptions) -> io::Result<u64> {
    let writer: Box<dyn Write> = if options.out.as_os_str() == "-" {
        Box::new(io::stdout().lock())
    } else {
        Box::new(File::create(&options.out)?)
    };
    let mut writer = BufWriter::with_capacity(1 << 16, writer);
    let mut malformed = 0;
    for record in Generator::new(options.synth.clone()).take(usize::try_from(options.events).unwrap_or(usize::MAX)) {
        malformed += u64::from(record.malformed);
        // A value that holds a newline cannot be one line: the generator's JSON never does
        // (serde_json escapes it), and its malformed bytes are built without one.
        debug_assert!(!record.value.contains(&b'\n'));
        writer.write_all(&record.value)?;
        writer.write_all(b"\n")?;
    }
    writer.flush()?;
    Ok(malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_line_per_record_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str| {
            let out = dir.path().join(name);
            let options = GenerateOptions { out: out.clone(), events: 500, synth: SynthOptions::default() };
            let malformed = run(&options).unwrap();
            (std::fs::read(out).unwrap(), malformed)
        };
        let (a, malformed) = write("a.jsonl");
        let (b, _) = write("b.jsonl");
        assert_eq!(a, b, "same seed, same bytes");
        assert_eq!(a.iter().filter(|&&byte| byte == b'\n').count(), 500);
        assert!(malformed < 500);
    }
}
