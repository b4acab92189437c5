//! `hoard cache verify`: re-hashes every blob and manifest; an entry whose content does not
//! hash to its name, or a manifest file without its media-type line, is removed and reported.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::ops::disk::{CacheDir, Entry, Guard, Kind, Removal, remove_if_unchanged};
use crate::ops::{OpsError, Outcome, io_error};

/// Read buffer per worker: large enough that hashing, not system calls, sets the pace.
const READ_BUFFER: usize = 256 << 10;

/// Workers hashing at once: a few saturate an NVMe disk, more only add seeks on a spinning one.
const MAX_WORKERS: usize = 4;

/// The longest media-type line accepted (RFC 6838 allows 127 + 1 + 127 characters).
const MAX_MEDIA_TYPE_LINE: u64 = 256;

/// What one entry turned out to be.
enum Check {
    Good(u64),
    Corrupt(&'static str, u64),
    /// Removed by hoard (eviction) while the check ran.
    Gone,
}

/// Totals shared by the workers.
#[derive(Default)]
struct Tally {
    entries: AtomicU64,
    bytes: AtomicU64,
    corrupt: AtomicU64,
    failed: AtomicBool,
}

/// Verifies every entry, printing one line per corrupt entry and a summary. A progress bar is
/// drawn on stderr when it is a terminal.
pub fn run(dir: &CacheDir, out: &mut (dyn Write + Send)) -> Result<Outcome, OpsError> {
    let entries = dir.all_entries()?;
    let bar = ProgressBar::with_draw_target(
        Some(entries.iter().map(Entry::size).sum()),
        ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = ProgressStyle::with_template(
        "verifying {bar:40} {binary_bytes}/{binary_total_bytes} ({eta} left)",
    ) {
        bar.set_style(style);
    }
    let next = AtomicUsize::new(0);
    let tally = Tally::default();
    let out = Mutex::new(out);
    let first_error = Mutex::new(None);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WORKERS);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while !tally.failed.load(Ordering::Relaxed) {
                    let Some(entry) = entries.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        return;
                    };
                    if let Err(e) = verify_one(entry, &bar, &tally, &out) {
                        tally.failed.store(true, Ordering::Relaxed);
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    if let Some(error) = first_error.into_inner().ok().flatten() {
        return Err(error);
    }
    let corrupt = tally.corrupt.into_inner();
    let out = out
        .into_inner()
        .map_err(|_| io::Error::other("output lock poisoned"))?;
    writeln!(
        out,
        "verified {} entries, {} bytes ({}), {corrupt} corrupt removed",
        tally.entries.into_inner(),
        tally.bytes.load(Ordering::Relaxed),
        HumanBytes(tally.bytes.into_inner()),
    )?;
    Ok(Outcome::from_trouble(corrupt > 0))
}

fn verify_one(
    entry: &Entry,
    bar: &ProgressBar,
    tally: &Tally,
    out: &Mutex<&mut (dyn Write + Send)>,
) -> Result<(), OpsError> {
    let file = match File::open(&entry.path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("open", &entry.path)(e)),
    };
    let opened = file.metadata().map_err(io_error("look at", &entry.path))?;
    let (reason, bytes) = match check(entry, file, bar).map_err(io_error("read", &entry.path))? {
        Check::Gone => return Ok(()),
        Check::Good(bytes) => (None, bytes),
        Check::Corrupt(reason, bytes) => (Some(reason), bytes),
    };
    tally.entries.fetch_add(1, Ordering::Relaxed);
    tally.bytes.fetch_add(bytes, Ordering::Relaxed);
    let Some(reason) = reason else {
        return Ok(());
    };
    // A file hoard replaced meanwhile is a new one, to be checked another time.
    if remove_if_unchanged(&entry.path, &opened, Guard::SameFile)? != Removal::Removed {
        return Ok(());
    }
    tally.corrupt.fetch_add(1, Ordering::Relaxed);
    let mut out = out
        .lock()
        .map_err(|_| io::Error::other("output lock poisoned"))?;
    bar.suspend(|| {
        writeln!(
            out,
            "removed corrupt {} {}: {reason}",
            entry.kind.as_str(),
            entry.digest
        )
    })?;
    Ok(())
}

/// Hashes an open entry file, feeding the bar as bytes go by.
fn check(entry: &Entry, file: File, bar: &ProgressBar) -> io::Result<Check> {
    let mut reader = BufReader::with_capacity(READ_BUFFER, file);
    let mut read = 0u64;
    if entry.kind == Kind::Manifest {
        let mut line = Vec::new();
        (&mut reader)
            .take(MAX_MEDIA_TYPE_LINE)
            .read_until(b'\n', &mut line)?;
        read += line.len() as u64;
        bar.inc(line.len() as u64);
        if !is_media_type_line(&line) {
            return Ok(Check::Corrupt("no media-type line", read));
        }
    }
    let mut hasher = entry.digest.hasher();
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Check::Gone),
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        hasher.update(chunk);
        let len = chunk.len();
        reader.consume(len);
        read += len as u64;
        bar.inc(len as u64);
    }
    if hasher.matches(&entry.digest) {
        Ok(Check::Good(read))
    } else {
        Ok(Check::Corrupt("content does not match the digest", read))
    }
}

/// `type/subtype[+suffix]\n`: printable ASCII with a slash, no spaces.
fn is_media_type_line(line: &[u8]) -> bool {
    let Some(media_type) = line.strip_suffix(b"\n") else {
        return false;
    };
    media_type.contains(&b'/')
        && media_type.first().is_some_and(u8::is_ascii_alphanumeric)
        && media_type.iter().all(u8::is_ascii_graphic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_lines_are_recognised() {
        assert!(is_media_type_line(
            b"application/vnd.oci.image.manifest.v1+json\n"
        ));
        assert!(!is_media_type_line(b"{\"schemaVersion\":2}"));
        assert!(!is_media_type_line(b"\n"));
        assert!(!is_media_type_line(b"{\"a\":\"b/c\"}\n"));
        assert!(!is_media_type_line(b"text/plain; charset=x\n"));
    }
}
