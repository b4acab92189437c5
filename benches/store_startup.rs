//! How long `Store::open` takes on a store of 100,000 blobs (plus a few hundred manifests, a few
//! thousand tag records and leftover temp files), cold and warm, next to the least any index rebuild must do: a walk of
//! the folders with `metadata()` of every file, and `find -type f | wc -l`.
//!
//! Run with `cargo bench --bench store_startup`. Cold runs drop the page cache first
//! (`sync; echo 3 > /proc/sys/vm/drop_caches`), which needs root; without it only warm figures
//! are given. `HOARD_BENCH_DIR` picks the folder to build the store in (default: the temp dir).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hoard::config::CacheLimits;
use hoard::store::Store;
use sha2::Digest as _;

/// The figure: 100,000 entries, opened in under a second.
const BLOBS: usize = 100_000;
const MANIFESTS: usize = 300;
/// Tag records, 10 per repository, in `tags/gcr.io/team<n>/app/_tags/`: counted entries too.
const TAGS: usize = 3_000;
const TAGS_PER_REPO: usize = 10;
const LEFTOVERS: usize = 5;
const RUNS: usize = 7;
const TARGET: Duration = Duration::from_secs(1);
/// Threads of the parallel walk: enough stats in flight to keep a disk's queue busy.
const WALKERS: usize = 16;
const PARALLEL_NAME: &str = "same, 16 threads over prefixes";

type Outcome<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Outcome<()> {
    let parent = std::env::var_os("HOARD_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tempfile::tempdir_in(parent)?;
    let root = dir.path();
    let started = Instant::now();
    let bytes = build_store(root)?;
    println!(
        "store_startup: {BLOBS} blobs + {MANIFESTS} manifests + {TAGS} tag records + {LEFTOVERS} temp files, {:.0} MiB, in {} (built in {:.1} s)",
        bytes as f64 / f64::from(1 << 20),
        root.display(),
        started.elapsed().as_secs_f64()
    );
    let can_drop = drop_caches();
    println!(
        "cold = {}",
        if can_drop {
            "page cache dropped before each run (sync; echo 3 > /proc/sys/vm/drop_caches)"
        } else {
            "not measured: /proc/sys/vm/drop_caches is not writable here"
        }
    );

    let limits = CacheLimits {
        max_size: u64::MAX,
        min_free: 0,
    };
    let open = |cold: bool| -> Outcome<Duration> {
        // Store::open empties tmp/: put the leftovers back each time, outside the timing.
        leftovers(root)?;
        prepare(cold);
        let start = Instant::now();
        let store = Store::open(root, limits)?;
        let took = start.elapsed();
        let entries = store.usage().entries;
        if entries != BLOBS + MANIFESTS + TAGS {
            return Err(format!("Store::open indexed {entries} entries").into());
        }
        Ok(took)
    };
    let walk = |cold: bool| timed(cold, || Ok(walk_with_metadata(root)));
    let parallel = |cold: bool| timed(cold, || Ok(parallel_walk(root, WALKERS)));
    let find = |cold: bool| {
        timed(cold, || {
            let output = Command::new("sh")
                .arg("-c")
                .arg("find \"$0\" -type f | wc -l")
                .arg(root)
                .output()?;
            Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
        })
    };

    println!();
    println!(
        "{:<32} {:>32} {:>32}",
        format!("median of {RUNS} (min–max)"),
        "cold",
        "warm"
    );
    let mut open_times = None;
    for (name, measure) in [
        ("Store::open", &open as &dyn Fn(bool) -> Outcome<Duration>),
        ("read_dir walk + metadata()", &walk),
        (PARALLEL_NAME, &parallel),
        ("find -type f | wc -l", &find),
    ] {
        let cold = if can_drop {
            Some(repeat(|| measure(true))?)
        } else {
            None
        };
        let warm = repeat(|| measure(false))?;
        println!(
            "{name:<32} {:>32} {:>32}",
            cold.as_ref().map_or("-".into(), Summary::show),
            warm.show()
        );
        if name == "Store::open" {
            open_times = Some((cold, warm));
        }
    }
    if let Some((cold, warm)) = open_times {
        let worst = cold.map_or(warm.max, |c| c.max.max(warm.max));
        println!();
        println!(
            "target: Store::open with {BLOBS} entries under {TARGET:?}: {} (slowest run {})",
            if worst < TARGET { "met" } else { "NOT met" },
            ms(worst)
        );
    }
    Ok(())
}

/// Times one run of a reference walk, which returns how many files it saw.
fn timed(cold: bool, walk: impl FnOnce() -> Outcome<usize>) -> Outcome<Duration> {
    prepare(cold);
    let start = Instant::now();
    let files = walk()?;
    let took = start.elapsed();
    if files < BLOBS + MANIFESTS {
        return Err(format!("a reference walk found only {files} files").into());
    }
    Ok(took)
}

struct Summary {
    median: Duration,
    min: Duration,
    max: Duration,
}

impl Summary {
    fn show(&self) -> String {
        format!("{} ({}–{})", ms(self.median), ms(self.min), ms(self.max))
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn repeat(mut run: impl FnMut() -> Outcome<Duration>) -> Outcome<Summary> {
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        times.push(run()?);
    }
    times.sort();
    Ok(Summary {
        median: times[RUNS / 2],
        min: times[0],
        max: times[RUNS - 1],
    })
}

/// Cold: drop the page cache (dentries and inodes included). Warm: nothing to do, the runs
/// before have read it all.
fn prepare(cold: bool) {
    if cold {
        drop_caches();
    }
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`; whether it worked.
fn drop_caches() -> bool {
    let synced = Command::new("sync").status().is_ok_and(|s| s.success());
    synced && std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

/// Writes the store: blobs of 1–4 KiB under `blobs/sha256/<2 hex>/<64 hex>` (names are
/// digests of a counter; the contents are not, as `Store::open` does not re-hash), manifests
/// under `manifests/`, tag records pointing at them under `tags/`. Returns the bytes written.
fn build_store(root: &Path) -> Outcome<u64> {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut total = 0;
    for (kind, count) in [("blobs", BLOBS), ("manifests", MANIFESTS)] {
        let base = root.join(kind).join("sha256");
        for prefix in 0..=255u8 {
            std::fs::create_dir_all(base.join(const_hex::encode([prefix])))?;
        }
        for i in 0..count {
            let hex = const_hex::encode(sha2::Sha256::digest(format!("{kind}{i}")));
            let size = 1024 + (rng.next() % 3073) as usize;
            let mut data = Vec::with_capacity(size);
            if kind == "manifests" {
                data.extend_from_slice(b"application/vnd.oci.image.manifest.v1+json\n");
            }
            while data.len() < size {
                data.extend_from_slice(&rng.next().to_le_bytes());
            }
            data.truncate(size);
            std::fs::write(base.join(&hex[..2]).join(&hex), &data)?;
            total += size as u64;
        }
    }
    for n in 0..TAGS {
        let dir = root
            .join("tags/gcr.io")
            .join(format!("team{}", n / TAGS_PER_REPO))
            .join("app/_tags");
        std::fs::create_dir_all(&dir)?;
        let digest = const_hex::encode(sha2::Sha256::digest(format!("manifests{}", n % MANIFESTS)));
        let line = format!(
            "1700000000000 sha256:{digest} 1234 application/vnd.oci.image.manifest.v1+json\n"
        );
        std::fs::write(dir.join(format!("v{n}")), &line)?;
        total += line.len() as u64;
    }
    leftovers(root)?;
    Ok(total)
}

/// Half-written fills, as a kill leaves them.
fn leftovers(root: &Path) -> Outcome<()> {
    let tmp = root.join(hoard::store::TMP_DIR);
    std::fs::create_dir_all(&tmp)?;
    std::fs::write(tmp.join(hoard::store::TMP_MARKER), b"")?;
    for i in 0..LEFTOVERS {
        std::fs::write(tmp.join(format!("fill-left{i}")), vec![7u8; 100_000])?;
    }
    Ok(())
}

/// Every file under `dir` with its metadata read, as any index rebuild must at least do.
fn walk_with_metadata(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut files = 0;
    for entry in entries.flatten() {
        match entry.metadata() {
            Ok(meta) if meta.is_dir() => files += walk_with_metadata(&entry.path()),
            Ok(_) => files += 1,
            Err(_) => {}
        }
    }
    files
}

/// The same walk with the `<kind>/<algorithm>/<2 hex>` folders shared out among `threads`,
/// so that many `stat`s wait on the disk at once: what a parallel index rebuild could reach.
fn parallel_walk(root: &Path, threads: usize) -> usize {
    let mut prefixes = Vec::new();
    for kind in ["blobs", "manifests"] {
        if let Ok(entries) = std::fs::read_dir(root.join(kind).join("sha256")) {
            prefixes.extend(entries.flatten().map(|e| e.path()));
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut files = 0;
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(dir) = prefixes.get(i) else {
                            return files;
                        };
                        files += walk_with_metadata(dir);
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    })
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
