//! The store at scale (issue 25, "a million entries"): how long `Store::open` takes on a store of
//! 100,000 and of 1,000,000 blobs (plus a few hundred manifests, a few thousand tag records and
//! leftover temp files), cold and warm, next to the least any index rebuild must do (a walk of
//! the folders with `metadata()` of every file, and `find -type f | wc -l`); the memory the open
//! store holds per entry; and the cost of one eviction.
//!
//! Run with `cargo bench --bench store_startup` (both sizes; the million needs ~5 GiB and a
//! million inodes of scratch disk), or `cargo bench --bench store_startup -- --quick` (100,000
//! only). Cold runs drop the page cache first (`sync; echo 3 > /proc/sys/vm/drop_caches`), which
//! needs root; without it only warm figures are given. `HOARD_BENCH_DIR` picks the folder to
//! build the stores in (default: the temp dir). Ends with a `targets:` block in
//! `bench/run.sh`'s format.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hoard::config::CacheLimits;
use hoard::store::Store;
use sha2::Digest as _;

/// The allocator hoard runs with (`src/main.rs`), so that memory is measured as it would be.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const MANIFESTS: usize = 300;
/// Tag records, 10 per repository, in `tags/gcr.io/team<n>/app/_tags/`: counted entries too.
const TAGS: usize = 3_000;
const TAGS_PER_REPO: usize = 10;
const LEFTOVERS: usize = 5;
const SMALL: usize = 100_000;
const MILLION: usize = 1_000_000;
/// Threads of the parallel walk: enough stats in flight to keep a disk's queue busy.
const WALKERS: usize = 16;
const PARALLEL_NAME: &str = "same, 16 threads over prefixes";
/// Evictions timed at each size (each of one entry); the median is reported.
const EVICTIONS: usize = 1_000;
/// Asked for by each timed reservation: no more than the smallest blob, so that a reservation
/// that evicts at all evicts one entry.
const EVICTION_NEED: u64 = 1024;
/// The memory figure is taken in a child process started with this argument, so that it starts
/// from a clean heap and jemalloc gives freed pages back at once (the scan's list of files is
/// freed when the index is built: what is left is what the open store holds).
const MEMORY_CHILD: &str = "--memory-child";
const JEMALLOC_CONF: (&str, &str) = ("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0");

type Outcome<T> = Result<T, Box<dyn std::error::Error>>;
/// One row's measurement: a run, cold or warm.
type Measure<'a> = dyn Fn(bool) -> Outcome<Duration> + 'a;

fn main() -> Outcome<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == MEMORY_CHILD) {
        return memory_child(args.get(at + 1).ok_or("no folder given")?);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let parent = std::env::var_os("HOARD_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let can_drop = drop_caches();
    println!(
        "cold = {}",
        if can_drop {
            "page cache dropped before each run (sync; echo 3 > /proc/sys/vm/drop_caches)"
        } else {
            "not measured: /proc/sys/vm/drop_caches is not writable here"
        }
    );
    let small = measure(&parent, SMALL, 7, true, can_drop)?;
    let million = if quick {
        println!("\n--quick: the store of {MILLION} blobs is not built");
        None
    } else {
        Some(measure(&parent, MILLION, 3, false, can_drop)?)
    };

    println!();
    println!("targets:");
    let warm_million = million.as_ref().map(|m| m.warm.median.as_secs_f64());
    target(
        "store open warm 1M <= 2 s",
        warm_million.map(|s| format!("{s:.2}")),
        |v| v <= 2.0,
    );
    // At the largest size measured: per entry, the index costs most at 1M (its hash table
    // doubles at 2^20 entries · 7/8).
    let largest = million.as_ref().unwrap_or(&small);
    target(
        "store memory per entry <= 200 B",
        largest.memory_per_entry.map(|b| format!("{b:.0}")),
        |v| v <= 200.0,
    );
    let ratio = million
        .as_ref()
        .map(|m| m.eviction.median.as_secs_f64() / small.eviction.median.as_secs_f64());
    target(
        "eviction 1M / eviction 100k <= 2x",
        ratio.map(|r| format!("{r:.2}")),
        |v| v <= 2.0,
    );
    Ok(())
}

/// A line of the targets block, as `bench/run.sh` prints them.
fn target(name: &str, value: Option<String>, pass: impl Fn(f64) -> bool) {
    let (shown, verdict) = match value {
        Some(v) => {
            let ok = v.parse().is_ok_and(pass);
            (v, if ok { "PASS" } else { "FAIL" })
        }
        None => ("-".to_owned(), "NOT MEASURED"),
    };
    println!("  {name:<62} {shown:<8} {verdict}");
}

/// What one size gave.
struct Figures {
    warm: Summary,
    eviction: Summary,
    memory_per_entry: Option<f64>,
}

/// Builds a store of `blobs` blobs in a new folder under `parent`, measures it and removes it.
fn measure(
    parent: &Path,
    blobs: usize,
    runs: usize,
    references: bool,
    can_drop: bool,
) -> Outcome<Figures> {
    let dir = tempfile::tempdir_in(parent)?;
    let root = dir.path();
    let entries = blobs + MANIFESTS + TAGS;
    let started = Instant::now();
    let bytes = build_store(root, blobs)?;
    println!();
    println!(
        "{blobs} blobs + {MANIFESTS} manifests + {TAGS} tag records + {LEFTOVERS} temp files, {:.0} MiB, in {} (built in {:.1} s)",
        bytes as f64 / f64::from(1 << 20),
        root.display(),
        started.elapsed().as_secs_f64()
    );

    let unlimited = CacheLimits {
        max_size: u64::MAX,
        min_free: 0,
        memory: 0,
    };
    let open = |cold: bool| -> Outcome<Duration> {
        // Store::open empties tmp/: put the leftovers back each time, outside the timing.
        leftovers(root)?;
        prepare(cold);
        let start = Instant::now();
        let store = Store::open(root, unlimited)?;
        let took = start.elapsed();
        let found = store.usage().entries;
        if found != entries {
            return Err(format!("Store::open indexed {found} entries, not {entries}").into());
        }
        Ok(took)
    };
    let walk = |cold: bool| timed(cold, blobs, || Ok(walk_with_metadata(root)));
    let parallel = |cold: bool| timed(cold, blobs, || Ok(parallel_walk(root, WALKERS)));
    let find = |cold: bool| {
        timed(cold, blobs, || {
            let output = Command::new("sh")
                .arg("-c")
                .arg("find \"$0\" -type f | wc -l")
                .arg(root)
                .output()?;
            Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
        })
    };

    println!(
        "{:<32} {:>32} {:>32}",
        format!("median of {runs} (min–max)"),
        "cold",
        "warm"
    );
    let mut rows: Vec<(&str, &Measure)> = vec![("Store::open", &open)];
    if references {
        rows.push(("read_dir walk + metadata()", &walk));
        rows.push((PARALLEL_NAME, &parallel));
    }
    rows.push(("find -type f | wc -l", &find));
    let mut open_warm = None;
    for (name, measure) in rows {
        let cold = if can_drop {
            Some(repeat(runs, || measure(true))?)
        } else {
            None
        };
        let warm = repeat(runs, || measure(false))?;
        println!(
            "{name:<32} {:>32} {:>32}",
            cold.as_ref().map_or("-".into(), Summary::show),
            warm.show()
        );
        if open_warm.is_none() {
            open_warm = Some(warm);
        }
    }
    let warm = open_warm.ok_or("Store::open was not measured")?;

    let memory_per_entry = match memory(root) {
        Ok(held) => {
            let per = held as f64 / entries as f64;
            println!(
                "memory the open store holds: {:.1} MiB resident, {per:.0} B per entry",
                held as f64 / f64::from(1 << 20)
            );
            Some(per)
        }
        Err(err) => {
            println!("memory per entry: not measured ({err})");
            None
        }
    };

    // Last, as it deletes files: a store full to its limit, then reservations that each need
    // one entry evicted (warm page cache).
    leftovers(root)?;
    let full = Store::open(
        root,
        CacheLimits {
            max_size: bytes,
            min_free: 0,
            memory: 0,
        },
    )?;
    let mut times = Vec::with_capacity(EVICTIONS);
    while times.len() < EVICTIONS {
        let start = Instant::now();
        let evicted = full.make_room_for_bench(EVICTION_NEED)?;
        let took = start.elapsed();
        if evicted == 1 {
            times.push(took);
        }
    }
    let eviction = summarize(times);
    println!(
        "one eviction (reserve room, take the LRU entry out, delete its file), median of {EVICTIONS}: {}",
        eviction.show_us()
    );
    Ok(Figures {
        warm,
        eviction,
        memory_per_entry,
    })
}

/// Bytes the process holds resident after opening the store at `root`, less what it held
/// before, measured by a child process ([`MEMORY_CHILD`]).
fn memory(root: &Path) -> Outcome<u64> {
    leftovers(root)?;
    let output = Command::new(std::env::current_exe()?)
        .arg(MEMORY_CHILD)
        .arg(root)
        .env(JEMALLOC_CONF.0, JEMALLOC_CONF.1)
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "the child failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(text.trim().parse()?)
}

/// The child: opens the store and prints the resident bytes it added.
fn memory_child(root: &str) -> Outcome<()> {
    let before = resident()?;
    let store = Store::open(
        Path::new(root),
        CacheLimits {
            max_size: u64::MAX,
            min_free: 0,
            memory: 0,
        },
    )?;
    let after = resident()?;
    println!("{}", after.saturating_sub(before));
    drop(store);
    Ok(())
}

/// Resident bytes of this process (`/proc/self/statm`, pages of 4 KiB).
fn resident() -> Outcome<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or("no resident field in /proc/self/statm")?
        .parse()?;
    Ok(pages * 4096)
}

/// Times one run of a reference walk, which returns how many files it saw.
fn timed(cold: bool, blobs: usize, walk: impl FnOnce() -> Outcome<usize>) -> Outcome<Duration> {
    prepare(cold);
    let start = Instant::now();
    let files = walk()?;
    let took = start.elapsed();
    if files < blobs + MANIFESTS {
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

    fn show_us(&self) -> String {
        let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
        format!("{} ({}–{})", us(self.median), us(self.min), us(self.max))
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn repeat(runs: usize, mut run: impl FnMut() -> Outcome<Duration>) -> Outcome<Summary> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        times.push(run()?);
    }
    Ok(summarize(times))
}

fn summarize(mut times: Vec<Duration>) -> Summary {
    times.sort();
    Summary {
        median: times[times.len() / 2],
        min: times[0],
        max: times[times.len() - 1],
    }
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

/// Writes the store: `blobs` blobs of 1–4 KiB under `blobs/sha256/<2 hex>/<64 hex>` (names are
/// digests of a counter; the contents are not, as `Store::open` does not re-hash), manifests
/// under `manifests/`, tag records pointing at them under `tags/`. Returns the bytes written.
fn build_store(root: &Path, blobs: usize) -> Outcome<u64> {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut total = 0;
    for (kind, count) in [("blobs", blobs), ("manifests", MANIFESTS)] {
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
