//! `hoard cache import`: the images of an OCI image-layout tar (from `hoard cache export`) into
//! the cache folder, for a hoard that cannot reach their registry.
//!
//! The tar is read as a stream, each blob into a staging folder under `hoard-tmp/` while it is
//! hashed; then `index.json` is followed from each image to every manifest and blob. Anything
//! wrong (a blob that does not match its name, a missing blob, a manifest that is not JSON, a
//! name outside the layout, a link) refuses the whole tar, and the staging folder goes with
//! nothing added. Only then is each entry renamed into place, with an `imported` origin for the
//! image's registry and repository (so `auth_on_hit = "upstream"` can serve it while the registry
//! cannot be asked), and each tag written last, fetched now.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::oci::Digest;
use crate::ops::disk::CacheDir;
use crate::ops::imageref::ImageRef;
use crate::ops::import_commit::{Plan, commit};
use crate::ops::layout_tar::{EntryName, LayoutEntry, LayoutIndex, entry_name, named_image};
use crate::ops::manifest::{Descriptor, Manifest, OCI_INDEX, OCI_MANIFEST};
use crate::ops::{OpsError, Outcome, io_error};
use crate::store::{CACHE_MARKER, Key, MAX_MANIFEST_SIZE, TMP_DIR, TMP_MARKER, TagEntry};

/// `index.json` and `oci-layout` larger than this are refused: an index of thousands of images
/// takes a few hundred KiB.
const MAX_DOCUMENT: u64 = 4 << 20;

/// The name of a staging folder in `hoard-tmp/` starts with this.
const STAGING_PREFIX: &str = "import-";

/// A staging folder untouched this long belongs to an import that was killed.
const ABANDONED: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Indexes nested deeper than this are refused.
const MAX_DEPTH: usize = 4;

/// Why a tar is refused: one line naming the bad entry or digest.
#[derive(Debug)]
struct Refused(String);

/// Imports the tar at `file` into the cache folder `dir`. A bad tar is said in one line on
/// stderr and changes nothing ([`Outcome::Refused`]).
pub fn run(dir: &CacheDir, file: &Path, out: &mut dyn Write) -> Result<Outcome, OpsError> {
    let root = dir.root();
    let tmp = prepare(root)?;
    let staging = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(&tmp)
        .map_err(io_error("create a staging folder in", &tmp))?;
    let plan = match stage(file, staging.path()).and_then(|staged| plan(staging.path(), &staged)) {
        Ok(plan) => plan,
        Err(Staging::Refused(Refused(why))) => {
            eprintln!("hoard: import {}: refused: {why}", file.display());
            writeln!(out, "nothing imported")?;
            return Ok(Outcome::Refused);
        }
        Err(Staging::Disk(e)) => return Err(e),
    };
    let added = commit(dir, staging.path(), &plan)?;
    for (image, entry, blobs) in &plan.images {
        writeln!(out, "imported {image} {} ({blobs} blobs)", entry.digest)?;
    }
    writeln!(
        out,
        "added {} blobs and {} manifests ({}), {} already present; a running hoard serves them \
         from its next reconcile",
        added.blobs,
        added.manifests,
        HumanBytes(added.bytes),
        added.present
    )?;
    Ok(Outcome::Done)
}

/// A refusal of the tar, or a disk error of this host.
enum Staging {
    Refused(Refused),
    Disk(OpsError),
}

impl From<Refused> for Staging {
    fn from(r: Refused) -> Staging {
        Staging::Refused(r)
    }
}

impl From<OpsError> for Staging {
    fn from(e: OpsError) -> Staging {
        Staging::Disk(e)
    }
}

fn refuse<T>(why: String) -> Result<T, Staging> {
    Err(Staging::Refused(Refused(why)))
}

/// Makes sure `root` is hoard's cache folder (marking it when it is empty) with its temp folder,
/// and returns the temp folder. A folder of other files is refused, as hoard refuses it.
fn prepare(root: &Path) -> Result<PathBuf, OpsError> {
    let not_ours = |why: &str| io_error("use", root)(std::io::Error::other(why.to_owned()));
    if !root.join(CACHE_MARKER).is_file() {
        let mut listing = std::fs::read_dir(root).map_err(io_error("list", root))?;
        if listing.next().is_some() {
            return Err(not_ours("it holds files but not hoard's marker"));
        }
        let marker = root.join(CACHE_MARKER);
        std::fs::write(&marker, b"hoard's cache folder\n").map_err(io_error("mark", &marker))?;
    }
    let tmp = root.join(TMP_DIR);
    std::fs::create_dir_all(&tmp).map_err(io_error("create", &tmp))?;
    let tmp_marker = tmp.join(TMP_MARKER);
    if !tmp_marker.exists() {
        std::fs::write(&tmp_marker, b"").map_err(io_error("mark", &tmp_marker))?;
    }
    remove_abandoned_staging(&tmp);
    Ok(tmp)
}

/// Removes the staging folders of imports that were killed: untouched for [`ABANDONED`] (a
/// running import touches its folder with each blob it stages). Best effort.
fn remove_abandoned_staging(tmp: &Path) {
    let Ok(listing) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in listing.flatten() {
        let abandoned = entry.metadata().ok().is_some_and(|meta| {
            let idle = meta.modified().ok().and_then(|t| t.elapsed().ok());
            meta.is_dir() && idle.is_some_and(|idle| idle > ABANDONED)
        });
        if abandoned
            && entry
                .file_name()
                .to_string_lossy()
                .starts_with(STAGING_PREFIX)
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// What reading the tar gave: the staged blobs and their sizes, and `index.json`.
struct Staged {
    blobs: BTreeMap<Digest, u64>,
    index: Vec<u8>,
}

/// Reads the tar as a stream: each blob into `staging`, hashed on the way and refused if it does
/// not match its name; `index.json` and `oci-layout` kept; links and devices refused.
fn stage(file: &Path, staging: &Path) -> Result<Staged, Staging> {
    let tar = File::open(file).map_err(io_error("open", file))?;
    let size = tar.metadata().map_err(io_error("read", file))?.len();
    let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "checking {bar:30} {binary_bytes:>10}/{binary_total_bytes:<10}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, bar.wrap_read(tar)));
    let unreadable = |e: std::io::Error| Refused(format!("the tar cannot be read: {e}"));
    let mut blobs = BTreeMap::new();
    let (mut index, mut layout) = (None, None);
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let path = entry.path().map_err(unreadable)?.into_owned();
        let shown = path.display().to_string();
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory => {}
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            other => {
                return refuse(format!(
                    "entry {shown:?} is a {other:?}, not a file (links are not taken)"
                ));
            }
        }
        let Some(name) = entry_name(&path) else {
            return refuse(format!("entry {shown:?} is named outside the image layout"));
        };
        if entry.header().entry_type().is_dir() {
            continue;
        }
        match name {
            EntryName::Layout => layout = Some(read_small(&mut entry, &shown)?),
            EntryName::Index => index = Some(read_small(&mut entry, &shown)?),
            EntryName::Blob(digest) => {
                let size = stage_blob(&mut entry, staging, &digest)?;
                blobs.insert(digest, size);
            }
            EntryName::Other => {}
        }
    }
    bar.finish_and_clear();
    let Some(layout) = layout else {
        return refuse("there is no oci-layout file: not an OCI image layout".to_owned());
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct LayoutFile {
        image_layout_version: String,
    }
    match serde_json::from_slice::<LayoutFile>(&layout) {
        Ok(l) if l.image_layout_version.starts_with("1.") => {}
        _ => return refuse("oci-layout is not {\"imageLayoutVersion\":\"1.x\"}".to_owned()),
    }
    let Some(index) = index else {
        return refuse("there is no index.json".to_owned());
    };
    Ok(Staged { blobs, index })
}

/// Reads a small file of the tar whole.
fn read_small(entry: &mut impl Read, shown: &str) -> Result<Vec<u8>, Staging> {
    let mut data = Vec::new();
    let read = entry.take(MAX_DOCUMENT + 1).read_to_end(&mut data);
    match read {
        Ok(_) if data.len() as u64 <= MAX_DOCUMENT => Ok(data),
        Ok(_) => refuse(format!(
            "{shown} is larger than {}",
            HumanBytes(MAX_DOCUMENT)
        )),
        Err(e) => refuse(format!("the tar cannot be read: {e}")),
    }
}

/// Streams one blob into `staging/<hex>`, synced; refused unless its bytes hash to `digest`.
fn stage_blob(entry: &mut impl Read, staging: &Path, digest: &Digest) -> Result<u64, Staging> {
    let path = staging.join(digest.hex());
    let mut file = File::create(&path).map_err(io_error("create", &path))?;
    let mut hasher = digest.hasher();
    let mut buf = vec![0; 256 << 10];
    let mut size = 0u64;
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return refuse(format!("the tar cannot be read at blob {digest}: {e}")),
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(io_error("write", &path))?;
        size += n as u64;
    }
    if !hasher.matches(digest) {
        return refuse(format!("blob {digest} does not match its digest"));
    }
    file.sync_all().map_err(io_error("sync", &path))?;
    Ok(size)
}

/// Follows `index.json` from each image to every manifest and blob, all of which must be staged,
/// of the size their descriptors give, and manifests JSON.
fn plan(staging: &Path, staged: &Staged) -> Result<Plan, Staging> {
    let index: LayoutIndex = match serde_json::from_slice(&staged.index) {
        Ok(index) => index,
        Err(e) => return refuse(format!("index.json is not an image index: {e}")),
    };
    let mut plan = Plan::default();
    let fetched = SystemTime::now();
    for entry in &index.manifests {
        let image = image_of(entry)?;
        let top = descriptor(entry);
        let mut seen = Seen {
            origin: (image.registry.clone(), image.repository.clone()),
            blobs: BTreeSet::new(),
        };
        let (digest, media_type) = walk(staging, staged, &top, &mut seen, &mut plan, 0)?;
        let blobs = seen.blobs.len();
        let tag = TagEntry {
            digest,
            size: entry.size,
            media_type,
            fetched,
        };
        plan.images.push((image, tag, blobs));
    }
    Ok(plan)
}

/// The image an entry of `index.json` names; refused without a full reference, or when the
/// reference names another digest.
fn image_of(entry: &LayoutEntry) -> Result<ImageRef, Staging> {
    let Some(image) = named_image(entry) else {
        return refuse(format!(
            "image {} in index.json has no full reference (io.containerd.image.name or \
             org.opencontainers.image.ref.name, e.g. registry.example/team/app:v1)",
            entry.digest
        ));
    };
    match &image.digest {
        Some(d) if d.to_string() != entry.digest => refuse(format!(
            "image {} in index.json is named {image}",
            entry.digest
        )),
        _ => Ok(image),
    }
}

fn descriptor(entry: &LayoutEntry) -> Descriptor {
    Descriptor {
        media_type: entry.media_type.clone(),
        digest: entry.digest.clone(),
        size: entry.size,
        platform: None,
    }
}

/// One image's walk: its registry and repository, and the blobs it names.
struct Seen {
    origin: (String, String),
    blobs: BTreeSet<Digest>,
}

/// Checks the manifest `described` and what it names, adding them to `plan` with the image's
/// origin; returns its digest and media type.
fn walk(
    staging: &Path,
    staged: &Staged,
    described: &Descriptor,
    seen: &mut Seen,
    plan: &mut Plan,
    depth: usize,
) -> Result<(Digest, String), Staging> {
    let digest = checked(staged, described, "manifest")?;
    if depth > MAX_DEPTH {
        return refuse(format!("manifest {digest} nests indexes too deep"));
    }
    let path = staging.join(digest.hex());
    if staged.blobs.get(&digest).copied().unwrap_or(0) > MAX_MANIFEST_SIZE as u64 {
        return refuse(format!(
            "manifest {digest} is larger than a manifest may be"
        ));
    }
    let bytes = std::fs::read(&path).map_err(io_error("read", &path))?;
    let Some(doc) = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .filter(serde_json::Value::is_object)
        .and_then(|_| Manifest::parse(&bytes))
    else {
        return refuse(format!("manifest {digest} is not a manifest (bad JSON)"));
    };
    let media_type = described
        .media_type
        .clone()
        .or_else(|| doc.media_type.clone())
        .unwrap_or_else(|| match doc.manifests.is_empty() {
            true => OCI_MANIFEST.to_owned(),
            false => OCI_INDEX.to_owned(),
        });
    if media_type.is_empty() || media_type.contains(char::is_whitespace) {
        return refuse(format!(
            "manifest {digest} has a bad media type {media_type:?}"
        ));
    }
    if doc.is_index(&media_type) {
        for child in &doc.manifests {
            walk(staging, staged, child, seen, plan, depth + 1)?;
        }
    } else {
        for blob in doc.config.iter().chain(&doc.layers) {
            let what = format!("blob named by manifest {digest}");
            let blob = checked(staged, blob, &what)?;
            note_origin(plan, Key::Blob(blob.clone()), &seen.origin);
            seen.blobs.insert(blob.clone());
            plan.blobs.insert(blob);
        }
    }
    note_origin(plan, Key::Manifest(digest.clone()), &seen.origin);
    plan.manifests.insert(digest.clone(), media_type.clone());
    Ok((digest, media_type))
}

/// The digest of a descriptor, which must be staged and of the size it states.
fn checked(staged: &Staged, described: &Descriptor, what: &str) -> Result<Digest, Staging> {
    let Some(digest) = Digest::parse(&described.digest) else {
        return refuse(format!("{what} has a bad digest {:?}", described.digest));
    };
    match staged.blobs.get(&digest) {
        None => refuse(format!("{what} {digest} is missing from the tar")),
        Some(size) if described.size > 0 && *size != described.size => refuse(format!(
            "{what} {digest} has {size} bytes where its descriptor says {}",
            described.size
        )),
        Some(_) => Ok(digest),
    }
}

fn note_origin(plan: &mut Plan, key: Key, origin: &(String, String)) {
    plan.origins.entry(key).or_default().insert(origin.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_of_other_files_is_not_imported_into_and_abandoned_staging_goes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap_or_else(|e| panic!("{e}"));
        assert!(prepare(dir.path()).is_err());
        assert!(!dir.path().join(TMP_DIR).exists());
        let empty = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let tmp = prepare(empty.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(tmp.join(TMP_MARKER).exists() && empty.path().join(CACHE_MARKER).exists());

        // A killed import's staging folder goes once untouched for a day; a live one stays.
        let (old, live) = (tmp.join("import-old"), tmp.join("import-live"));
        for dir in [&old, &live] {
            std::fs::create_dir(dir).unwrap_or_else(|e| panic!("{e}"));
        }
        let day_ago = SystemTime::now() - ABANDONED - std::time::Duration::from_secs(60);
        File::open(&old)
            .and_then(|f| f.set_modified(day_ago))
            .unwrap_or_else(|e| panic!("{e}"));
        prepare(empty.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!old.exists() && live.exists());
    }
}
